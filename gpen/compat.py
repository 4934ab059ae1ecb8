"""What differs between the torch versions the pack supports (torch >= 2.4, as ComfyUI 0.8.0 asks).

One place for the names that newer torch moved or added, so the rest of the code never touches
an attribute an older torch lacks:

- :func:`is_compiling`: ``torch.compiler.is_compiling`` where torch has it, else the older
  ``torch._dynamo.is_compiling``, else False.
- :data:`OOM_ERRORS` / :func:`is_oom`: out-of-memory errors of any device. The device-generic
  ``torch.OutOfMemoryError`` is missing from older torch; ``torch.cuda.OutOfMemoryError`` (the same
  class where both exist) is in every supported one; MPS, XPU and CPU allocations raise a plain
  ``RuntimeError`` whose message says so ("MPS backend out of memory", "XPU out of memory",
  "DefaultCPUAllocator: can't allocate memory" / "not enough memory").
"""

from __future__ import annotations

import logging

import torch

__all__ = ["MIN_TORCH", "OOM_ERRORS", "check_torch", "is_compiling", "is_oom", "torch_version"]

log = logging.getLogger(__name__)

MIN_TORCH = (2, 4)
"""The oldest torch the pack supports: what ComfyUI 0.8.0 asks for (ComfyUI 0.33.0 asks for 2.7)."""


def torch_version() -> tuple[int, int]:
    """(major, minor) of the running torch."""
    major, minor = (torch.__version__.split("+")[0].split(".") + ["0"])[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def check_torch() -> bool:
    """Log a warning when torch is older than :data:`MIN_TORCH`; True when it is recent enough."""
    if torch_version() >= MIN_TORCH:
        return True
    log.warning("torch %s is older than %d.%d, the oldest this pack is tested against; update torch",
                torch.__version__, *MIN_TORCH)
    return False


def _oom_classes() -> tuple[type[BaseException], ...]:
    found = []
    for owner, name in ((torch, "OutOfMemoryError"), (getattr(torch, "cuda", None), "OutOfMemoryError")):
        cls = getattr(owner, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in found:
            found.append(cls)
    return tuple(found)


OOM_ERRORS: tuple[type[BaseException], ...] = _oom_classes() + (RuntimeError,)
"""Exception classes to catch around device work; check the instance with :func:`is_oom`."""

_OOM_MESSAGES = ("out of memory", "not enough memory", "can't allocate memory", "failed to allocate memory")


def is_oom(exc: BaseException) -> bool:
    """True when ``exc`` is an out-of-memory error of any device (CUDA, MPS, XPU, CPU allocations).

    The nodes may prefer the host's own test (ComfyUI's ``model_management.is_oom``, where it
    exists) and fall back to this one.
    """
    classes = _oom_classes()
    if classes and isinstance(exc, classes):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return any(m.lower() in text.lower() for m in _OOM_MESSAGES)
    return False


def _legacy_is_compiling() -> bool:
    """torch < 2.3: dynamo's own flag (imported only then), else False."""
    dynamo = getattr(torch, "_dynamo", None)
    fn = getattr(dynamo, "is_compiling", None)
    return bool(fn()) if fn is not None else False


is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or _legacy_is_compiling
"""Whether torch.compile / export is tracing the current code (``torch.compiler.is_compiling`` itself
where it exists, so compilers recognise it)."""
