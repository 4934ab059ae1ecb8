"""Batched face detection: boxes, scores and 5-point landmarks for a batch of RGB images.

The default backend is facexlib's RetinaFace (``facexlib.detection.retinaface.RetinaFace``), built
here and loaded safely (``torch.load(weights_only=True)``, ``module.`` prefixes stripped). Weights
are facexlib's files, looked up in (or downloaded to) the ``facedetection`` models folder, the
folder ReActor uses:

- ``retinaface_resnet50``: network ``resnet50``, file ``detection_Resnet50_Final.pth``
- ``retinaface_mobile0.25`` (fast): network ``mobile0.25``, file ``detection_mobilenet0.25_Final.pth``

What RetinaFace expects (facexlib ``RetinaFace.detect_faces`` / ``batched_detect_faces``): an NCHW
float tensor in **BGR** order, values 0..255, minus the per-channel mean ``(104, 117, 123)`` (B, G,
R). Our images are RGB 0..1, so the conversion happens once, in :meth:`RetinaFaceBackend.detect`.
The network returns box offsets, softmaxed class scores and landmark offsets per prior (anchor);
they are decoded with facexlib's ``batched_decode`` / ``batched_decode_landm`` against the priors of
facexlib's ``PriorBox`` (re-derived here without Python loops and cached per input size), in
coordinates normalised to the network input, then scaled to the original image.

Large images are detected on a copy whose longest side is at most ``max_side`` (area
interpolation), with coordinates mapped back to the full image.

Any other detector can be plugged in: ``FaceDetector(backend=...)`` accepts an object with a
``detect(images, threshold) -> list[Detections]`` method (see :class:`DetectorBackend`) or such a
callable; ``FaceDetector`` then only validates inputs and outputs.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ..weights.download import ensure_weights
from ..errors import InvalidInputError, ModelLoadError
from ..model.files import unwrap_state_dict
from ..model.loader import read_weights_file
from ..compat import is_oom as default_is_oom

logger = logging.getLogger(__name__)

# model name -> (facexlib network name, weights file name)
RETINAFACE_MODELS: dict[str, tuple[str, str]] = {
    "retinaface_resnet50": ("resnet50", "detection_Resnet50_Final.pth"),
    "retinaface_mobile0.25": ("mobile0.25", "detection_mobilenet0.25_Final.pth"),
}
WEIGHTS_KIND = "facedetection"
# Memory of each detector: (weights bytes in float32, working bytes per network-input pixel and
# frame, working bytes per call), measured on CPU with frames scaled to 1600x900 (python -m bench
# detection-memory; bench/results/cpu_detection_memory.json). cuDNN workspaces come on top on CUDA.
DETECTION_MEMORY: dict[str, tuple[int, int, int]] = {
    "retinaface_resnet50": (27_351_657 * 4, 202, 111 * 2 ** 20),
    "retinaface_mobile0.25": (433_343 * 4, 49, 37 * 2 ** 20),
}
BGR_MEAN = (104.0, 117.0, 123.0)  # facexlib RetinaFace.mean_tensor, B, G, R on the 0..255 scale


@dataclass(frozen=True, eq=False)
class Detections:
    """Faces found in one image, sorted by descending score; all arrays are float32 numpy.

    ``boxes`` (K, 4): x1, y1, x2, y2 in image pixels. ``scores`` (K,). ``landmarks`` (K, 5, 2): x, y
    of left eye, right eye, nose tip, left mouth corner, right mouth corner (left/right as seen in
    the image).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        z = np.zeros
        return cls(z((0, 4), np.float32), z((0,), np.float32), z((0, 5, 2), np.float32))

    @classmethod
    def from_arrays(cls, boxes, scores, landmarks) -> Detections:
        """Build from array-likes, checking shapes and converting to float32 (K, 4) / (K,) / (K, 5, 2)."""
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        s = np.asarray(scores, dtype=np.float32).reshape(-1)
        lm = np.asarray(landmarks, dtype=np.float32).reshape(-1, 5, 2)
        if not (b.shape[0] == s.shape[0] == lm.shape[0]):
            raise InvalidInputError(
                f"Detections need as many boxes, scores and landmark sets; got {b.shape[0]}, {s.shape[0]}, {lm.shape[0]}."
            )
        return cls(b, s, lm)


