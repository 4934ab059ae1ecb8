"""Whole-image face restoration: find faces, align, restore in batches, paste back.

The data path reads in one direction: image batch -> faces (detector or given landmarks) ->
aligned crops (``align.warp_affine``) -> restored crops (the GPEN network, many faces per call)
-> pasted images (``paste.paste_back``). Images are RGB float 0..1 in ComfyUI's layout
(B, H, W, C); crops are (N, 3, S, S). Frames are processed in chunks so that long video batches
run in bounded memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .align import estimate_similarity, invert_affine, template_points, warp_affine
from .color import match_color
from .errors import InvalidInputError
from .paste import feather_mask, paste_back
from .temporal import smooth_landmarks

log = logging.getLogger(__name__)

SORT_ORDERS = ("left-to-right", "largest-first", "score")
TEMPLATES = ("gpen", "ffhq")
# The face region of a GPEN-aligned crop, in crop fractions: used to give a box to faces that
# come with landmarks only (for sorting, size limits and reports).
_FACE_BOX_IN_CROP = np.array([[0.22, 0.2], [0.78, 0.2], [0.78, 0.86], [0.22, 0.86]])
_DETECT_MIN_SIDE = 16  # images smaller than this have no detectable face


@dataclass(frozen=True)
class Face:
    """One restored face: which image, where (box x1,y1,x2,y2 and 5 landmarks in image pixels),
    the detector's score (1.0 for given landmarks) and the 2x3 image->crop alignment matrix."""

    image_index: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    affine: np.ndarray


@dataclass
class RestoreResult:
    """Output of :meth:`FaceRestorer.restore`.

    ``images`` (B, H, W, C) like the input; ``masks`` (B, H, W) float 0..1, where restored pixels
    were blended in; ``crops`` (N, S, S, 3) the restored aligned faces (or the aligned input
    crops, or empty, see ``keep_crops``); ``faces`` one :class:`Face` per restored face, in crop
    order; ``faces_per_image`` counts; ``info`` a one-line human summary.
    """

    images: torch.Tensor
    masks: torch.Tensor
    crops: torch.Tensor
    faces: list[Face] = field(default_factory=list)
    faces_per_image: list[int] = field(default_factory=list)
    info: str = ""


Restorer = Callable[[torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], None]
PlaceFn = Callable[[str, object, torch.Tensor], None]
"""``place(role, network, inputs)``: called right before ``network`` runs on ``inputs``; ``role`` is
"restorer" (the GPEN network or crop restorer), "detector" (a ``FaceDetector``) or "parser" (a
``FaceParser``). A host uses it to load the network where its memory manager wants it."""

_OOM_ERRORS = tuple(e for e in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
                    if isinstance(e, type))


