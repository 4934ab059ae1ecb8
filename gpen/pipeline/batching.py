"""Running a crop restorer over many aligned crops: chunks, out-of-memory back-off, overflow retry.

:func:`restore_in_chunks` is what :meth:`gpen.FaceRestorer.run_network` runs: a few faces per call,
the chunk halved on out-of-memory (down to one face), and a chunk whose output holds NaN or
infinity (a 16-bit network overflowing) restored again by a float32 copy of the network.
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Callable

import torch

from .. import compat
from ..errors import InvalidInputError, ModelLoadError
from .frames import all_finite

log = logging.getLogger(__name__)

__all__ = ["restore_in_chunks", "float32_copy"]


_FALLBACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # restorer -> (weights key, float32 copy)


def _weights_key(module: torch.nn.Module) -> tuple:
    key = []
    for t in module.parameters():
        try:
            version = t._version
        except RuntimeError:  # inference tensors have no version counter
            version = -1
        key.append((t.data_ptr(), version, t.dtype, str(t.device)))
    return tuple(key)


def float32_copy(restorer):
    """A float32 copy of a torch restorer (for chunks that overflow in 16 bits), or None when it is
    no torch module (a plain callable, an onnxruntime graph). Made once per restorer and kept as
    long as it lives (made again when its weights change, move or are cast)."""
    if not isinstance(restorer, torch.nn.Module):
        return None
    key = _weights_key(restorer)
    cached = _FALLBACKS.get(restorer)
    if cached is None or cached[0] != key:
        _FALLBACKS.pop(restorer, None)
        cached = (key, copy.deepcopy(restorer).to(torch.float32))
        _FALLBACKS[restorer] = cached
    return cached[1]


def restore_in_chunks(restorer: Callable[[torch.Tensor], torch.Tensor], crops: torch.Tensor, chunk: int, *,
                      is_oom: Callable[[BaseException], bool] = compat.is_oom,
                      progress: Callable[[int, int], None] | None = None,
                      check_interrupt: Callable[[], None] | None = None, done: int = 0, total: int | None = None,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """Restore aligned crops (N, 3, S, S) 0..1 with ``restorer`` (-1..1 in, same shape out), ``chunk``
    faces per call; returns 0..1 crops in ``out`` (may be ``crops`` itself; default a new tensor).

    ``check_interrupt()`` runs before every call and ``progress(done + restored, total)`` after it.
    """
    n = crops.shape[0]
    total = n if total is None else total
    chunk = max(1, int(chunk))
    out = torch.empty_like(crops) if out is None else out
    fallback: list = []  # the float32 copy of the network (float32_copy), looked up on the first overflow
    i = 0
    while i < n:
        if check_interrupt is not None:
            check_interrupt()
        part = crops[i:i + chunk]
        try:
            restored = _restore_chunk(restorer, part, i, fallback)
        except compat.OOM_ERRORS as e:
            if not is_oom(e) or part.shape[0] == 1:
                raise
            chunk = max(1, part.shape[0] // 2)
            log.warning("out of memory restoring %d faces at once; retrying with %d", part.shape[0], chunk)
            if crops.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        out[i:i + part.shape[0]] = restored.to(out.dtype)
        i += part.shape[0]
        if progress is not None:
            progress(done + i, total)
    return out


def _restore_chunk(restorer, part: torch.Tensor, first: int, fallback: list) -> torch.Tensor:
    """One network call on ``part`` (0..1) -> 0..1 float32; non-finite outputs retried in float32."""
    with torch.inference_mode():
        restored = restorer(part.mul(2).sub_(1))
    if restored.shape != part.shape:
        raise InvalidInputError(f"the restorer returned shape {tuple(restored.shape)} for input "
                                f"{tuple(part.shape)}; it must return the same shape.")
    if not all_finite(restored):
        faces = f"faces {first}..{first + part.shape[0] - 1}"
        if not fallback:
            fallback.append(float32_copy(restorer))
        if fallback[0] is None:
            raise ModelLoadError(f"the network returned NaN or infinite values for {faces} and cannot be run in "
                                 f"float32 here; load the model with precision fp32 (or the fp32 file).")
        log.warning("the %s network overflowed (NaN/inf) on %s; restored them again in float32",
                    str(getattr(restorer, "dtype", "")).removeprefix("torch."), faces)
        with torch.inference_mode():
            restored = fallback[0](part.mul(2).sub_(1))
        if not all_finite(restored):
            raise ModelLoadError(f"the network returned NaN or infinite values for {faces} even in float32: "
                                 f"its weights are broken; download or export the model file again.")
    return restored.float().clamp(-1, 1).add_(1).mul_(0.5)  # clamp copies: the in-place steps touch only that copy
