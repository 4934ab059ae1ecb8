"""Tensors derived from a module's weights (scaled, transposed, squared...), cached until the weight
changes, and the module base class that drops them on any move or cast."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..compat import is_compiling

__all__ = ["DERIVED_CACHE", "CachingModule", "derived", "derived_bytes", "drop_derived"]

DERIVED_CACHE = "_gpen_derived"  # a module's __dict__ entry: {name: (key, tensor derived from its weights)}


def derived(module: nn.Module, name: str, source: torch.Tensor, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """A tensor derived from ``source``, a weight of ``module`` (a :class:`CachingModule`), kept until
    the weight changes (new data, in-place edit, move) or the module is moved or cast."""
    if is_compiling() or torch.jit.is_tracing():  # export/compile see the computation itself
        return make()
    try:
        version = source._version
    except RuntimeError:  # inference tensors (made under torch.inference_mode) have no version counter
        version = -1
    key = (source.data_ptr(), version, source.dtype, source.device)
    caches = module.__dict__.setdefault(DERIVED_CACHE, {})
    cached = caches.get(name)
    if cached is None or cached[0] != key:
        caches.pop(name, None)  # free the stale tensor before making the new one
        with torch.no_grad():
            cached = (key, make())
        caches[name] = cached
    return cached[1]


def drop_derived(module: nn.Module) -> int:
    """Forget every cached derived tensor in ``module`` and its submodules; returns how many there were."""
    dropped = 0
    for m in module.modules():
        dropped += len(m.__dict__.pop(DERIVED_CACHE, None) or ())
    return dropped


def derived_bytes(module: nn.Module) -> int:
    """Bytes held by the cached derived tensors of ``module`` and its submodules."""
    return sum(t.numel() * t.element_size() for m in module.modules()
               for _, t in (m.__dict__.get(DERIVED_CACHE) or {}).values())


class CachingModule(nn.Module):
    """Owner of weights with derived tensors cached: any move or cast (``.to``, ``.cpu``... of it
    alone, as ComfyUI's model patcher does, or of a parent) drops them, so no copy stays on the old
    device; the next forward pass rebuilds them."""

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop(DERIVED_CACHE, None)
        return super()._apply(fn, *args, **kwargs)