def default_is_oom(exc: BaseException) -> bool:
    """True for torch's out-of-memory error (``torch.OutOfMemoryError``; ``torch.cuda.OutOfMemoryError``
    on older torch)."""
    return isinstance(exc, _OOM_ERRORS)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise InvalidInputError(f"images must be a torch tensor (B, H, W, C), got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise InvalidInputError(f"images must have shape (B, H, W, C) with C = 1, 3 or 4 (grey, RGB, RGBA), "
                                f"got {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise InvalidInputError(f"images must be float 0..1, got {images.dtype}.")
    if images.numel() and not torch.isfinite(images).all():
        raise InvalidInputError("images contain NaN or infinite values; fix the node or file that produced them.")


def parse_selection(selection: str | Sequence[int] | None) -> str | list[int]:
    """'all', 'largest', or face indices ('0,2' / [0, 2]) into a canonical form."""
    if selection is None:
        return "all"
    if isinstance(selection, str):
        text = selection.strip().lower()
        if text in ("", "all"):
            return "all"
        if text == "largest":
            return "largest"
        try:
            return [int(p) for p in text.replace(" ", "").split(",") if p != ""]
        except ValueError:
            raise InvalidInputError(f"face selection must be 'all', 'largest' or indices like '0,2', "
                                    f"got {selection!r}.") from None
    return [int(i) for i in selection]


def _boxes_from_affine(affine: np.ndarray, size: int) -> np.ndarray:
    """Axis-aligned image boxes of the face region of aligned crops (K, 2, 3) -> (K, 4)."""
    inv = invert_affine(affine)
    pts = _FACE_BOX_IN_CROP * size
    img = np.einsum("kij,pj->kpi", inv[:, :, :2], pts) + inv[:, None, :, 2]
    return np.concatenate([img.min(axis=1), img.max(axis=1)], axis=1).astype(np.float32)


class FaceRestorer:
    """Restore every selected face of image batches with a GPEN network (or any crop restorer).

    ``restorer``: a network from :func:`gpen.load_model` or any callable that maps normalised
    aligned crops (N, 3, S, S) in -1..1 to restored crops of the same shape. ``size``: the crop
    size S (taken from ``restorer.size`` when it has one). ``device``: where crops are warped,
    restored and pasted (default: the network's device, else the images' device).
    ``detector``: a :class:`gpen.detect.FaceDetector` (or anything with its ``detect``); by default
    one is created on first use from the ``detector`` name given to :meth:`restore`.
    ``parser``: likewise a :class:`gpen.parsing.FaceParser` for ``parsing=True``.
    ``place``: see :data:`PlaceFn`; by default the detector and parser are moved to the work device
    and the restorer is left where it is. ``is_oom``: which exceptions are out-of-memory errors that
    halve the chunk (default :func:`default_is_oom`; a host passes its own, e.g. ComfyUI's
    ``model_management.is_oom``).
    """

    def __init__(self, restorer: Restorer, size: int | None = None, device: torch.device | str | None = None,
                 detector=None, parser=None, place: PlaceFn | None = None,
                 is_oom: Callable[[BaseException], bool] | None = None) -> None:
        self.restorer = restorer
        size = size if size is not None else getattr(restorer, "size", None)
        if not isinstance(size, int) or size < 8:
            raise InvalidInputError("FaceRestorer needs the crop size: pass size=... for a restorer without .size")
        self.size = size
        if device is None:
            device = getattr(restorer, "device", None)
        self.device = torch.device(device) if device is not None else None
        self._detector = detector
        self._detectors: dict[tuple, object] = {}
        self._parser = parser
        self.place = place
        self.is_oom = is_oom or default_is_oom

    # ---- faces -------------------------------------------------------------------------------

    def detector(self, name: str, device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The detector for ``name`` (created once, then reused)."""
        if self._detector is not None:
            return self._detector
        key = (name, tuple(str(d) for d in extra_dirs))
        if key not in self._detectors:
            from .detect import FaceDetector

            self._detectors[key] = FaceDetector(name, device=self._build_device(device), extra_dirs=extra_dirs,
                                                allow_download=allow_download)
        return self._detectors[key]

    def parser(self, device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The face parser (created once, then reused)."""
        if self._parser is None:
            from .parsing import FaceParser

            self._parser = FaceParser(device=self._build_device(device), extra_dirs=extra_dirs,
                                      allow_download=allow_download)
        return self._parser

    def _build_device(self, device: torch.device) -> torch.device:
        """Where new detector/parser networks are built: the CPU when a ``place`` hook will move them
        (the host makes room first), else the work device."""
        return torch.device("cpu") if self.place is not None else device

    def _ready(self, role: str, network, inputs: torch.Tensor, device: torch.device):
        """Hand ``network`` to the ``place`` hook (or move a detector/parser to ``device``) before it runs."""
        if self.place is not None:
            self.place(role, network, inputs)
        elif role != "restorer":
            network.to(device)
        return network

    def offload(self, device: torch.device | str = "cpu") -> None:
        """Move the detector and parser networks this restorer created to ``device`` (e.g. to free
        GPU memory between runs); they move back to the work device on next use."""
        for det in self._detectors.values():
            det.to(device)
        if self._parser is not None:
            self._parser.to(device)

    def find_faces(self, images: torch.Tensor, landmarks=None, *, detector: str = "retinaface_resnet50",
                   detection_threshold: float = 0.5, detector_dirs=(), allow_download: bool = True,
                   frames_per_chunk: int = 8) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per image (boxes (K,4), scores (K,), landmarks (K,5,2)) from the detector or ``landmarks``."""
        b, h, w = images.shape[:3]
        if landmarks is not None:
            if len(landmarks) != b:
                raise InvalidInputError(f"landmarks must list one array (K, 5, 2) per image: got {len(landmarks)} "
                                        f"for {b} images.")
            found = []
            for i, lm in enumerate(landmarks):
                lm = np.zeros((0, 5, 2), np.float32) if lm is None else np.asarray(lm, dtype=np.float32)
                if lm.size == 0:
                    lm = lm.reshape(0, 5, 2)
                if lm.ndim == 2 and lm.shape == (5, 2):
                    lm = lm[None]
                if lm.ndim != 3 or lm.shape[1:] != (5, 2) or not np.isfinite(lm).all():
                    raise InvalidInputError(f"landmarks of image {i} must be finite numbers of shape (K, 5, 2), "
                                            f"got {lm.shape}.")
                affine = estimate_similarity(lm, template_points("gpen", self.size)) if len(lm) else np.zeros((0, 2, 3))
                boxes = _boxes_from_affine(affine, self.size) if len(lm) else np.zeros((0, 4), np.float32)
                found.append((boxes, np.ones(len(lm), np.float32), lm))
            return found
        if min(h, w) < _DETECT_MIN_SIDE:
            return [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))] * b
        dev = self._work_device(images)
        det = self.detector(detector, dev, detector_dirs, allow_download)
        found = []
        for start in range(0, b, frames_per_chunk):
            chunk = _rgb(images[start:start + frames_per_chunk]).to(dev)
            for d in self._ready("detector", det, chunk, dev).detect(chunk, threshold=detection_threshold):
                found.append((d.boxes, d.scores, d.landmarks))
        return found

    @staticmethod
    def select_faces(found, *, selection="all", sort: str = "left-to-right", min_face_size: float = 0,
                     mask: torch.Tensor | None = None) -> list[np.ndarray]:
        """Indices of the faces to restore per image, in restore order (see :meth:`restore`)."""
        if sort not in SORT_ORDERS:
            raise InvalidInputError(f"sort must be one of {', '.join(SORT_ORDERS)}, got {sort!r}.")
        selection = parse_selection(selection)
        chosen = []
        for i, (boxes, scores, lms) in enumerate(found):
            keep = np.arange(len(boxes))
            if len(keep) and min_face_size > 0:
                side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
                keep = keep[side[keep] >= min_face_size]
            if len(keep) and mask is not None:
                m = mask[min(i, mask.shape[0] - 1)]
                centre = lms[keep].mean(axis=1)
                x = np.clip(np.round(centre[:, 0]).astype(int), 0, m.shape[1] - 1)
                y = np.clip(np.round(centre[:, 1]).astype(int), 0, m.shape[0] - 1)
                inside = (m[torch.from_numpy(y), torch.from_numpy(x)] > 0.5).cpu().numpy()
                keep = keep[inside]
            if len(keep):
                area = (boxes[keep, 2] - boxes[keep, 0]) * (boxes[keep, 3] - boxes[keep, 1])
                if sort == "left-to-right":
                    order = np.argsort((boxes[keep, 0] + boxes[keep, 2]) / 2, kind="stable")
                elif sort == "largest-first":
                    order = np.argsort(-area, kind="stable")
                else:
                    order = np.argsort(-scores[keep], kind="stable")
                keep = keep[order]
                if selection == "largest":
                    keep = keep[[int(np.argmax(area[order]))]]
                elif isinstance(selection, list):
                    keep = keep[[j for j in selection if -len(keep) <= j < len(keep)]]
            chosen.append(keep)
        return chosen

    # ---- restoration -------------------------------------------------------------------------

    def _work_device(self, images: torch.Tensor) -> torch.device:
        return self.device if self.device is not None else images.device

    def run_network(self, crops: torch.Tensor, chunk_size: int | None = None, progress: ProgressFn | None = None,
                    check_interrupt: Callable[[], None] | None = None, done: int = 0, total: int | None = None
                    ) -> torch.Tensor:
        """Restore aligned crops (N, 3, S, S) 0..1 in chunks; on out-of-memory halve the chunk and retry."""
        n = crops.shape[0]
        total = n if total is None else total
        chunk = max(1, int(chunk_size or self.default_chunk_size(crops.device)))
        out = torch.empty_like(crops)
        i = 0
        while i < n:
            if check_interrupt is not None:
                check_interrupt()
            part = crops[i:i + chunk]
            try:
                self._ready("restorer", self.restorer, part, crops.device)
                with torch.inference_mode():
                    restored = self.restorer(part * 2 - 1)
            except Exception as exc:
                if part.shape[0] == 1 or not self.is_oom(exc):
                    raise
                chunk = max(1, part.shape[0] // 2)
                log.warning("out of memory restoring %d faces at once; retrying with %d", part.shape[0], chunk)
                if crops.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            if restored.shape != part.shape:
                raise InvalidInputError(f"the restorer returned shape {tuple(restored.shape)} for input "
                                        f"{tuple(part.shape)}; it must return the same shape.")
            out[i:i + part.shape[0]] = ((restored.float().clamp(-1, 1) + 1) / 2).to(out.dtype)
            i += part.shape[0]
            if progress is not None:
                progress(done + i, total)
        return out

    def default_chunk_size(self, device: torch.device) -> int:
        """Faces per network call: from free memory on CUDA; on CPU one (batching gains nothing there:
        ``python -m bench network --batches 1 8``)."""
        if device.type != "cuda":
            return 1
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(1, min(64, free * 0.6 // face_memory_bytes(self.size, getattr(self.restorer, "dtype", None)))))

    def restore(self, images: torch.Tensor, landmarks=None, *, strength: float = 1.0, template: str = "gpen",
                detector: str = "retinaface_resnet50", detection_threshold: float = 0.5,
                face_selection: str | Sequence[int] = "all", sort: str = "left-to-right", min_face_size: float = 0,
                mask: torch.Tensor | None = None, parsing: bool = False, color_correction: bool = False,
                temporal_smoothing: float = 0.0, chunk_size: int | None = None, frames_per_chunk: int | None = None,
                detector_dirs=(), allow_download: bool = True, keep_crops: str = "restored",
                progress: ProgressFn | None = None, check_interrupt: Callable[[], None] | None = None
                ) -> RestoreResult:
        """Restore the faces of ``images`` (B, H, W, C) float 0..1 (C = 3 RGB, 4 RGBA, 1 grey).

        Faces come from ``landmarks`` (per image an array (K, 5, 2): left eye, right eye, nose tip,
        left and right mouth corner, in pixels) or from the ``detector`` (score >= threshold).
        They are filtered (``min_face_size`` pixels, face centre inside ``mask`` (B, H, W) > 0.5, and
        the mask also bounds the blend: 0 keeps the original pixel, soft values mix),
        ordered (``sort``) and picked (``face_selection``: "all", "largest" or indices "0,2" in that
        order), aligned to ``template`` ("gpen" or "ffhq"), restored in chunks of ``chunk_size``
        faces, optionally colour-matched to the source face, and pasted back with the feathered
        mask (or a face-parsing mask), mixed with the source face by ``strength`` 0..1.
        ``temporal_smoothing`` 0..1 smooths landmarks along the batch (video frames).
        ``keep_crops``: "restored", "aligned" (the aligned input crops) or "none".
        The input is never modified; pixels outside every face mask come back bit-identical.
        """
        _check_images(images)
        if template not in TEMPLATES:
            raise InvalidInputError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}.")
        if not 0.0 <= float(strength) <= 1.0:
            raise InvalidInputError(f"strength must be within 0..1, got {strength}.")
        if keep_crops not in ("restored", "aligned", "none"):
            raise InvalidInputError(f"keep_crops must be 'restored', 'aligned' or 'none', got {keep_crops!r}.")
        b, h, w, c = images.shape
        frames_per_chunk = frames_per_chunk or default_frames_per_chunk(h, w)
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.ndim != 3 or mask.shape[1:] != (h, w) \
                    or mask.shape[0] not in (1, b):
                raise InvalidInputError(f"mask must have shape ({b} or 1, {h}, {w}) to match the images, got "
                                        f"{tuple(getattr(mask, 'shape', ()))}.")
        found = self.find_faces(images, landmarks, detector=detector, detection_threshold=detection_threshold,
                                detector_dirs=detector_dirs, allow_download=allow_download,
                                frames_per_chunk=frames_per_chunk)
        if temporal_smoothing > 0 and b > 2:
            smoothed = smooth_landmarks([f[2] for f in found], [f[0] for f in found], strength=float(temporal_smoothing))
            found = [(bx, sc, lm.astype(np.float32)) for (bx, sc, _), lm in zip(found, smoothed)]
        chosen = self.select_faces(found, selection=face_selection, sort=sort, min_face_size=min_face_size, mask=mask)

        tmpl = template_points(template, self.size)
        faces: list[Face] = []
        for i, keep in enumerate(chosen):
            boxes, scores, lms = found[i]
            if not len(keep):
                continue
            affine = estimate_similarity(lms[keep], tmpl)
            for j, k in enumerate(keep):
                faces.append(Face(i, boxes[k].copy(), lms[k].copy(), float(scores[k]), affine[j].astype(np.float32)))
        counts = [int(len(k)) for k in chosen]
        n = len(faces)

        out_images = images.clone()
        out_masks = torch.zeros((b, h, w), dtype=torch.float32, device=images.device)
        crops_out = []
        dev = self._work_device(images)
        done = 0
        face_i = 0
        for start in range(0, b, frames_per_chunk):
            stop = min(b, start + frames_per_chunk)
            sel = [f for f in faces[face_i:] if f.image_index < stop]
            face_i += len(sel)
            if not sel:
                continue
            frames = images[start:stop].to(dev)
            rgb = _rgb(frames)
            idx = torch.tensor([f.image_index - start for f in sel], device=dev)
            fwd = torch.from_numpy(np.stack([f.affine for f in sel])).to(dev)
            aligned = warp_affine(rgb.permute(0, 3, 1, 2), fwd, idx, self.size).float().clamp(0, 1)
            restored = self.run_network(aligned, chunk_size, progress, check_interrupt, done, n)
            done += len(sel)
            face_masks = None
            if parsing:
                parser = self.parser(dev, detector_dirs, allow_download)
                face_masks = self._ready("parser", parser, restored, dev).masks(restored)
            if color_correction:
                weight = face_masks if face_masks is not None else feather_mask(self.size, dev)[None].expand(len(sel), -1, -1)
                restored = match_color(restored, aligned, weight)
            inverse = torch.from_numpy(invert_affine(np.stack([f.affine for f in sel]).astype(np.float64))).float()
            pasted, blend = paste_back(rgb if c == 1 else frames, restored, aligned if strength < 1 else None, inverse.to(dev), idx,
                                       face_masks, float(strength))
            if c == 1:
                # grey in, grey out: the luma of the restored RGB where something was blended
                luma = _luma(pasted)
                pasted = torch.where(blend[..., None] > 0, luma, frames)
            if mask is not None:
                # the user's mask also bounds the blend: img + u * (pasted - img), exact where u == 0
                u = (mask if mask.shape[0] == 1 else mask[start:stop]).to(dev, torch.float32).clamp(0, 1)
                src = frames.to(pasted.dtype)
                pasted = (src + u[..., None].to(pasted.dtype) * (pasted - src)).to(pasted.dtype)
                pasted = torch.where(u[..., None] > 0, pasted, src)
                blend = blend * u
            out_images[start:stop] = pasted.to(images.device)
            out_masks[start:stop] = blend.to(images.device)
            if keep_crops != "none":
                kept = restored if keep_crops == "restored" else aligned
                crops_out.append(kept.permute(0, 2, 3, 1).to(images.device))
        crops = torch.cat(crops_out) if crops_out else torch.zeros((0, self.size, self.size, 3), device=images.device)
        info = _summary(counts, [len(f[0]) for f in found])
        log.info(info)
        return RestoreResult(out_images, out_masks, crops, faces, counts, info)

    def restore_aligned(self, images: torch.Tensor, *, strength: float = 1.0, chunk_size: int | None = None,
                        progress: ProgressFn | None = None, check_interrupt: Callable[[], None] | None = None
                        ) -> RestoreResult:
        """Restore frames that already are aligned face crops (B, H, W, C), e.g. from a detailer.

        Each frame is resized to the network size (antialiased bilinear), restored, resized back
        and mixed with the input by ``strength``. At strength 1 with S x S frames the result is
        exactly the network output mapped to 0..1.
        """
        _check_images(images)
        if not 0.0 <= float(strength) <= 1.0:
            raise InvalidInputError(f"strength must be within 0..1, got {strength}.")
        b, h, w, c = images.shape
        dev = self._work_device(images)
        x = _rgb(images).to(dev).permute(0, 3, 1, 2).float().clamp(0, 1)
        if (h, w) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=max(h, w) > self.size)
        restored = self.run_network(x, chunk_size, progress, check_interrupt)
        back = restored
        if (h, w) != (self.size, self.size):
            back = F.interpolate(restored, size=(h, w), mode="bilinear", align_corners=False,
                                 antialias=self.size > max(h, w)).clamp(0, 1)
        back = back.permute(0, 2, 3, 1)
        src = images.to(dev).float()
        rgb = src[..., :3] if c >= 3 else src.expand(-1, -1, -1, 3)
        mixed = back if strength == 1.0 else rgb + float(strength) * (back - rgb)
        if c == 1:
            mixed = _luma(mixed)
        elif c == 4:
            mixed = torch.cat([mixed, src[..., 3:]], dim=-1)
        out = mixed.to(images.dtype).to(images.device)
        masks = torch.ones((b, h, w), dtype=torch.float32, device=images.device)
        crops = restored.permute(0, 2, 3, 1).to(images.device)
        return RestoreResult(out, masks, crops, [], [1] * b, f"{b} aligned face crop(s) restored")


def face_memory_bytes(size: int, dtype: torch.dtype | None = None) -> int:
    """Working memory of one face through the network (peak minus weights), fitted to measurements
    of float32 peak memory at 512 px (460 MiB per extra face) and 2048 px (1.9 GiB per extra face);
    half for 16-bit dtypes."""
    per_face = 366 * size * size + 364 * 2 ** 20
    return per_face // 2 if dtype in (torch.float16, torch.bfloat16) else per_face


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) RGB -> (..., 1) BT.601 luma, for grey images in, grey images out."""
    return (rgb * torch.tensor([0.299, 0.587, 0.114], device=rgb.device, dtype=rgb.dtype)).sum(-1, keepdim=True)


def _rgb(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) RGB view of grey (C=1), RGB or RGBA images."""
    c = images.shape[-1]
    if c == 1:
        return images.expand(-1, -1, -1, 3)
    return images[..., :3]


def _summary(restored: list[int], detected: list[int]) -> str:
    b = len(restored)
    total = sum(restored)
    if total == 0:
        return f"no faces found in {b} image(s); images returned unchanged" if sum(detected) == 0 else \
            f"{sum(detected)} face(s) found but none selected in {b} image(s); images returned unchanged"
    if b == 1:
        return f"{total} face(s) restored" + (f" of {detected[0]} found" if detected[0] != total else "")
    per = ",".join(str(r) for r in restored[:64]) + ("..." if b > 64 else "")
    return f"{total} face(s) restored in {b} images; per image: {per}"


def default_frames_per_chunk(height: int, width: int) -> int:
    """Frames moved to the work device at once: about 32 MPixel (15 frames of 1080p), which bounds
    the working memory of long video batches to a few copies of that chunk."""
    return int(max(1, min(64, math.floor(32e6 / max(1, height * width)))))
