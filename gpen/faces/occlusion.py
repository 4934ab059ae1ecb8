"""Occlusion masks from FaceFusion's XSeg occluder models: keep what covers a face.

Hands, microphones, food or hair in front of a face are overwritten by any restorer; an occlusion
mask says where the face is visible, and the blend mask becomes ``min(paste mask, occlusion mask)``
so the covering object stays as it was.

Models: the XSeg occluders of DeepFaceLab (GPL-3.0) that FaceFusion 3.x ships as ONNX,
``xseg_1``, ``xseg_2`` (release ``models-3.1.0``) and ``xseg_3`` (``models-3.2.0``), files
``xseg_<n>.onnx`` in the ``facedetection`` models folder, found or downloaded through
:func:`gpen.weights.download.ensure_weights` (URLs and checks: :mod:`gpen.weights.registry`).
They run in onnxruntime, an optional dependency (``pip install onnxruntime`` or ``onnxruntime-gpu``).

The interface, as FaceFusion's ``face_masker.create_occlusion_mask`` / ``forward_occlude_face``
use it (read from its source; nothing of it is copied): the aligned face crop, in **BGR** order
(FaceFusion's frames come from OpenCV and are not converted for the occluder), resized to 256x256,
float32 0..1, NHWC ``(1, 256, 256, 3)``, fed to the input named ``input``; output ``[0][0]`` is the
mask ``(256, 256[, 1])``, clipped to 0..1 and resized back to the crop. With several models the
per-pixel minimum is taken; then a Gaussian blur with sigma 5 and ``(clip(m, 0.5, 1) - 0.5) * 2``,
which maps everything at or below one half to exactly 0.

Differences here: crops are our GPEN-aligned crops, RGB in the pipeline and flipped to BGR only at
the model's edge; a crop larger than 256 is shrunk with antialiasing (FaceFusion: plain bilinear);
the blur's sigma is 5 px at a 512 crop, scaled with the crop size so every model size gets the
same mask relative to the face (FaceFusion blurs 5 px at whatever crop size its processor uses).
Graphs with a fixed batch run face by face, graphs with a dynamic batch in chunks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError, ModelLoadError
from ..model.onnx_graph import INSTALL_ORT
from ..model.onnx_runtime import create_session, run_in_batches
from ..weights.download import ensure_weights
from .parsing import blur_mask

logger = logging.getLogger(__name__)

WEIGHTS_KIND = "facedetection"
OCCLUDER_MODELS = {"xseg_1": "xseg_1.onnx", "xseg_2": "xseg_2.onnx", "xseg_3": "xseg_3.onnx"}
OCCLUSION_CHOICES = ("none", *OCCLUDER_MODELS, "all")
INPUT_SIZE = 256
BLUR_SIGMA = 5.0  # px at a 512 crop (FaceFusion's value), scaled with the crop size
_SIGMA_BASE = 512


def parse_occluders(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Occluder model names from ``None``/``False``/``"none"`` (no occlusion), ``True`` (the default
    ``xseg_1``), ``"all"`` (the three XSeg models), one name or a comma-separated list / sequence.
    A path of an existing ``.onnx`` file with the occluders' interface is kept as it is."""
    if value is None or value is False:
        return ()
    if value is True:
        return ("xseg_1",)
    if isinstance(value, os.PathLike) or (isinstance(value, str) and _is_graph_file(value)):
        value = [value]
    raw = value.replace(",", " ").split() if isinstance(value, str) else [os.fspath(v) for v in value]
    names = [n.strip() if _is_graph_file(n.strip()) else n.strip().lower() for n in raw if n.strip()]
    if names in ([], ["none"]):
        return ()
    if names == ["all"]:
        return tuple(OCCLUDER_MODELS)
    unknown = [n for n in names if n not in OCCLUDER_MODELS and not _is_graph_file(n)]
    missing = [n for n in unknown if n.lower().endswith(".onnx")]
    if missing:
        raise InvalidInputError(f"Occluder file(s) not found: {', '.join(missing)}.")
    if unknown:
        raise InvalidInputError(f"Unknown occlusion model(s) {unknown}; choose one of {', '.join(OCCLUSION_CHOICES)} "
                                f"(or a comma-separated list of {', '.join(OCCLUDER_MODELS)}).")
    return tuple(dict.fromkeys(names))