@runtime_checkable
class DetectorBackend(Protocol):
    """What ``FaceDetector`` needs from a detector: one :class:`Detections` per image."""

    def detect(self, images: torch.Tensor, threshold: float) -> list[Detections]: ...


def load_weights_into(module: torch.nn.Module, path: str | os.PathLike, what: str) -> torch.nn.Module:
    """Load a weights file into ``module`` safely (see :mod:`gpen.model.files`) and strictly.

    Containers (``state_dict``, ``params``, ...) and a ``module.`` prefix are unwrapped. Anything
    that does not match ``module`` exactly raises :class:`ModelLoadError` naming the file and ``what``.
    """
    path = Path(path)
    state = unwrap_state_dict(read_weights_file(path), path.name, what=f"{what} weights file")
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        def head(keys):
            return ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")

        parts = [f"{len(missing)} missing ({head(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({head(unexpected)})" if unexpected else "",
                 f"{len(wrong)} with other shapes ({head(wrong)})" if wrong else ""]
        raise ModelLoadError(f"{path} is not {what} weights: " + "; ".join(p for p in parts if p) + " tensors.")
    module.load_state_dict(state, strict=True)
    return module


def retinaface_priors(height: int, width: int, cfg: dict) -> torch.Tensor:
    """Anchors (N, 4) as cx, cy, w, h normalised to the input size, in facexlib ``PriorBox`` order.

    Order: feature level, then row, column, then anchor size; centres at ``(j + 0.5) * step / W``.
    """
    rows = []
    for step, sizes in zip(cfg["steps"], cfg["min_sizes"]):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy = (np.arange(fh, dtype=np.float64) + 0.5) * step / height
        cx = (np.arange(fw, dtype=np.float64) + 0.5) * step / width
        n = len(sizes)
        grid = np.empty((fh, fw, n, 4), dtype=np.float64)
        grid[..., 0] = cx[None, :, None]
        grid[..., 1] = cy[:, None, None]
        grid[..., 2] = np.asarray(sizes, dtype=np.float64) / width
        grid[..., 3] = np.asarray(sizes, dtype=np.float64) / height
        rows.append(grid.reshape(-1, 4))
    return torch.from_numpy(np.concatenate(rows).astype(np.float32))


