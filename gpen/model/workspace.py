"""Activation buffers that the network re-uses from one forward pass to the next (CPU).

glibc's ``malloc`` serves every tensor over 32 MiB with fresh ``mmap`` pages and unmaps them on
``free``, so a forward pass that allocates its activations anew faults in (and has the kernel zero)
gigabytes of memory each time: a fifth of the time of a 512 px face and a third of a 2048 px one on
the 2-core test CPUs. A :class:`Workspace` keeps those buffers instead, without touching the host
process's allocator settings.

Rules the network relies on:

* a buffer is handed out by :meth:`Session.take` and is the caller's until :meth:`Session.give`
  or the end of the session; a tensor that is returned to the network's caller never comes from here;
* buffers are flat blocks, and a request gets the smallest free block that holds it (a view of it
  with the requested shape), so the blocks kept add up to about the largest amount of memory a
  forward pass has in use at once, not to the sum of every shape it uses; blocks that the forward
  passes of the two most recent input signatures (batch, size, dtype, device) did not use are
  dropped, and :meth:`Workspace.release` drops all of them and the tensors derived from weights for
  the CPU paths (:meth:`Session.derived`);
* one forward pass at a time uses the kept buffers: a concurrent pass (another thread on the same
  model) gets a private session whose buffers are freed when it ends, so it is correct, just as slow
  as without a workspace.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..compat import is_compiling


class _Block:
    """A kept flat buffer and the serial number of the last session that used it."""

    __slots__ = ("tensor", "serial", "tag")

    def __init__(self, tensor: torch.Tensor, serial: int, tag: tuple | None) -> None:
        self.tensor, self.serial, self.tag = tensor, serial, tag


class Session:
    """The buffers of one forward pass (see the module docstring)."""

    def __init__(self, free: list[_Block], derived: dict, serial: int, keep: bool) -> None:
        self._free = free
        self._derived = derived
        self._serial = serial
        self._keep = keep
        self._taken: dict[int, _Block] = {}  # by storage address

    def take(self, shape: tuple[int, ...], like: torch.Tensor, *, channels_last: bool = True,
             tag: str = "", zero_new: bool = False) -> torch.Tensor:
        """A buffer of ``shape`` with ``like``'s dtype and device (NHWC strides for 4-d ``channels_last``).

        Its contents are whatever the last user left, except that a newly made one is zero when
        ``zero_new``. A ``tag`` gives a block of its own, handed out only to requests with the same
        tag and shape (for buffers whose untouched parts must stay as their own users left them).
        """
        shape = tuple(int(s) for s in shape)
        n = math.prod(shape)
        key = (tag, shape) if tag else None
        best = None
        for i, block in enumerate(self._free):
            t = block.tensor
            if t.dtype != like.dtype or t.device != like.device or block.tag != key or t.numel() < n:
                continue
            if best is None or t.numel() < self._free[best].tensor.numel():
                best = i
        if best is not None:
            block = self._free.pop(best)
        else:
            flat = (torch.zeros if zero_new else torch.empty)(n, dtype=like.dtype, device=like.device)
            block = _Block(flat, self._serial, key)
        block.serial = self._serial
        self._taken[block.tensor.untyped_storage().data_ptr()] = block
        flat = block.tensor[:n]
        if channels_last and len(shape) == 4:
            b, c, h, w = shape
            return flat.view(b, h, w, c).permute(0, 3, 1, 2)
        return flat.view(shape)

    def scratch(self, numel: int, like: torch.Tensor) -> torch.Tensor:
        """A flat buffer of ``numel`` elements for short-lived intermediates."""
        return self.take((numel,), like, channels_last=False)

    def derived(self, owner: object, name: str, source: torch.Tensor, make) -> torch.Tensor:
        """``make()``, a tensor derived from the weight ``source`` of ``owner``, kept with the workspace
        until ``source`` changes (new data, in-place edit, other dtype or device) or a release."""
        try:
            version = source._version
        except RuntimeError:  # inference tensors (made under torch.inference_mode) have no version counter
            version = -1
        key = (source.data_ptr(), version, source.dtype, source.device)
        slot = (id(owner), name)
        cached = self._derived.get(slot)
        if cached is None or cached[0] != key:
            self._derived.pop(slot, None)  # free the stale tensor before making the new one
            with torch.no_grad():
                cached = (key, make())
            self._derived[slot] = cached
        return cached[1]

    def give(self, buf: torch.Tensor) -> None:
        """Hand back a taken buffer (or a view of one) before the session ends; it may be taken again."""
        block = self._taken.pop(buf.untyped_storage().data_ptr(), None)
        if block is None:
            raise ValueError("this buffer was not taken from the session")
        self._free.append(block)

    def close(self) -> None:
        if self._keep:
            self._free.extend(self._taken.values())
        self._taken.clear()


class Workspace:
    """Buffers kept between forward passes of one network (see the module docstring)."""

    def __init__(self, signatures_kept: int = 2) -> None:
        self._lock = threading.Lock()
        self._free: list[_Block] = []
        self._derived: dict[tuple[int, str], tuple[tuple, torch.Tensor]] = {}
        self._recent: dict[tuple, int] = {}  # signature -> serial of its latest session, oldest first
        self._serial = 0
        self._signatures_kept = signatures_kept

    @contextmanager
    def session(self, signature: tuple) -> Iterator[Session]:
        """Buffers for one forward pass whose input is described by ``signature``."""
        if not self._lock.acquire(blocking=False):  # another pass is running: private buffers
            private = Session([], self._derived, 0, keep=False)
            try:
                yield private
            finally:
                private.close()
            return
        try:
            self._serial += 1
            s = Session(self._free, self._derived, self._serial, keep=True)
            try:
                yield s
            finally:
                s.close()
                self._remember(signature)
        finally:
            self._lock.release()

    def _remember(self, signature: tuple) -> None:
        self._recent.pop(signature, None)
        self._recent[signature] = self._serial
        while len(self._recent) > self._signatures_kept:
            del self._recent[next(iter(self._recent))]
        oldest = min(self._recent.values())
        self._free[:] = [b for b in self._free if b.serial >= oldest]

    def __reduce__(self):  # copies and pickles of a network start with an empty workspace
        return (Workspace, (self._signatures_kept,))

    def release(self) -> None:
        """Drop every kept buffer and derived tensor (their memory goes back to the system). Waits
        for a forward pass that uses the kept buffers to end."""
        with self._lock:
            self._free.clear()
            self._recent.clear()
            self._derived.clear()

    def nbytes(self) -> int:
        """Bytes held by the kept buffers and derived tensors."""
        buffers = sum(b.tensor.numel() * b.tensor.element_size() for b in self._free)
        return buffers + sum(t.numel() * t.element_size() for _, t in self._derived.values()
                             if isinstance(t, torch.Tensor))


class KeepsBuffers:
    """Mixin of an ``nn.Module`` with ``device``/``dtype`` properties and a ``_workspace``: CPU forward
    passes run in a :meth:`buffer_session`, and a move or cast that changes the module's device or
    dtype drops the kept buffers (a no-op ``.to()``, as ComfyUI does after each use, keeps them)."""

    _workspace: Workspace

    @contextmanager
    def buffer_session(self, x: torch.Tensor) -> Iterator[Session | None]:
        """The workspace session of a CPU forward pass on ``x`` (None elsewhere and for tracers/compilers)."""
        if x.device.type != "cpu" or torch.jit.is_tracing() or is_compiling():
            if x.device.type != "cpu" and self._workspace.nbytes():  # its layers were moved one by one
                self._workspace.release()
            yield None
            return
        with self._workspace.session((tuple(x.shape), x.dtype, x.device)) as ws:
            yield ws

    def release_buffers(self) -> None:
        """Give back the memory kept for speed between CPU calls: the activation buffers and the
        weights transformed for the CPU paths (the next call makes them again). Thread-safe; waits
        for a call that is using them."""
        self._workspace.release()

    def workspace_bytes(self) -> int:
        """Bytes that :meth:`release_buffers` would give back."""
        return self._workspace.nbytes()

    def _apply(self, fn, *args, **kwargs):
        before = (self.device, self.dtype)
        result = super()._apply(fn, *args, **kwargs)
        if (self.device, self.dtype) != before:
            self.release_buffers()
        return result