def _is_graph_file(name: str) -> bool:
    return name.lower().endswith(".onnx") and Path(name).is_file()


def import_onnxruntime_for(what: str):
    """onnxruntime, or :class:`ModelLoadError` naming ``what`` needs it and the pip command."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelLoadError(f"{what} runs in onnxruntime, which is not installed: {INSTALL_ORT}. "
                             "Or turn occlusion off.") from None
    return onnxruntime


def soften_occlusion(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """FaceFusion's finish of an occlusion mask (N, S, S): blur (``sigma`` px), then
    ``(clip(m, 0.5, 1) - 0.5) * 2``; values at or below one half become exactly 0."""
    m = blur_mask(mask.clamp(0, 1), sigma) if sigma > 0 else mask.clamp(0, 1)
    return (m.clamp(0.5, 1.0) - 0.5) * 2.0


class XSegGraph:
    """One occluder graph in an onnxruntime session: NHWC BGR 0..1 crops in, (n, H, W) masks out."""

    def __init__(self, name: str, session) -> None:
        self.name = name
        self.session = session
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or (shape[3] != 3 and isinstance(shape[3], int)):
            raise ModelLoadError(f"{name}: not an occluder graph: expected one input (batch, 256, 256, 3) "
                                 f"(NHWC, BGR 0..1), got {inp.name!r} of shape {shape}.")
        self.input_name, self.output_name = inp.name, out.name
        self.size = shape[1] if isinstance(shape[1], int) and shape[1] > 0 else INPUT_SIZE
        self.batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None

    def run(self, x: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) float32 -> (n, size, size) float32 masks, clipped to 0..1."""
        n = x.shape[0]
        step = self.batch or n
        pieces = run_in_batches(self.session, self.input_name, self.output_name, x, self.batch)
        outs = [self._squeeze(out, min(step, n - i)) for out, i in zip(pieces, range(0, n, step))]
        return np.clip(np.concatenate(outs), 0.0, 1.0).astype(np.float32, copy=False)

    def _squeeze(self, out: np.ndarray, m: int) -> np.ndarray:
        if out.ndim == 4 and out.shape[-1] == 1:
            out = out[..., 0]
        elif out.ndim == 4 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 3 or out.shape[0] != m or out.shape[1] != out.shape[2]:
            raise ModelLoadError(f"{self.name}: the occluder returned shape {tuple(out.shape)}; expected one "
                                 f"square mask per face, ({m}, H, W[, 1]).")
        return out


def load_xseg(path: str | os.PathLike, name: str | None = None, device: torch.device | str = "cpu") -> XSegGraph:
    """An :class:`XSegGraph` of the file ``path`` (CUDA provider when ``device`` is CUDA and
    onnxruntime-gpu is installed, else CPU). Raises ModelLoadError when it cannot be used."""
    path = Path(path)
    name = name or path.stem
    ort = import_onnxruntime_for(f"The occlusion model {path.name}")
    cpu = ["CPUExecutionProvider"]
    dev = torch.device(device)
    if dev.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            cuda = ("CUDAExecutionProvider", {"device_id": dev.index or 0})
            return XSegGraph(name, create_session(ort, path, [cuda, *cpu]))
        except ModelLoadError as e:
            logger.warning("%s: onnxruntime's CUDA provider failed (%s); the occluder runs on the CPU", path.name, e)
    return XSegGraph(name, create_session(ort, path, cpu))


