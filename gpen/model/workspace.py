"""Activation buffers that the network re-uses from one forward pass to the next (CPU).

glibc's ``malloc`` serves every tensor over 32 MiB with fresh ``mmap`` pages and unmaps them on
``free``, so a forward pass that allocates its activations anew faults in (and has the kernel zero)
gigabytes of memory each time: a fifth of the time of a 512 px face and a third of a 2048 px one on
the 2-core test CPUs. A :class:`Workspace` keeps those buffers instead, without touching the host
process's allocator settings.

Rules the network relies on:

* a buffer is handed out by :meth:`Session.take` and is the caller's until :meth:`Session.give`
  or the end of the session; a tensor that is returned to the network's caller never comes from here;
* buffers are kept per (shape, dtype, device, tag) for the input signatures (batch, size, dtype,
  device) of the two most recent forward passes, and dropped with :meth:`Workspace.release`, as
  are the tensors derived from weights for the CPU paths (:meth:`Session.derived`);
* one forward pass at a time uses the kept buffers: a concurrent pass (another thread on the same
  model) gets a private session whose buffers are freed when it ends, so it is correct, just as slow
  as without a workspace.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

Key = tuple  # (shape, dtype, device, channels_last, tag)


class Session:
    """The buffers of one forward pass (see the module docstring)."""

    def __init__(self, free: dict[Key, list[torch.Tensor]] | None, derived: dict) -> None:
        self._derived = derived
        self._free = free if free is not None else {}
        self._keep = free is not None
        self._taken: dict[int, tuple[Key, torch.Tensor]] = {}  # by storage address
        self.used: set[Key] = set()

    def take(self, shape: tuple[int, ...], like: torch.Tensor, *, channels_last: bool = True,
             tag: str = "", zero_new: bool = False) -> torch.Tensor:
        """A buffer of ``shape`` with ``like``'s dtype and device (NHWC strides for 4-d ``channels_last``).

        Its contents are whatever the last user left, except that a newly made one is zero when
        ``zero_new``; ``tag`` keeps buffers apart whose untouched parts must stay as their own users left them.
        """
        shape = tuple(int(s) for s in shape)
        channels_last = channels_last and len(shape) == 4
        key = (shape, like.dtype, like.device, channels_last, tag)
        stack = self._free.get(key)
        if stack:
            buf = stack.pop()
        else:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            buf = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)
            if zero_new:
                buf.zero_()
        self._taken[buf.untyped_storage().data_ptr()] = (key, buf)
        self.used.add(key)
        return buf

    def scratch(self, numel: int, like: torch.Tensor, tag: str = "scratch") -> torch.Tensor:
        """A flat buffer of at least ``numel`` elements for short-lived intermediates: one per ``tag``,
        grown to the largest request (so it is as big as the biggest layer's need, not their sum).
        Give it back before asking for the same tag again."""
        key = ((-1,), like.dtype, like.device, False, tag)
        stack = self._free.get(key)
        buf = stack.pop() if stack else None
        if buf is None or buf.numel() < numel:
            buf = torch.empty(int(numel), dtype=like.dtype, device=like.device)
        self._taken[buf.untyped_storage().data_ptr()] = (key, buf)
        self.used.add(key)
        return buf[:numel]

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
        taken = self._taken.pop(buf.untyped_storage().data_ptr(), None)
        if taken is None:
            raise ValueError("this buffer was not taken from the session")
        self._free.setdefault(taken[0], []).append(taken[1])

    def close(self) -> None:
        for key, buf in self._taken.values():
            self._free.setdefault(key, []).append(buf)
        self._taken.clear()
        if not self._keep:
            self._free.clear()


class Workspace:
    """Buffers kept between forward passes of one network (see the module docstring)."""

    def __init__(self, signatures_kept: int = 2) -> None:
        self._lock = threading.Lock()
        self._free: dict[Key, list[torch.Tensor]] = {}
        self._derived: dict[tuple[int, str], tuple[tuple, torch.Tensor]] = {}
        self._recent: list[tuple[tuple, set[Key]]] = []  # (signature, keys it used), newest last
        self._signatures_kept = signatures_kept

    @contextmanager
    def session(self, signature: tuple) -> Iterator[Session]:
        """Buffers for one forward pass whose input is described by ``signature``."""
        if not self._lock.acquire(blocking=False):  # another pass is running: private buffers
            private = Session(None, self._derived)
            try:
                yield private
            finally:
                private.close()
            return
        try:
            s = Session(self._free, self._derived)
            try:
                yield s
            finally:
                s.close()
                self._remember(signature, s.used)
        finally:
            self._lock.release()

    def _remember(self, signature: tuple, used: set[Key]) -> None:
        self._recent = [(sig, keys) for sig, keys in self._recent if sig != signature] + [(signature, used)]
        self._recent = self._recent[-self._signatures_kept:]
        wanted = set().union(*(keys for _, keys in self._recent))
        for key in [k for k in self._free if k not in wanted]:
            del self._free[key]

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
        buffers = sum(b.numel() * b.element_size() for stack in self._free.values() for b in stack)
        return buffers + sum(t.numel() * t.element_size() for _, t in self._derived.values())
