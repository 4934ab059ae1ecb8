"""Loading GPEN weights: any supported file (or a state dict) to a ready network.

``.pth``/``.pt``/``.ckpt``/``.bin`` and ``.safetensors`` are read by :mod:`gpen.model.files`
(never executing pickled code) and built by :mod:`gpen.model.checkpoint`; ``.onnx`` graphs go
through :mod:`gpen.model.onnx_loading` (mapped onto the PyTorch network when verified, else run by
onnxruntime). Every failure raises ``ModelLoadError`` with a message that names the file and says
what to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidInputError, ModelLoadError
from ..weights.download import ensure_weights
from ..weights.registry import REGISTRY, RESTORE
from .checkpoint import build_network, infer_config, resolve_device, resolve_dtype
from .files import (TORCH_SUFFIXES, WEIGHT_SUFFIXES, PathLike, check_file, read_safetensors, read_torch_file,
                    unwrap_state_dict)
from .layouts import RELEASED_MODELS, released_layout
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


def check_released_file(path: Path, name: str, suffix: str | None = None) -> None:
    """Raise ``ModelLoadError`` unless ``path`` holds exactly the released layout of model ``name``.

    ``suffix`` gives the file format when the name of ``path`` does not (a ``.part`` download).
    """
    state = unwrap_state_dict(read_weights_file(path, suffix=suffix), path.name)
    infer_config(state, path.name)  # recognisable as GPEN at all (clear message otherwise)
    want = released_layout(name)["shapes"]
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != want:
        diff = sorted(set(want) ^ set(got)) or sorted(k for k in want if got[k] != want[k])
        raise ModelLoadError(f"{path.name}: does not have the layout of the released {name} "
                             f"({len(diff)} tensors differ, e.g. {diff[0]!r}).")


def released_file_name(name: str) -> str | None:
    """``GPEN-BFR-512`` / ``GPEN-BFR-512.pth`` -> ``GPEN-BFR-512.pth``; None for other names."""
    stem = name.removesuffix(".pth")
    return f"{stem}.pth" if stem in RELEASED_MODELS else None


def resolve_released(name_or_path: PathLike, extra_dirs: Iterable[str | os.PathLike] = (), allow_download: bool = True,
                     progress: bool = True, progress_callback: Callable[[int, int | None], None] | None = None) -> Path:
    """A model file: an existing path as it is, or a released model name (``GPEN-BFR-512`` or
    ``GPEN-BFR-512.pth``) found in the model folders (``extra_dirs`` first) or downloaded there,
    checked against the released layout."""
    path = Path(name_or_path)
    file_name = released_file_name(str(name_or_path))
    if path.exists() or file_name is None:
        return path
    spec = REGISTRY[file_name]
    suffix = Path(spec.name).suffix
    return ensure_weights(spec, RESTORE, extra_dirs, allow_download=allow_download, progress=progress,
                          validate=lambda p: check_released_file(p, spec.model, suffix=suffix),
                          progress_callback=progress_callback)


def load_model(source: PathLike | Mapping[str, Any], device: torch.device | str = "cpu",
               dtype: torch.dtype | str = torch.float32) -> GPEN | OnnxGPEN:
    """Load a GPEN-BFR checkpoint (path, released model name or state dict) as a ready network in eval mode.

    A released name (``"GPEN-BFR-512"`` or ``"GPEN-BFR-512.pth"``) that is not a file here is found
    in the model folders the command line uses (:mod:`gpen.weights.paths`), or downloaded there.

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
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if isinstance(source, Mapping):
        return build_network(source, "state dict", device, dtype)
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise InvalidInputError(f"load_model takes a weights file, a released model name ({', '.join(RELEASED_MODELS)}) "
                                f"or a state dict; got {source!r}.")
    path = resolve_released(source)
    if path.suffix.lower() == ".onnx":
        return load_onnx_model(path, device=device, dtype=dtype)
    return build_network(read_weights_file(path), path.name, device, dtype)