class FaceOccluder:
    """Occlusion masks (where the face is visible) for batches of aligned face crops.

    ``models``: occluder names, ``"all"`` or ``.onnx`` paths (see :func:`parse_occluders`; default
    ``xseg_1``).
    Files come from ``weights_paths`` (name -> path) or are found/downloaded in the
    ``facedetection`` folder (``extra_dirs`` searched first). ``graphs``: name -> already built
    :class:`XSegGraph` (skips the files). ``blur_sigma``: px at a 512 crop, scaled to the crop size.
    """

    def __init__(
        self,
        models: str | Iterable[str] = "xseg_1",
        device: torch.device | str = "cpu",
        weights_paths: Mapping[str, str | os.PathLike] | None = None,
        extra_dirs: Iterable[str | os.PathLike] = (),
        allow_download: bool = True,
        *,
        graphs: Mapping[str, XSegGraph] | None = None,
        blur_sigma: float = BLUR_SIGMA,
        batch_size: int = 8,
    ) -> None:
        self.models = parse_occluders(models)
        if not self.models:
            raise InvalidInputError(f"FaceOccluder needs at least one model: {', '.join(OCCLUDER_MODELS)} or all.")
        self.blur_sigma = float(blur_sigma)
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        graphs = dict(graphs or {})
        paths = dict(weights_paths or {})
        extra = list(extra_dirs)
        self.graphs: list[XSegGraph] = []
        for name in self.models:
            if name in graphs:
                self.graphs.append(graphs[name])
                continue
            path = paths.get(name, name if _is_graph_file(name) else None)
            if path is None:
                path = ensure_weights(OCCLUDER_MODELS[name], WEIGHTS_KIND, extra, allow_download=allow_download,
                                      validate=lambda p, n=name: load_xseg(p, n))
            self.graphs.append(load_xseg(path, name, self.device))
            logger.info("loaded occluder %s from %s", name, path)

    def to(self, device: torch.device | str) -> FaceOccluder:
        """Masks are returned on the crops' device; the sessions keep the provider chosen at load."""
        return self

    def _check(self, crops) -> None:
        if not isinstance(crops, torch.Tensor) or crops.ndim != 4 or crops.shape[1] != 3:
            shape = tuple(crops.shape) if isinstance(crops, torch.Tensor) else type(crops).__name__
            raise InvalidInputError(f"crops must be a tensor (N, 3, S, S) RGB 0..1, got {shape}.")
        if crops.shape[2] != crops.shape[3] or crops.shape[2] < 8 or not crops.is_floating_point():
            raise InvalidInputError(f"crops must be square float RGB 0..1 (N, 3, S, S), got {tuple(crops.shape)} "
                                    f"{crops.dtype}.")

    @torch.inference_mode()
    def raw_masks(self, crops: torch.Tensor) -> torch.Tensor:
        """Minimum over the models of their masks, at the crop size, before softening (N, S, S)."""
        self._check(crops)
        n, s = crops.shape[0], crops.shape[-1]
        out = torch.empty((n, s, s), dtype=torch.float32, device=crops.device)
        for start in range(0, n, self.batch_size):
            part = crops[start:start + self.batch_size].float().clamp(0, 1)
            lowest = None
            for graph in self.graphs:
                x = part
                if s != graph.size:
                    x = F.interpolate(x, size=(graph.size, graph.size), mode="bilinear", align_corners=False,
                                      antialias=s > graph.size)
                bgr = x.flip(1).permute(0, 2, 3, 1).contiguous().cpu().numpy()
                m = torch.from_numpy(graph.run(bgr)).to(crops.device)
                if m.shape[-1] != s:
                    m = F.interpolate(m[:, None], size=(s, s), mode="bilinear", align_corners=False,
                                      antialias=m.shape[-1] > s)[:, 0].clamp(0, 1)
                lowest = m if lowest is None else torch.minimum(lowest, m)
            out[start:start + part.shape[0]] = lowest
        return out

    def masks(self, crops: torch.Tensor) -> torch.Tensor:
        """Soft occlusion masks (N, S, S) float32 0..1 (1: face visible, 0: covered) for aligned
        crops (N, 3, S, S) RGB 0..1, on the crops' device. The input is not modified."""
        raw = self.raw_masks(crops)
        return soften_occlusion(raw, self.blur_sigma * crops.shape[-1] / _SIGMA_BASE)


__all__ = [
    "BLUR_SIGMA",
    "FaceOccluder",
    "OCCLUDER_MODELS",
    "OCCLUSION_CHOICES",
    "XSegGraph",
    "import_onnxruntime_for",
    "load_xseg",
    "parse_occluders",
    "soften_occlusion",
]
