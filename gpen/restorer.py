"""Whole-image face restoration: find faces, select, align, restore in batches, paste back.

The data path reads in one direction, one step per method of :class:`FaceRestorer`:
image batch -> faces (:meth:`~FaceRestorer.find_faces`: detector or given landmarks) -> for video
batches their tracks (:meth:`~FaceRestorer.link_tracks`) -> the faces to restore
(:func:`gpen.faces.selection.select_faces` / ``select_tracks``) -> their alignment
(:meth:`~FaceRestorer.align_faces`) -> with a reference picture, only the faces that differ from it
(:meth:`~FaceRestorer.reference_differences`) -> aligned crops (:meth:`~FaceRestorer.crop_faces`)
-> restored crops (:meth:`~FaceRestorer.run_network`, many faces per call) -> blend masks
(:meth:`~FaceRestorer.face_masks`: feathered square, face-parsing regions, occlusion) -> pasted
images (:meth:`~FaceRestorer.paste_faces`, optionally onto a background ``upscale`` times larger).
Images are RGB float 0..1 in ComfyUI's layout (B, H, W, C); crops are (N, 3, S, S). Frames are
processed in chunks so that long video batches run in bounded memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidInputError
from .faces.align import estimate_similarity, invert_affine, template_points, warp_affine
from .faces.color import match_color
from .faces.detect import detect_in_chunks
from .faces.networks import HelperNetworks
from .faces.occlusion import parse_occluders
from .faces.parsing import parse_regions
from .faces.paste import feather_mask, paste_back, scale_inverse
from .faces.reference import REFERENCE_THRESHOLD, reference_differences
from .faces.selection import Found, check_landmarks, empty_faces, faces_from_landmarks, select_faces, select_tracks
from .faces.temporal import smooth_landmarks
from .faces.tracking import Tracks, link_tracks
from .frames import Upscaler, check_images, check_scale, luma, resize_masks, rgb_view, upscale_images
from .memory import default_chunk_size, default_frames_per_chunk
from .options import check_options, check_restore_range, prepare_mask
from .runtime import is_out_of_memory
from .options import check_strength as _check_strength
from .results import Face, RestoreResult
from .summary import restore_summary

log = logging.getLogger(__name__)

_DETECT_MIN_SIDE = 16  # images smaller than this have no detectable face
DETECT_FRAMES = 8  # frames per detector call: the unit of detection progress, interrupts and OOM back-off


Restorer = Callable[[torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], None]
PlaceFn = Callable[[str, object, torch.Tensor], None]
"""``place(role, network, inputs)``: called right before ``network`` runs on ``inputs``; ``role`` is
"restorer" (the GPEN network or crop restorer), "detector" (a ``FaceDetector``), "parser" (a
``FaceParser``) or "occluder" (a ``FaceOccluder``). A host uses it to load the network where its
memory manager wants it (see :class:`gpen.faces.networks.HelperNetworks`)."""


def _check_reference(reference: torch.Tensor | None, b: int, h: int, w: int) -> None:
    if reference is None:
        return
    check_images(reference, "reference")
    if reference.shape[0] not in (1, b) or reference.shape[1:3] != (h, w):
        raise InvalidInputError(f"reference must be the picture before the face swap, (1 or {b}, {h}, {w}, C) like "
                                f"the images, got {tuple(reference.shape)}.")


class FaceRestorer(HelperNetworks):
    """Restore every selected face of image batches with a GPEN network (or any crop restorer).

    ``restorer``: a network from :func:`gpen.load_model` or any callable that maps normalised
    aligned crops (N, 3, S, S) in -1..1 to restored crops of the same shape. ``size``: the crop
    size S (taken from ``restorer.size`` when it has one; required for a plain callable).
    ``device``: where crops are warped, restored and pasted (default: the network's device, else
    the images' device).
    ``detector``: a :class:`gpen.faces.detect.FaceDetector` (or anything with its ``detect``); by
    default one is created on first use from the ``detector`` name given to :meth:`restore`.
    ``parser``: likewise a :class:`gpen.faces.parsing.FaceParser` for ``parsing=True`` (anything with
    its ``masks(crops, regions=...)``); ``occluder``: a :class:`gpen.faces.occlusion.FaceOccluder`
    (anything with its ``masks(crops)``), used for every ``occlusion`` choice.
    ``place``: see :data:`PlaceFn`; by default the detector and parser are moved to the work device
    and the restorer is left where it is. ``is_oom``: which exceptions are out-of-memory errors that
    halve the work per call (default :func:`gpen.runtime.is_out_of_memory`; a host passes its own,
    e.g. ComfyUI's ``model_management.is_oom``).
    """

    def __init__(self, restorer: Restorer, size: int | None = None, device: torch.device | str | None = None,
                 detector=None, parser=None, occluder=None, place: PlaceFn | None = None,
                 is_oom: Callable[[BaseException], bool] | None = None) -> None:
        self.restorer = restorer
        size = size if size is not None else getattr(restorer, "size", None)
        if not isinstance(size, int) or size < 8:
            raise InvalidInputError("FaceRestorer needs the crop size: pass size=... for a restorer without .size")
        self.size = size
        if device is None:
            device = getattr(restorer, "device", None)
        self.device = torch.device(device) if device is not None else None
        HelperNetworks.__init__(self, detector, parser, occluder, place=place)
        self.is_oom = is_oom or is_out_of_memory

    def _work_device(self, images: torch.Tensor) -> torch.device:
        return self.device if self.device is not None else images.device

    # ---- the data path, step by step ----------------------------------------------------------

    def find_faces(self, images: torch.Tensor, landmarks=None, *, detector: str = "retinaface_resnet50",
                   detection_threshold: float = 0.5, detector_dirs=(), allow_download: bool = True,
                   frames_per_chunk: int = DETECT_FRAMES, progress: ProgressFn | None = None,
                   check_interrupt: Callable[[], None] | None = None) -> list[Found]:
        """Per image (boxes (K,4), scores (K,), landmarks (K,5,2)) from the detector or ``landmarks``.

        The detector sees ``frames_per_chunk`` frames per call, with progress, interrupt checks and
        out-of-memory back-off between calls (:func:`gpen.faces.detect.detect_in_chunks`).
        """
        b, h, w = images.shape[:3]
        if landmarks is not None:
            return faces_from_landmarks(landmarks, b, self.size)
        if min(h, w) < _DETECT_MIN_SIDE:
            return [empty_faces()] * b
        dev = self._work_device(images)
        det = self.detector(detector, dev, detector_dirs, allow_download)
        self.ready("detector", det, images[:frames_per_chunk])
        detections = detect_in_chunks(det, rgb_view(images), threshold=detection_threshold, device=dev,
                                      frames_per_chunk=frames_per_chunk, progress=progress,
                                      check_interrupt=check_interrupt, is_oom=self.is_oom)
        return [(d.boxes, d.scores, d.landmarks) for d in detections]

    @staticmethod
    def select_faces(found: Sequence[Found], *, selection="all", sort: str = "left-to-right",
                     min_face_size: float = 0, mask: torch.Tensor | None = None) -> list[np.ndarray]:
        """Indices of the faces to restore per image (see :func:`gpen.faces.selection.select_faces`)."""
        return select_faces(found, selection=selection, sort=sort, min_face_size=min_face_size, mask=mask)

    @staticmethod
    def link_tracks(found: Sequence[Found], *, max_gap: int = 3, min_track: int = 2) -> Tracks:
        """Face tracks over a frame batch (see :func:`gpen.faces.tracking.link_tracks`): short tracks
        dropped, gaps of up to ``max_gap`` frames filled with interpolated faces."""
        return link_tracks(found, max_gap=max_gap, min_track=min_track)

    def align_faces(self, found: Sequence[Found], chosen: Sequence[np.ndarray], template: str = "gpen",
                    tracks: Sequence[np.ndarray] | None = None, interpolated: Sequence[np.ndarray] | None = None
                    ) -> list[Face]:
        """One :class:`Face` (with its image -> crop similarity to ``template``) per chosen face, in order.

        ``tracks``: per image the track number of each chosen face (parallel to ``chosen``);
        ``interpolated``: per image a flag for every face of ``found``.
        """
        tmpl = template_points(template, self.size)
        faces: list[Face] = []
        for i, keep in enumerate(chosen):
            if not len(keep):
                continue
            boxes, scores, lms = found[i]
            affine = estimate_similarity(lms[keep], tmpl)
            for j, k in enumerate(keep):
                track = None if tracks is None else int(tracks[i][j])
                filled = False if interpolated is None else bool(interpolated[i][k])
                faces.append(Face(i, boxes[k].copy(), lms[k].copy(), float(scores[k]), affine[j].astype(np.float32),
                                  track, filled))
        return faces

    def reference_differences(self, images: torch.Tensor, reference: torch.Tensor, faces: Sequence[Face],
                              frames_per_chunk: int = 8) -> np.ndarray:
        """Per face, how much it differs from the same face in ``reference`` (B or 1, H, W, C).

        The mean absolute difference of RGB values (0..1 scale) over the face region of both
        pictures aligned alike (:func:`gpen.faces.reference.reference_differences`); 0 for an
        untouched face; compare with :data:`gpen.faces.reference.REFERENCE_THRESHOLD`.
        """
        if reference.shape[0] == 1 and images.shape[0] > 1:
            reference = reference.expand(images.shape[0], -1, -1, -1)
        return reference_differences(rgb_view(images), rgb_view(reference), np.stack([f.landmarks for f in faces]) if faces
                                     else np.zeros((0, 5, 2)), np.array([f.image_index for f in faces], dtype=np.int64),
                                     self._work_device(images), frames_per_chunk)

    def crop_faces(self, frames: torch.Tensor, faces: Sequence[Face], first_frame: int = 0) -> torch.Tensor:
        """Aligned crops (N, 3, S, S) 0..1 of ``faces`` from ``frames`` (F, H, W, C), the frames of
        the batch starting at ``first_frame``."""
        dev = frames.device
        idx = torch.tensor([f.image_index - first_frame for f in faces], device=dev)
        fwd = torch.from_numpy(np.stack([f.affine for f in faces])).to(dev)
        return warp_affine(rgb_view(frames).permute(0, 3, 1, 2), fwd, idx, self.size).float().clamp(0, 1)

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
                self.ready("restorer", self.restorer, part)
                with torch.inference_mode():
                    restored = self.restorer(part * 2 - 1)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried, the rest re-raised
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

    def face_masks(self, restored: torch.Tensor, parsing: bool, detector_dirs=(), allow_download: bool = True, *,
                   aligned: torch.Tensor | None = None, regions=None, occlusion: Sequence[str] = ()
                   ) -> torch.Tensor | None:
        """Per-crop blend masks (N, S, S), or None for the standard feathered mask.

        ``parsing``: the face parser's mask of ``regions`` (None: the default face parts) on the
        restored crops replaces the feathered mask. ``occlusion``: XSeg model names; their mask of
        the aligned input crops ``aligned`` (what covers the face there) bounds the mask:
        ``min(parsing or feathered mask, occlusion mask)``.
        """
        masks = None
        if parsing:
            parser = self.ready("parser", self.parser(restored.device, detector_dirs, allow_download), restored)
            masks = parser.masks(restored) if regions is None else parser.masks(restored, regions=regions)
        if occlusion:
            if aligned is None:
                raise InvalidInputError("occlusion masks are computed on the aligned input crops: pass aligned=.")
            occluder = self.occluder(occlusion, restored.device, detector_dirs, allow_download)
            occ = self.ready("occluder", occluder, aligned).masks(aligned)
            base = masks if masks is not None else feather_mask(self.size, restored.device)[None]
            masks = torch.minimum(base, occ.to(restored.device, torch.float32))
        return masks

    def paste_faces(self, frames: torch.Tensor, faces: Sequence[Face], first_frame: int, restored: torch.Tensor,
                    aligned: torch.Tensor, face_masks: torch.Tensor | None, strength: float,
                    user_mask: torch.Tensor | None, scale: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Blend ``restored`` crops into ``frames`` (F, H, W, C); returns (pasted frames, blend masks (F, H, W)).

        ``aligned`` are the input crops (mixed in by ``strength``); ``user_mask`` (F or 1, H, W)
        bounds the blend: 0 keeps the original pixel exactly, soft values mix. ``scale``: ``frames``
        are the background ``scale`` times larger than the images the faces were aligned in.
        """
        dev = frames.device
        c = frames.shape[-1]
        idx = torch.tensor([f.image_index - first_frame for f in faces], device=dev)
        inverse = invert_affine(np.stack([f.affine for f in faces]).astype(np.float64))
        inverse = torch.from_numpy(scale_inverse(inverse, scale)).float()
        pasted, blend = paste_back(rgb_view(frames) if c == 1 else frames, restored, aligned if strength < 1 else None,
                                   inverse.to(dev), idx, face_masks, float(strength))
        if c == 1:
            # grey in, grey out: the luma of the restored RGB where something was blended
            pasted = torch.where(blend[..., None] > 0, luma(pasted), frames)
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
                temporal_smoothing: float = 0.0, reference: torch.Tensor | None = None,
                reference_threshold: float = REFERENCE_THRESHOLD, track_faces: bool | None = None, max_gap: int = 3,
                min_track: int = 2, chunk_size: int | None = None, frames_per_chunk: int | None = None,
                detector_dirs=(), allow_download: bool = True, keep_crops: str = "restored",
                restore_range: tuple[int, int] | None = None, progress: ProgressFn | None = None,
                check_interrupt: Callable[[], None] | None = None, regions=None, occlusion=None, upscale: int = 1,
                upscaler: Upscaler | None = None) -> RestoreResult:
        """Restore the faces of ``images`` (B, H, W, C) float 0..1 (C = 3 RGB, 4 RGBA, 1 grey).

        Faces come from ``landmarks`` (per image an array (K, 5, 2): left eye, right eye, nose tip,
        left and right mouth corner, in pixels) or from the ``detector`` (score >= threshold). They
        are filtered (``min_face_size`` pixels; face centre inside ``mask`` (B or 1, H, W) > 0.5, a
        mask of another size being resized; the mask also bounds the blend), ordered (``sort``),
        picked (``face_selection``: "all", "largest" or indices "0,2" in that order), aligned to
        ``template`` ("gpen" or "ffhq"), restored in chunks of ``chunk_size`` faces, optionally
        colour-matched, and pasted back with the feathered (or face-parsing) mask, mixed with the
        source face by ``strength`` 0..1. ``keep_crops``: "restored", "aligned" or "none".

        ``track_faces`` (None: for batches of 3+ frames) links faces into tracks
        (:func:`gpen.faces.tracking.link_tracks`); indices and "largest" then pick tracks, numbered
        in ``sort`` order on the frame where each first appears (:func:`select_tracks`), faces
        missing from up to ``max_gap`` frames are restored at interpolated landmarks, and (3+
        frames) tracks found in fewer than ``min_track`` frames are dropped. ``temporal_smoothing``
        0..1 smooths landmarks along tracks. ``reference`` (B or 1, H, W, C), the picture before a
        face swap: only faces differing from it by more than ``reference_threshold``
        (:meth:`reference_differences`) are restored. ``progress(done, total)``: detection is the
        first half of the total, restoration the second (given landmarks: faces only).
        ``restore_range`` (start, stop): restore only frames start .. stop - 1; the others are
        context (they inform temporal smoothing and face tracks) and come back unchanged.

        ``regions`` (with ``parsing``): the parsing regions taken from the restored face, a list or
        comma string of :data:`gpen.faces.parsing.REGIONS` (None: the default face parts); the
        others come back from the original. ``occlusion``: XSeg occluder(s) ("xseg_1", "xseg_2",
        "xseg_3", "all", a list or ``.onnx`` paths; None/"none": off): what covers a face in the
        input stays. ``upscale`` 1..4: the output is that many times larger; the background is
        resized (antialiased bicubic) or made by ``upscaler`` (frames (F, H, W, 3) -> larger frames,
        resized to exactly ``upscale`` x), and each face, warped from the original image, is pasted
        at the output resolution (the bit-identity below then holds against the larger background).

        Options are checked before detection starts. The input is never modified; pixels outside
        every face mask come back bit-identical; an empty batch or one without faces passes through.
        """
        check_images(images)
        check_options(template=template, strength=strength, keep_crops=keep_crops, face_selection=face_selection,
                      sort=sort, detection_threshold=detection_threshold, min_face_size=min_face_size,
                      temporal_smoothing=temporal_smoothing, reference_threshold=reference_threshold,
                      track_faces=track_faces, max_gap=max_gap, min_track=min_track)
        b, h, w, c = images.shape
        mask = prepare_mask(mask, b, h, w)
        first, stop = check_restore_range(restore_range, b)
        _check_reference(reference, b, h, w)
        if landmarks is not None:
            check_landmarks(landmarks, b)
        upscale = check_scale(upscale)
        if regions is not None and not parsing:
            raise InvalidInputError("regions choose face-parsing classes: turn face parsing on (parsing=True, "
                                    "--parsing) or leave regions at the default.")
        regions = None if regions is None else parse_regions(regions)
        occlusion = parse_occluders(occlusion)
        if b == 0:
            return RestoreResult(images.new_zeros((0, h * upscale, w * upscale, c)),
                                 torch.zeros((0, h * upscale, w * upscale), device=images.device),
                                 torch.zeros((0, self.size, self.size, 3), device=images.device), [], [],
                                 "empty image batch; nothing to restore", upscale)
        frames_per_chunk = frames_per_chunk or default_frames_per_chunk(h * upscale, w * upscale)
        # one bar for both phases when the detector runs: detection first half, restoration second
        halves = progress is not None and landmarks is None and min(h, w) >= _DETECT_MIN_SIDE
        found = self.find_faces(images, landmarks, detector=detector, detection_threshold=detection_threshold,
                                detector_dirs=detector_dirs, allow_download=allow_download,
                                frames_per_chunk=min(frames_per_chunk, DETECT_FRAMES),
                                progress=(lambda d, t: progress(d, 2 * t)) if halves else None,
                                check_interrupt=check_interrupt)
        detected = [len(f[0]) for f in found]
        tracks = None
        if track_faces or (track_faces is None and b >= 3):
            tracks = self.link_tracks(found, max_gap=int(max_gap), min_track=int(min_track) if b >= 3 else 1)
            found = tracks.found
        if temporal_smoothing > 0 and b > 2:
            smoothed = smooth_landmarks([f[2] for f in found], [f[0] for f in found],
                                        strength=float(temporal_smoothing), max_gap=int(max_gap),
                                        tracks=None if tracks is None else tracks.ids)
            found = [(bx, sc, lm.astype(np.float32)) for (bx, sc, _), lm in zip(found, smoothed)]
        if tracks is None:
            chosen = select_faces(found, selection=face_selection, sort=sort, min_face_size=min_face_size, mask=mask)
            faces = self.align_faces(found, chosen, template)
        else:
            chosen, numbers = select_tracks(found, tracks.ids, selection=face_selection, sort=sort,
                                            min_face_size=min_face_size, mask=mask)
            faces = self.align_faces(found, chosen, template, numbers, tracks.interpolated)
        faces = [f for f in faces if first <= f.image_index < stop]  # context frames are not restored
        unchanged = 0
        if reference is not None and faces:
            changed = self.reference_differences(images, reference, faces, frames_per_chunk) > reference_threshold
            unchanged = int((~changed).sum())
            faces = [f for f, c in zip(faces, changed) if c]

        out_images, out_masks, crops = self._restore_frames(
            images, faces, frames_per_chunk, strength=float(strength), mask=mask, parsing=parsing,
            color_correction=color_correction, chunk_size=chunk_size, detector_dirs=detector_dirs,
            allow_download=allow_download, keep_crops=keep_crops, check_interrupt=check_interrupt,
            progress=(lambda d, t: progress(t + d, 2 * t)) if halves else progress,
            regions=regions, occlusion=occlusion, upscale=upscale, upscaler=upscaler)
        if halves and not faces:
            progress(1, 1)
        counts = np.bincount(np.array([f.image_index for f in faces], dtype=np.int64), minlength=b).tolist()
        info = restore_summary(counts, detected, faces, tracks, unchanged) + (
            f"; output x{upscale}" if upscale > 1 else "")
        log.info(info)
        return RestoreResult(out_images, out_masks, crops, faces, counts, info, upscale)

    def _restore_frames(self, images: torch.Tensor, faces: list[Face], frames_per_chunk: int, *, strength: float,
                        mask: torch.Tensor | None, parsing: bool, color_correction: bool, chunk_size: int | None,
                        detector_dirs, allow_download: bool, keep_crops: str, progress: ProgressFn | None,
                        check_interrupt: Callable[[], None] | None, regions=None, occlusion: Sequence[str] = (),
                        upscale: int = 1, upscaler: Upscaler | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crop, restore and paste ``faces`` chunk by chunk of frames; (images, masks, crops) as in RestoreResult.

        Faces are cropped from the original frames; with ``upscale``/``upscaler`` each chunk's
        background is made larger first and the faces are pasted onto it at that resolution."""
        b, h, w, c = images.shape
        resized = upscale != 1 or upscaler is not None
        oh, ow = h * upscale, w * upscale
        out_images = torch.empty((b, oh, ow, c), dtype=images.dtype, device=images.device) if resized \
            else images.clone()
        out_masks = torch.zeros((b, oh, ow), dtype=torch.float32, device=images.device)
        kept = []
        dev = self._work_device(images)
        done = face_i = 0
        for start in range(0, b, frames_per_chunk):
            stop = min(b, start + frames_per_chunk)
            sel = [f for f in faces[face_i:] if f.image_index < stop]
            face_i += len(sel)
            if not sel:
                if resized:
                    out_images[start:stop] = upscale_images(images[start:stop].to(dev), upscale, upscaler).to(
                        images.device)
                continue
            frames = images[start:stop].to(dev)
            aligned = self.crop_faces(frames, sel, start)
            restored = self.run_network(aligned, chunk_size, progress, check_interrupt, done, len(faces))
            done += len(sel)
            face_masks = self.face_masks(restored, parsing, detector_dirs, allow_download, aligned=aligned,
                                         regions=regions, occlusion=occlusion)
            if color_correction:
                weight = face_masks if face_masks is not None else \
                    feather_mask(self.size, dev)[None].expand(len(sel), -1, -1)
                restored = match_color(restored, aligned, weight)
            user_mask = None if mask is None else (mask if mask.shape[0] == 1 else mask[start:stop])
            if resized:  # the background at the output size; the faces keep their full-resolution crops
                frames = upscale_images(frames, upscale, upscaler)
                user_mask = None if user_mask is None else resize_masks(user_mask.to(dev), (oh, ow))
            pasted, blend = self.paste_faces(frames, sel, start, restored, aligned, face_masks, strength, user_mask,
                                             scale=upscale)
            out_images[start:stop] = pasted.to(images.device)
            out_masks[start:stop] = blend.to(images.device)
            if keep_crops != "none":
                kept.append((restored if keep_crops == "restored" else aligned).permute(0, 2, 3, 1).to(images.device))
        crops = torch.cat(kept) if kept else torch.zeros((0, self.size, self.size, 3), device=images.device)
        return out_images, out_masks, crops

    def restore_aligned(self, images: torch.Tensor, *, strength: float = 1.0, chunk_size: int | None = None,
                        progress: ProgressFn | None = None, check_interrupt: Callable[[], None] | None = None,
                        upscale: int = 1) -> RestoreResult:
        """Restore frames that already are aligned face crops (B, H, W, C), e.g. from a detailer.

        Each frame is resized to the network size (antialiased bilinear), restored, resized to
        ``upscale`` times the frame size and mixed with the (resized) input by ``strength``. At
        strength 1 with S x S frames and ``upscale`` 1 the result is exactly the network output
        mapped to 0..1.
        """
        check_images(images)
        _check_strength(strength)
        upscale = check_scale(upscale)
        b, h0, w0, c = images.shape
        h, w = h0 * upscale, w0 * upscale
        dev = self._work_device(images)
        x = rgb_view(images).to(dev).permute(0, 3, 1, 2).float().clamp(0, 1)
        if (h0, w0) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=max(h0, w0) > self.size)
        restored = self.run_network(x, chunk_size, progress, check_interrupt)
        back = restored
        if (h, w) != (self.size, self.size):
            back = F.interpolate(restored, size=(h, w), mode="bilinear", align_corners=False,
                                 antialias=self.size > max(h, w)).clamp(0, 1)
        back = back.permute(0, 2, 3, 1)
        src = images.to(dev).float()
        if upscale > 1 and (strength < 1.0 or c == 4):
            src = upscale_images(src, upscale)
        rgb = src[..., :3] if c >= 3 else src.expand(-1, -1, -1, 3)
        mixed = back if strength == 1.0 else rgb + float(strength) * (back - rgb)
        if c == 1:
            mixed = luma(mixed)
        elif c == 4:
            mixed = torch.cat([mixed, src[..., 3:]], dim=-1)
        out = mixed.to(images.dtype).to(images.device)
        masks = torch.ones((b, h, w), dtype=torch.float32, device=images.device)
        crops = restored.permute(0, 2, 3, 1).to(images.device)
        return RestoreResult(out, masks, crops, [], [1] * b, f"{b} aligned face crop(s) restored", upscale)