def build_retinaface(network_name: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """facexlib's RetinaFace (``resnet50`` or ``mobile0.25``) with untrained weights, eval mode."""
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():  # torchvision's deprecation notice for resnet50(pretrained=False)
        warnings.simplefilter("ignore")
        net = RetinaFace(network_name=network_name, half=False, phase="test", device=torch.device(device))
    return net.eval()


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise InvalidInputError(f"images must be a torch.Tensor (B, H, W, 3), got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InvalidInputError(f"images must have shape (B, H, W, 3) RGB, got {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise InvalidInputError(f"images must be float RGB in 0..1, got dtype {images.dtype}.")
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise InvalidInputError(f"images are empty: shape {tuple(images.shape)}.")


class RetinaFaceBackend:
    """Batched RetinaFace detection on an already built (and loaded) facexlib ``RetinaFace``.

    ``max_side``: longest side of the copy the network sees (None: full size). ``nms_threshold``:
    IoU above which the lower-scored of two boxes is dropped (facexlib's default 0.4).
    ``batch_size``: images per forward pass, to bound memory on long video batches.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        max_side: int | None = 1600,
        nms_threshold: float = 0.4,
        batch_size: int = 8,
    ) -> None:
        if max_side is not None and max_side < 32:
            raise InvalidInputError(f"max_side must be at least 32 pixels (or None), got {max_side}.")
        self.net = net.eval()
        self.cfg = net.cfg
        self.max_side = max_side
        self.nms_threshold = float(nms_threshold)
        self.batch_size = max(1, int(batch_size))
        self._priors: dict[tuple[int, int, str], torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _priors_for(self, height: int, width: int) -> torch.Tensor:
        key = (height, width, str(self.device))
        if key not in self._priors:
            if len(self._priors) > 16:
                self._priors.clear()
            self._priors[key] = retinaface_priors(height, width, self.cfg).to(self.device)
        return self._priors[key]

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) RGB 0..1 -> the (B, 3, h, w) BGR, 0..255, mean-subtracted tensor RetinaFace expects."""
        # Downscale first (area interpolation is linear, so the order does not matter) to keep
        # full-size temporaries of large frames to the one conversion copy.
        x = images.to(self.device, torch.float32).permute(0, 3, 1, 2)
        h, w = x.shape[-2:]
        if self.max_side is not None and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = F.interpolate(x, size=size, mode="area")
        x = x.flip(1) * 255.0  # RGB 0..1 -> BGR 0..255
        mean = torch.tensor(BGR_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return x - mean

    @torch.inference_mode()
    def detect(self, images: torch.Tensor, threshold: float) -> list[Detections]:
        """Detect faces in (B, H, W, 3) RGB 0..1 images; scores strictly above ``threshold`` are kept."""
        from facexlib.detection.retinaface_utils import batched_decode, batched_decode_landm
        from torchvision.ops import nms

        height, width = images.shape[1:3]
        out: list[Detections] = []
        variances = self.cfg["variance"]
        to_pixels = torch.tensor([width, height], device=self.device, dtype=torch.float32)
        for start in range(0, images.shape[0], self.batch_size):
            x = self.network_input(images[start : start + self.batch_size])
            loc, conf, landm = self.net(x)
            priors = self._priors_for(*x.shape[-2:]).unsqueeze(0)
            # Normalised coordinates of the network input are normalised coordinates of the image.
            boxes = batched_decode(loc.float(), priors, variances).view(x.shape[0], -1, 2, 2) * to_pixels
            marks = batched_decode_landm(landm.float(), priors, variances).view(x.shape[0], -1, 5, 2) * to_pixels
            scores = conf[..., 1].float()
            keep_mask = scores > threshold
            kept = []
            for b in range(x.shape[0]):
                idx = keep_mask[b].nonzero().squeeze(1)
                bx, sc, lm = boxes[b, idx].reshape(-1, 4), scores[b, idx], marks[b, idx]
                order = nms(bx, sc, self.nms_threshold)  # indices sorted by descending score
                kept.append((bx[order], sc[order], lm[order]))
            for bx, sc, lm in kept:  # one transfer per image, after all the work on the device
                out.append(Detections(bx.cpu().numpy(), sc.cpu().numpy(), lm.cpu().numpy()))
        return out


BackendLike = DetectorBackend | Callable[[torch.Tensor, float], list[Detections]]


class FaceDetector:
    """Face detector for batches of RGB 0..1 images ``(B, H, W, 3)``.

    By default RetinaFace (``model`` ``"retinaface_resnet50"`` or ``"retinaface_mobile0.25"``) with
    weights from ``weights_path`` or else found/downloaded through
    :func:`gpen.weights.download.ensure_weights` in the ``facedetection`` folder (``extra_dirs`` searched
    first). Pass ``backend`` to use any other detector (see :class:`DetectorBackend`); then no
    RetinaFace weights are needed. ``max_side``, ``nms_threshold`` and ``batch_size`` tune RetinaFace
    (see :class:`RetinaFaceBackend`).
    """

    def __init__(
        self,
        model: str = "retinaface_resnet50",
        device: torch.device | str = "cpu",
        weights_path: str | os.PathLike | None = None,
        extra_dirs: Iterable[str | os.PathLike] = (),
        allow_download: bool = True,
        *,
        backend: BackendLike | None = None,
        max_side: int | None = 1600,
        nms_threshold: float = 0.4,
        batch_size: int = 8,
    ) -> None:
        self.model = model
        if backend is not None:
            self.backend = backend
            return
        if model not in RETINAFACE_MODELS:
            raise InvalidInputError(f"Unknown detector {model!r}; choose one of {', '.join(RETINAFACE_MODELS)}.")
        network_name, file_name = RETINAFACE_MODELS[model]
        if weights_path is None:
            weights_path = ensure_weights(file_name, WEIGHTS_KIND, extra_dirs, allow_download=allow_download)
        net = build_retinaface(network_name, "cpu")
        load_weights_into(net, weights_path, f"RetinaFace {network_name}")
        net = net.to(device)
        logger.info("loaded %s from %s on %s", model, weights_path, device)
        self.backend = RetinaFaceBackend(net, max_side=max_side, nms_threshold=nms_threshold, batch_size=batch_size)

    @property
    def network(self) -> torch.nn.Module | None:
        """The backend's torch network (RetinaFace), for a host that manages its memory; None for
        other backends."""
        net = getattr(self.backend, "net", None)
        return net if isinstance(net, torch.nn.Module) else None

    def to(self, device: torch.device | str) -> FaceDetector:
        """Move the RetinaFace network (if that is the backend) to ``device``; returns self."""
        if self.network is not None:
            self.network.to(device)
        return self

    def detect(self, images: torch.Tensor, threshold: float = 0.5) -> list[Detections]:
        """One :class:`Detections` per image of ``images`` (B, H, W, 3), RGB, float 0..1.

        Faces with a score above ``threshold`` are returned, highest score first. The input is
        not modified.
        """
        _check_images(images)
        if not 0.0 <= float(threshold) <= 1.0:
            raise InvalidInputError(f"threshold must be within 0..1, got {threshold}.")
        if images.shape[0] == 0:
            return []
        run = self.backend.detect if hasattr(self.backend, "detect") else self.backend
        results = list(run(images, float(threshold)))
        if len(results) != images.shape[0]:
            raise InvalidInputError(
                f"detector backend returned {len(results)} results for {images.shape[0]} images."
            )
        return [r if isinstance(r, Detections) else Detections.from_arrays(*r) for r in results]


def detection_memory_bytes(model: str, height: int, width: int, frames: int = 8, max_side: int | None = 1600) -> int:
    """Device memory to detect faces in ``frames`` frames of ``height`` x ``width`` at once with
    ``model`` (weights + working memory, :data:`DETECTION_MEMORY`); frames are seen at most
    ``max_side`` pixels long, as :class:`RetinaFaceBackend` scales them. Unknown models count as ResNet-50."""
    weights, per_pixel, per_call = DETECTION_MEMORY.get(model, DETECTION_MEMORY["retinaface_resnet50"])
    scale = 1.0 if max_side is None or max(height, width) <= max_side else max_side / max(height, width)
    pixels = max(1, round(height * scale)) * max(1, round(width * scale))
    return int(weights + per_call + max(0, frames) * pixels * per_pixel)


def detect_in_chunks(detector: FaceDetector, images: torch.Tensor, *, threshold: float = 0.5,
                     device: torch.device | str | None = None, frames_per_chunk: int = 8,
                     progress: Callable[[int, int], None] | None = None,
                     check_interrupt: Callable[[], None] | None = None,
                     is_oom: Callable[[BaseException], bool] = default_is_oom) -> list[Detections]:
    """Detect faces in a long frame batch ``images`` (B, H, W, 3) RGB 0..1, ``frames_per_chunk`` frames per call.

    Each chunk moves to ``device`` on its own (default: where the images are). Before each call
    ``check_interrupt()`` runs (it raises to cancel), after it ``progress(frames done, B)``. A call
    that runs out of memory (``is_oom``, default :func:`gpen.compat.is_oom`) is retried
    with half the frames, down to one; the smaller chunk is kept for the rest of the batch.
    """
    b = images.shape[0]
    device = torch.device(device) if device is not None else images.device
    out: list[Detections] = []
    chunk = max(1, int(frames_per_chunk))
    while len(out) < b:
        if check_interrupt is not None:
            check_interrupt()
        start = len(out)
        tried = min(chunk, b - start)
        try:
            out.extend(detector.detect(images[start:start + tried].to(device), threshold=threshold))
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried, the rest re-raised
            if tried == 1 or not is_oom(exc):
                raise
            chunk = tried // 2
            logger.warning("out of memory detecting faces in %d frames at once; retrying with %d", tried, chunk)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        if progress is not None:
            progress(len(out), b)
    return out


__all__ = [
    "Detections",
    "DetectorBackend",
    "FaceDetector",
    "RETINAFACE_MODELS",
    "RetinaFaceBackend",
    "build_retinaface",
    "detect_in_chunks",
    "detection_memory_bytes",
    "load_weights_into",
    "retinaface_priors",
]
