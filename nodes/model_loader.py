"""``GPENModelLoader``: picks a GPEN checkpoint from ``models/facerestore_models`` and loads it once."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from comfy import model_management
from comfy_api.latest import io

from ..gpen import load_model
from ..gpen.errors import InvalidInputError, MissingWeightsError
from ..gpen.model.precision import auto_dtype_name
from .downloads import DOWNLOAD_MARK, fetch_requested, restore_model_names, split_download_name
from .folders import RELEASED_MODEL_FILES, RESTORE_MODELS, folders_of, restore_model_files
from .memory import network_patcher
from .runtime import ModelCache, file_identity

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

GPENModelType = io.Custom("GPEN_MODEL")
"""Socket type carrying a ``GPENModel`` between the loader and the restore node."""

_cache = ModelCache(capacity=1)


@dataclass(frozen=True)
class GPENModel:
    """A loaded GPEN network with where it came from; what travels on a ``GPEN_MODEL`` link.

    ``patcher``: the network's ComfyUI ``ModelPatcher`` (one per loaded network, cached with it;
    None for a graph run by onnxruntime), through which ComfyUI's memory manager loads it.
    """

    model: torch.nn.Module
    path: str
    name: str
    precision: str
    dtype: torch.dtype
    patcher: object = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        """Face crop size of the network (256, 512, 1024 or 2048)."""
        return int(self.model.size)

    def __str__(self) -> str:
        return f"GPEN {self.size}px '{self.name}' ({self.precision})"


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: the pack's rule (``gpen.model.precision.auto_dtype``) with ComfyUI's judgement of
    fp16 on GPUs: fp16 where ComfyUI deems it safe on ``device``, bf16 on CPUs with native bf16
    matrix units, else fp32."""
    if precision == "auto":
        fp16_ok = model_management.should_use_fp16(device) if device.type != "cpu" else None
        return auto_dtype_name(device, fp16_ok)
    if precision not in DTYPES:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    return precision


def find_model_file(model_name: str) -> str:
    """Full path of ``model_name`` in the ``facerestore_models`` folders, or an actionable error."""
    import folder_paths

    path = folder_paths.get_full_path(RESTORE_MODELS, model_name) if model_name else None
    if path is not None:
        return path
    folders = folders_of(RESTORE_MODELS)
    available = restore_model_files()
    where = " or ".join(f"'{f}'" for f in folders)
    if not available:
        raise MissingWeightsError(
            f"No face restoration model found in {where}. Put a GPEN checkpoint there "
            f"(e.g. {RELEASED_MODEL_FILES[0]}, also {', '.join(RELEASED_MODEL_FILES[1:])}; "
            f".pth, .pt, .safetensors or the .onnx files ReActor and FaceFusion use), then refresh the page (press R) and pick it in 'Load GPEN Model', "
            f"or pick '{RELEASED_MODEL_FILES[0]}{DOWNLOAD_MARK}' there to download it.")
    raise MissingWeightsError(
        f"GPEN model '{model_name}' is not in {where}. Available: {', '.join(available)}. "
        f"Put the file there or pick another one (entries ending in '{DOWNLOAD_MARK.strip()}' are downloaded "
        f"when the node runs), then refresh the page (press R).")


class GPENModelLoader(io.ComfyNode):
    """Loads a GPEN-BFR checkpoint (256/512/1024/2048) and keeps it cached between runs."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="GPENModelLoader",
            display_name="Load GPEN Model",
            category="loaders",
            description="Loads a GPEN blind face restoration checkpoint (GPEN-BFR-256/512/1024/2048) from "
                        "models/facerestore_models. The network size is read from the weights. The loaded "
                        "model is cached until the file or the precision changes.",
            inputs=[
                io.Combo.Input("model_name", options=restore_model_names(),
                               tooltip="GPEN checkpoint in models/facerestore_models (.pth, .pt, .safetensors, or .onnx as ReActor/FaceFusion ship it). "
                                       "Entries ending in [download] are released files not on disk yet: they are downloaded "
                                       "(verified) into models/facerestore_models when the node runs."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="Weights precision. auto: fp16 on a GPU where ComfyUI considers fp16 safe; on the "
                                       "CPU bf16 where the processor has bf16 matrix units (Intel AMX, AMD Zen 4/5), "
                                       "else fp32. bf16 keeps the style path and the smallest layers in fp32."),
            ],
            outputs=[GPENModelType.Output(display_name="gpen_model",
                                          tooltip="The loaded GPEN network, for GPEN Face Restore.")],
        )

    @classmethod
    def validate_inputs(cls, model_name: str, precision: str) -> bool | str:
        # model_name is checked in execute(), so that a missing file is reported as this node's
        # error with the folder to put it in, instead of a bare "value not in list".
        return True

    @classmethod
    def fingerprint_inputs(cls, model_name: str, precision: str):
        """Re-run when the file behind ``model_name`` is replaced."""
        import folder_paths

        name = split_download_name(model_name)[0] if model_name else model_name
        path = folder_paths.get_full_path(RESTORE_MODELS, name) if name else None
        return (file_identity(path) if path else None, precision)

    @classmethod
    def execute(cls, model_name: str, precision: str = "auto") -> io.NodeOutput:
        path = fetch_requested(model_name) or find_model_file(model_name)
        resolved = resolve_precision(precision, model_management.get_torch_device())
        dtype = DTYPES[resolved]
        offload = model_management.unet_offload_device()

        def load(p: str) -> tuple[torch.nn.Module, object]:
            if offload.type != "cpu":  # high-VRAM mode keeps models on the GPU: make room first
                model_management.free_memory(os.path.getsize(p) * 2, offload)
            net = load_model(p, device=offload, dtype=dtype)
            return net, network_patcher(net)

        model, patcher = _cache.get_or_load(path, resolved, load)
        return io.NodeOutput(GPENModel(model=model, path=path, name=model_name, precision=resolved, dtype=dtype,
                                       patcher=patcher))
