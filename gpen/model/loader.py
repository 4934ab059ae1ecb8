"""Loading GPEN weights: any supported file (or a state dict) to a ready network.

``.pth``/``.pt``/``.ckpt``/``.bin`` and ``.safetensors`` are read by :mod:`gpen.model.files`
(never executing pickled code) and built by :mod:`gpen.model.checkpoint`; ``.onnx`` graphs go
through :mod:`gpen.model.onnx_loading` (mapped onto the PyTorch network when verified, else run by
onnxruntime). Every failure raises ``ModelLoadError`` with a message that names the file and says
what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from .checkpoint import build_network, resolve_dtype
from .files import TORCH_SUFFIXES, WEIGHT_SUFFIXES, PathLike, check_file, read_safetensors, read_torch_file
from .network import GPEN
from .onnx_loading import load_onnx_model, read_onnx_state_dict
from .onnx_runtime import OnnxGPEN


def read_weights_file(path: PathLike, suffix: str | None = None) -> dict[str, Any]:
    """Read a weights file without executing code; raise ``ModelLoadError`` on anything unusable.

    The format comes from ``suffix`` when given (e.g. ``".pth"`` for a download still named
    ``GPEN-BFR-512.pth.<id>.part``), else from the file name. For ``.onnx`` graphs this is the GPEN
    state dict recovered from the graph's weights and verified against the graph (see
    :mod:`gpen.model.onnx_loading`).
    """
    path = check_file(path)
    suffix = (suffix or path.suffix).lower()
    if suffix == ".onnx":
        return read_onnx_state_dict(path)
    if suffix == ".safetensors":
        return read_safetensors(path)
    if suffix not in TORCH_SUFFIXES:
        raise ModelLoadError(f"{path.name}: unsupported file type {suffix!r}; GPEN weights must be "
                             f"{', '.join(WEIGHT_SUFFIXES)}.")
    return read_torch_file(path)


def load_model(source: PathLike | Mapping[str, Any], device: torch.device | str = "cpu",
               dtype: torch.dtype | str = torch.float32) -> GPEN | OnnxGPEN:
    """Load a GPEN-BFR checkpoint (path or state dict) as a ready network in eval mode.

    The configuration is inferred from the weights; ``net.size`` is the face crop size and
    ``net.config`` the full configuration. ``net(x)`` takes (B, 3, S, S) RGB in -1..1.
    A ``.onnx`` file gives the same network when its weights can be mapped onto it, else an
    :class:`gpen.model.onnx_runtime.OnnxGPEN` that runs the graph with onnxruntime (``size``,
    ``device``, ``dtype`` and the call are the same; ``config`` is None).
    ``dtype``: a torch dtype or a name (``"fp32"``, ``"fp16"``, ``"bf16"``), or ``"auto"``
    (:func:`gpen.model.precision.auto_dtype`: float16 on CUDA/MPS, bfloat16 on CPUs with native
    bfloat16 matrix units, float32 elsewhere). A bfloat16 network keeps its style path and its
    smallest layers in float32 (:mod:`gpen.model.precision`).
    """
    dtype = resolve_dtype(dtype, device)
    if isinstance(source, Mapping):
        return build_network(source, "state dict", device, dtype)
    path = Path(source)
    if path.suffix.lower() == ".onnx":
        return load_onnx_model(path, device=device, dtype=dtype)
    return build_network(read_weights_file(path), path.name, device, dtype)
