"""Whole-image face restoration: find faces, select, align, restore in batches, paste back.

The data path reads in one direction, one step per method of :class:`FaceRestorer`:
image batch -> faces (:meth:`~FaceRestorer.find_faces`: detector or given landmarks) -> the faces to
restore (:func:`gpen.faces.selection.select_faces`) -> their alignment (:meth:`~FaceRestorer.align_faces`)
-> aligned crops (:meth:`~FaceRestorer.crop_faces`) -> restored crops (:meth:`~FaceRestorer.run_network`,
many faces per call) -> pasted images (:meth:`~FaceRestorer.paste_faces`). Images are RGB float 0..1
in ComfyUI's layout (B, H, W, C); crops are (N, 3, S, S). Frames are processed in chunks so that
long video batches run in bounded memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidInputError
from .faces.align import TEMPLATES, estimate_similarity, invert_affine, template_points, warp_affine
from .faces.color import match_color
from .faces.paste import feather_mask, paste_back
from .faces.selection import Found, boxes_from_affine, check_sort, parse_selection, select_faces
from .faces.temporal import smooth_landmarks
from .memory import default_chunk_size, default_frames_per_chunk

log = logging.getLogger(__name__)

_DETECT_MIN_SIDE = 16  # images smaller than this have no detectable face
KEEP_CROPS = ("restored", "aligned", "none")


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


def _check_strength(strength: float) -> None:
    if not 0.0 <= float(strength) <= 1.0:
        raise InvalidInputError(f"strength must be within 0..1, got {strength}.")


def _check_mask(mask: torch.Tensor | None, b: int, h: int, w: int) -> None:
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.ndim != 3 or mask.shape[1:] != (h, w)
                             or mask.shape[0] not in (1, b)):
        raise InvalidInputError(f"mask must have shape ({b} or 1, {h}, {w}) to match the images, got "
                                f"{tuple(getattr(mask, 'shape', ()))}.")


def _no_faces(b: int) -> list[Found]:
    return [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))] * b


class FaceRestorer:
    """Restore every selected face of image batches with a GPEN network (or any crop restorer).

    ``restorer``: a network from :func:`gpen.load_model` or any callable that maps normalised
    aligned crops (N, 3, S, S) in -1..1 to restored crops of the same shape. ``size``: the crop
    size S (taken from ``restorer.size`` when it has one; required for a plain callable).
    ``device``: where crops are warped, restored and pasted (default: the network's device, else
    the images' device).
    ``detector``: a :class:`gpen.faces.detect.FaceDetector` (or anything with its ``detect``); by
    default one is created on first use from the ``detector`` name given to :meth:`restore`.
    ``parser``: likewise a :class:`gpen.faces.parsing.FaceParser` for ``parsing=True``.
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

    # ---- helper networks -----------------------------------------------------------------------

    def detector(self, name: str, device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The detector for ``name`` (created once, then reused)."""
        if self._detector is not None:
            return self._detector
        key = (name, tuple(str(d) for d in extra_dirs))
        if key not in self._detectors:
            from .faces.detect import FaceDetector

            self._detectors[key] = FaceDetector(name, device=self._build_device(device), extra_dirs=extra_dirs,
                                                allow_download=allow_download)
        return self._detectors[key]

    def parser(self, device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The face parser (created once, then reused)."""
        if self._parser is None:
            from .faces.parsing import FaceParser

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

    def _work_device(self, images: torch.Tensor) -> torch.device:
        return self.device if self.device is not None else images.device

    # ---- the data path, step by step ----------------------------------------------------------

    def find_faces(self, images: torch.Tensor, landmarks=None, *, detector: str = "retinaface_resnet50",
                   detection_threshold: float = 0.5, detector_dirs=(), allow_download: bool = True,
                   frames_per_chunk: int = 8) -> list[Found]:
        """Per image (boxes (K,4), scores (K,), landmarks (K,5,2)) from the detector or ``landmarks``."""
        b, h, w = images.shape[:3]
        if landmarks is not None:
            return [self._given_faces(i, lm) for i, lm in enumerate(self._check_landmarks(landmarks, b))]
        if min(h, w) < _DETECT_MIN_SIDE:
            return _no_faces(b)
        dev = self._work_device(images)
        det = self.detector(detector, dev, detector_dirs, allow_download)
        found = []
        for start in range(0, b, frames_per_chunk):
            chunk = _rgb(images[start:start + frames_per_chunk]).to(dev)
            for d in self._ready("detector", det, chunk, dev).detect(chunk, threshold=detection_threshold):
                found.append((d.boxes, d.scores, d.landmarks))
        return found

    @staticmethod
    def _check_landmarks(landmarks, b: int) -> list:
        if len(landmarks) != b:
            raise InvalidInputError(f"landmarks must list one array (K, 5, 2) per image: got {len(landmarks)} "
                                    f"for {b} images.")
        return list(landmarks)

    def _given_faces(self, i: int, lm) -> Found:
        """Boxes and scores for faces that come as landmarks (image ``i``): boxes from the alignment."""
        lm = np.zeros((0, 5, 2), np.float32) if lm is None else np.asarray(lm, dtype=np.float32)
        if lm.size == 0:
            lm = lm.reshape(0, 5, 2)
        if lm.ndim == 2 and lm.shape == (5, 2):
            lm = lm[None]
        if lm.ndim != 3 or lm.shape[1:] != (5, 2) or not np.isfinite(lm).all():
            raise InvalidInputError(f"landmarks of image {i} must be finite numbers of shape (K, 5, 2), "
                                    f"got {lm.shape}.")
        if not len(lm):
            return _no_faces(1)[0]
        affine = estimate_similarity(lm, template_points("gpen", self.size))
        return boxes_from_affine(affine, self.size), np.ones(len(lm), np.float32), lm

    @staticmethod
    def select_faces(found: Sequence[Found], *, selection="all", sort: str = "left-to-right",
                     min_face_size: float = 0, mask: torch.Tensor | None = None) -> list[np.ndarray]:
        """Indices of the faces to restore per image (see :func:`gpen.faces.selection.select_faces`)."""
        return select_faces(found, selection=selection, sort=sort, min_face_size=min_face_size, mask=mask)

    def align_faces(self, found: Sequence[Found], chosen: Sequence[np.ndarray], template: str = "gpen") -> list[Face]:
        """One :class:`Face` (with its image -> crop similarity to ``template``) per chosen face, in order."""
        tmpl = template_points(template, self.size)
        faces: list[Face] = []
        for i, keep in enumerate(chosen):
            if not len(keep):
                continue
            boxes, scores, lms = found[i]
            affine = estimate_similarity(lms[keep], tmpl)
            for j, k in enumerate(keep):
                faces.append(Face(i, boxes[k].copy(), lms[k].copy(), float(scores[k]), affine[j].astype(np.float32)))
        return faces

    def crop_faces(self, frames: torch.Tensor, faces: Sequence[Face], first_frame: int = 0) -> torch.Tensor:
        """Aligned crops (N, 3, S, S) 0..1 of ``faces`` from ``frames`` (F, H, W, C), the frames of
        the batch starting at ``first_frame``."""
        dev = frames.device
        idx = torch.tensor([f.image_index - first_frame for f in faces], device=dev)
        fwd = torch.from_numpy(np.stack([f.affine for f in faces])).to(dev)
        return warp_affine(_rgb(frames).permute(0, 3, 1, 2), fwd, idx, self.size).float().clamp(0, 1)

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
        """Faces per network call on ``device`` (see :func:`gpen.memory.default_chunk_size`)."""
        return default_chunk_size(device, self.size, getattr(self.restorer, "dtype", None))

    def face_masks(self, restored: torch.Tensor, parsing: bool, detector_dirs=(), allow_download: bool = True
                   ) -> torch.Tensor | None:
        """Per-crop blend masks (N, S, S) from the face parser, or None for the standard feathered mask."""
        if not parsing:
            return None
        parser = self.parser(restored.device, detector_dirs, allow_download)
        return self._ready("parser", parser, restored, restored.device).masks(restored)

    def paste_faces(self, frames: torch.Tensor, faces: Sequence[Face], first_frame: int, restored: torch.Tensor,
                    aligned: torch.Tensor, face_masks: torch.Tensor | None, strength: float,
                    user_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Blend ``restored`` crops into ``frames`` (F, H, W, C); returns (pasted frames, blend masks (F, H, W)).

        ``aligned`` are the input crops (mixed in by ``strength``); ``user_mask`` (F or 1, H, W)
        bounds the blend: 0 keeps the original pixel exactly, soft values mix.
        """
        dev = frames.device
        c = frames.shape[-1]
        idx = torch.tensor([f.image_index - first_frame for f in faces], device=dev)
        inverse = torch.from_numpy(invert_affine(np.stack([f.affine for f in faces]).astype(np.float64))).float()
        pasted, blend = paste_back(_rgb(frames) if c == 1 else frames, restored, aligned if strength < 1 else None,
                                   inverse.to(dev), idx, face_masks, float(strength))
        if c == 1:
            # grey in, grey out: the luma of the restored RGB where something was blended
            pasted = torch.where(blend[..., None] > 0, _luma(pasted), frames)
        if user_mask is not None:
            # the user's mask also bounds the blend: img + u * (pasted - img), exact where u == 0
            u = user_mask.to(dev, torch.float32).clamp(0, 1)
            src = frames.to(pasted.dtype)
            pasted = (src + u[..., None].to(pasted.dtype) * (pasted - src)).to(pasted.dtype)
            pasted = torch.where(u[..., None] > 0, pasted, src)
            blend = blend * u
        return pasted, blend

    # ---- the whole pipeline -------------------------------------------------------------------

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
        _check_strength(strength)
        if keep_crops not in KEEP_CROPS:
            raise InvalidInputError(f"keep_crops must be 'restored', 'aligned' or 'none', got {keep_crops!r}.")
        check_sort(sort)
        parse_selection(face_selection)
        b, h, w, _ = images.shape
        _check_mask(mask, b, h, w)
        frames_per_chunk = frames_per_chunk or default_frames_per_chunk(h, w)

        found = self.find_faces(images, landmarks, detector=detector, detection_threshold=detection_threshold,
                                detector_dirs=detector_dirs, allow_download=allow_download,
                                frames_per_chunk=frames_per_chunk)
        if temporal_smoothing > 0 and b > 2:
            smoothed = smooth_landmarks([f[2] for f in found], [f[0] for f in found], strength=float(temporal_smoothing))
            found = [(bx, sc, lm.astype(np.float32)) for (bx, sc, _), lm in zip(found, smoothed)]
        chosen = select_faces(found, selection=face_selection, sort=sort, min_face_size=min_face_size, mask=mask)
        faces = self.align_faces(found, chosen, template)

        out_images, out_masks, crops = self._restore_frames(
            images, faces, frames_per_chunk, strength=float(strength), mask=mask, parsing=parsing,
            color_correction=color_correction, chunk_size=chunk_size, detector_dirs=detector_dirs,
            allow_download=allow_download, keep_crops=keep_crops, progress=progress, check_interrupt=check_interrupt)
        counts = [int(len(k)) for k in chosen]
        info = _summary(counts, [len(f[0]) for f in found])
        log.info(info)
        return RestoreResult(out_images, out_masks, crops, faces, counts, info)

    def _restore_frames(self, images: torch.Tensor, faces: list[Face], frames_per_chunk: int, *, strength: float,
                        mask: torch.Tensor | None, parsing: bool, color_correction: bool, chunk_size: int | None,
                        detector_dirs, allow_download: bool, keep_crops: str, progress: ProgressFn | None,
                        check_interrupt: Callable[[], None] | None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crop, restore and paste ``faces`` chunk by chunk of frames; (images, masks, crops) as in RestoreResult."""
        b, h, w, _ = images.shape
        out_images = images.clone()
        out_masks = torch.zeros((b, h, w), dtype=torch.float32, device=images.device)
        kept = []
        dev = self._work_device(images)
        done = face_i = 0
        for start in range(0, b, frames_per_chunk):
            stop = min(b, start + frames_per_chunk)
            sel = [f for f in faces[face_i:] if f.image_index < stop]
            face_i += len(sel)
            if not sel:
                continue
            frames = images[start:stop].to(dev)
            aligned = self.crop_faces(frames, sel, start)
            restored = self.run_network(aligned, chunk_size, progress, check_interrupt, done, len(faces))
            done += len(sel)
            face_masks = self.face_masks(restored, parsing, detector_dirs, allow_download)
            if color_correction:
                weight = face_masks if face_masks is not None else \
                    feather_mask(self.size, dev)[None].expand(len(sel), -1, -1)
                restored = match_color(restored, aligned, weight)
            user_mask = None if mask is None else (mask if mask.shape[0] == 1 else mask[start:stop])
            pasted, blend = self.paste_faces(frames, sel, start, restored, aligned, face_masks, strength, user_mask)
            out_images[start:stop] = pasted.to(images.device)
            out_masks[start:stop] = blend.to(images.device)
            if keep_crops != "none":
                kept.append((restored if keep_crops == "restored" else aligned).permute(0, 2, 3, 1).to(images.device))
        crops = torch.cat(kept) if kept else torch.zeros((0, self.size, self.size, 3), device=images.device)
        return out_images, out_masks, crops

    def restore_aligned(self, images: torch.Tensor, *, strength: float = 1.0, chunk_size: int | None = None,
                        progress: ProgressFn | None = None, check_interrupt: Callable[[], None] | None = None
                        ) -> RestoreResult:
        """Restore frames that already are aligned face crops (B, H, W, C), e.g. from a detailer.

        Each frame is resized to the network size (antialiased bilinear), restored, resized back
        and mixed with the input by ``strength``. At strength 1 with S x S frames the result is
        exactly the network output mapped to 0..1.
        """
        _check_images(images)
        _check_strength(strength)
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
