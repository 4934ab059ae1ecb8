"""The pack's networks under ComfyUI's memory manager (``comfy.model_management``).

As core's upscale-model nodes do, every torch network the pack runs — GPEN, the RetinaFace
detector and the face-parsing network — is wrapped in a ``ModelPatcher`` (``CoreModelPatcher``
where the host has that name) and loaded with ``model_management.load_models_gpu([patcher],
memory_required=..., force_full_load=True)`` right before it runs. ComfyUI then counts its memory,
may evict it to make room for another model (a diffusion model, say) and loads it back on next use;
"Unload models" (``POST /free``) frees it. Nothing here moves a network itself.

A GPEN graph that onnxruntime runs (``OnnxGPEN``) is no torch module, so ComfyUI cannot move or
count it: before it runs, ComfyUI is asked to free its estimated memory on the device where its
session runs (``model_management.free_memory``); onnxruntime keeps its own session memory.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable

import comfy.model_patcher
import torch
from comfy import model_management

from ..gpen.faces.parsing import parser_memory_bytes
from ..gpen.pipeline.memory import plan_memory

logger = logging.getLogger(__name__)

_PATCHER_CLASS = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


class HostedNetwork(torch.nn.Module):
    """What a ``ModelPatcher`` manages: one of our networks as its only child.

    The patcher keeps its bookkeeping (``device``, loaded sizes, patch counters) as attributes of
    its model; they live on this holder, not on our network (GPEN's ``device`` is read-only and
    facexlib's RetinaFace has a ``device`` of its own). Moving the holder moves the network.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.device = next(network.parameters(), torch.empty(0)).device

    def _apply(self, fn, *args, **kwargs):
        # ComfyUI moves the holder only when it loads or unloads the model. GPEN keeps activation
        # buffers and transformed weights between CPU calls (``release_buffers``): memory the
        # host does not count, so it goes back whenever the host (un)loads, also from CPU to CPU.
        release = getattr(self.network, "release_buffers", None)
        if release is not None:
            release()
        return super()._apply(fn, *args, **kwargs)


_holder_classes: dict[str, type[HostedNetwork]] = {}


def _holder_for(network: torch.nn.Module) -> HostedNetwork:
    """A holder whose class name tells ComfyUI's log what it loads (``HostedGPEN``, ``HostedRetinaFace``)."""
    name = f"Hosted{type(network).__name__}"
    cls = _holder_classes.setdefault(name, type(name, (HostedNetwork,), {}))
    return cls(network)


def network_patcher(network: object) -> comfy.model_patcher.ModelPatcher | None:
    """A new ``ModelPatcher`` for a torch ``network`` (None for anything else, e.g. ``OnnxGPEN``).

    Keep ONE patcher per network for as long as the network lives: ComfyUI tracks loaded models
    by patcher, and a network whose patcher died while it is still referenced is reported as a leak.
    """
    if not isinstance(network, torch.nn.Module):
        return None
    return _PATCHER_CLASS(_holder_for(network), load_device=model_management.get_torch_device(),
                          offload_device=model_management.unet_offload_device())


_owned_patchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def patcher_of(owner: object) -> comfy.model_patcher.ModelPatcher | None:
    """The patcher of the network of ``owner`` (a ``FaceDetector`` or ``FaceParser``: anything with
    a ``network`` attribute), created on first use and kept as long as ``owner`` lives."""
    if owner not in _owned_patchers:
        _owned_patchers[owner] = network_patcher(getattr(owner, "network", None))
    return _owned_patchers[owner]


def host_is_oom() -> Callable[[BaseException], bool] | None:
    """ComfyUI's own out-of-memory test where the host has one (``model_management.is_oom``, which
    also counts CUDA's "out of memory" accelerator errors); None keeps the core's default."""
    return getattr(model_management, "is_oom", None)


def work_memory(role: str, network, inputs: torch.Tensor, size: int, dtype: torch.dtype | None) -> int:
    """Estimated working memory (bytes, weights excluded) of running ``role``'s ``network`` on ``inputs``:
    the core's memory plan for that part (:func:`gpen.pipeline.memory.plan_memory`)."""
    if role == "restorer":  # (N, 3, S, S) crops: one network call
        return plan_memory(0, 0, 0, size=size, dtype=dtype, faces_per_call=int(inputs.shape[0])).network
    if role == "detector":  # (B, H, W, C) frames: one detector call
        b, h, w, c = inputs.shape
        model = getattr(network, "model", "retinaface_resnet50")
        return plan_memory(b, h, w, channels=c, size=size, dtype=dtype, detector=model).detecting
    return parser_memory_bytes(inputs.shape[0])  # parser, occluder


def load(patcher: comfy.model_patcher.ModelPatcher, memory_required: int) -> None:
    """Have ComfyUI load ``patcher``'s network fully onto its device, with ``memory_required``
    bytes of working memory on top (evicting other models when needed)."""
    model_management.load_models_gpu([patcher], memory_required=memory_required, force_full_load=True)


class HostPlacement:
    """The ``place`` hook of ``gpen.FaceRestorer`` inside ComfyUI: loads each network through the
    memory manager right before it runs (and again if ComfyUI evicted it in between).

    ``restorer_patcher``: the GPEN network's patcher (None for an onnxruntime graph).
    """

    def __init__(self, restorer_patcher, size: int, dtype: torch.dtype | None, device: torch.device) -> None:
        self.restorer_patcher = restorer_patcher
        self.size, self.dtype, self.device = size, dtype, device

    def __call__(self, role: str, network, inputs: torch.Tensor) -> None:
        required = work_memory(role, network, inputs, self.size, self.dtype)
        patcher = self.restorer_patcher if role == "restorer" else patcher_of(network)
        if patcher is not None:
            load(patcher, required)
            return
        # Not a torch module (onnxruntime) or a backend without one: make room where it runs.
        if "CUDAExecutionProvider" in getattr(network, "providers", ("CUDAExecutionProvider",)) \
                and self.device.type != "cpu":
            path = getattr(network, "path", None)
            weights = os.path.getsize(path) if path is not None and os.path.isfile(path) else 0
            model_management.free_memory(required + weights, self.device)
        network.to(self.device)
