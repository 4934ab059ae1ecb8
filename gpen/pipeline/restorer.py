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

from .. import compat
from .aligned import restore_aligned
from .batching import restore_in_chunks
from .consistency import RADIUS, TrackFilter, low_pass
from ..errors import InvalidInputError
from ..faces.align import (
    estimate_similarity,
    inside_image,
    invert_affine,
    template_points,
    warp_affine,
)
from ..faces.color import match_color
from ..faces.detect import detect_in_chunks
from ..faces.networks import HelperNetworks, NetworkCache
from ..faces.occlusion import parse_occluders
from ..faces.parsing import parse_regions
from ..faces.paste import feather_mask, paste_into, scale_inverse
from ..faces.reference import REFERENCE_THRESHOLD, reference_differences
from ..faces.selection import (
    Found,
    check_landmarks,
    warn_landmarks_outside,
    empty_faces,
    faces_from_landmarks,
    select_faces,
    select_tracks,
)
from ..faces.gaps import check_filled
from ..faces.shots import find_shots
from ..faces.temporal import smooth_landmarks
from ..faces.tracking import FALSE_DETECTION_SCORE, Tracks, link_tracks, track_faces as link_faces
from .frames import (
    Upscaler,
    check_images,
    check_scale,
    resize_masks,
    rgb_view,
    upscale_images,
)
from .memory import (
    DETECT_FRAMES,
    default_chunk_size,
    default_faces_per_chunk,
    default_frames_per_chunk,
    frame_steps,
)
from .options import check_options, check_reference, check_restore_range, prepare_mask
from .results import Face, RestoreResult
from .summary import restore_summary

log = logging.getLogger(__name__)

_DETECT_MIN_SIDE = 16  # images smaller than this have no detectable face


Restorer = Callable[[torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], None]
PlaceFn = Callable[[str, object, torch.Tensor], None]
"""``place(role, network, inputs)``: called right before ``network`` runs on ``inputs``; ``role`` is
"restorer" (the GPEN network or crop restorer), "detector" (a ``FaceDetector``), "parser" (a
``FaceParser``) or "occluder" (a ``FaceOccluder``). A host uses it to load the network where its
memory manager wants it (see :class:`gpen.faces.networks.HelperNetworks`)."""


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
    ``networks``: a :class:`gpen.faces.networks.NetworkCache` where the detectors, parsers and
    occluders built on first use are kept, to share them with other restorers (e.g. one per
    model); by default this restorer has its own. ``is_oom``: which exceptions are out-of-memory
    errors that halve the chunk (default :func:`gpen.compat.is_oom`; a host may pass its own).
    ``place``: see :data:`PlaceFn`; by default the detector and parser are moved to the work device
    and the restorer is left where it is.
    """

    def __init__(self, restorer: Restorer, size: int | None = None, device: torch.device | str | None = None,
                 detector=None, parser=None, occluder=None, networks: NetworkCache | None = None,
                 is_oom: Callable[[BaseException], bool] | None = None, place: PlaceFn | None = None) -> None:
        self.restorer = restorer
        size = size if size is not None else getattr(restorer, "size", None)
        if not isinstance(size, int) or size < 8:
            raise InvalidInputError("FaceRestorer needs the crop size: pass size=... for a restorer without .size")
        self.size = size
        if device is None:
            device = getattr(restorer, "device", None)
        self.device = torch.device(device) if device is not None else None
        HelperNetworks.__init__(self, detector, parser, occluder, networks, place=place)
        self.is_oom = is_oom or compat.is_oom

    def work_device(self, images: torch.Tensor) -> torch.device:
        """Where the networks run for ``images``: the restorer's ``device``, else the images' own."""
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
        dev = self.work_device(images)
        det = self.ready("detector", self.detector(detector, dev, detector_dirs, allow_download),
                         images[:frames_per_chunk])
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
    def link_tracks(found: Sequence[Found], *, max_gap: int = 3, min_track: int = 2,
                    shots: Sequence[tuple[int, int]] | None = None, min_score: float = FALSE_DETECTION_SCORE,
                    images: torch.Tensor | None = None) -> Tracks:
        """Face tracks over a frame batch inside each of ``shots`` (see :func:`gpen.faces.tracking.link_tracks`):
        short tracks of a low score dropped, gaps of up to ``max_gap`` frames filled with interpolated
        faces, kept only where ``images`` show the face there (:func:`gpen.faces.gaps.check_filled`)."""
        tracks = link_tracks(found, max_gap=max_gap, min_track=min_track, shots=shots, min_score=min_score)
        return tracks if images is None or not tracks.filled else check_filled(images, tracks)

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
                                     self.work_device(images), frames_per_chunk)

    def crop_faces(self, frames: torch.Tensor, faces: Sequence[Face], first_frame: int = 0) -> torch.Tensor:
        """Aligned crops (N, 3, S, S) 0..1 of ``faces`` from ``frames`` (F, H, W, C), the frames of
        the batch starting at ``first_frame``."""
        dev = frames.device
        idx = torch.tensor([f.image_index - first_frame for f in faces], device=dev)
        fwd = torch.from_numpy(np.stack([f.affine for f in faces])).to(dev)
        # warp_affine returns a new tensor: clamping it in place saves a second copy of every crop
        return warp_affine(rgb_view(frames).permute(0, 3, 1, 2), fwd, idx, self.size).float().clamp_(0, 1)

    def run_network(self, crops: torch.Tensor, chunk_size: int | None = None, progress: ProgressFn | None = None,
                    check_interrupt: Callable[[], None] | None = None, done: int = 0, total: int | None = None,
                    out: torch.Tensor | None = None) -> torch.Tensor:
        """Restore aligned crops (N, 3, S, S) 0..1 in chunks, halved on out-of-memory, NaN/inf chunks
        again in float32 (:func:`gpen.pipeline.batching.restore_in_chunks`); ``out`` may be ``crops``."""
        chunk = chunk_size or self.default_chunk_size(crops.device)
        self.ready("restorer", self.restorer, crops[:chunk])  # every frame step: the host may have evicted it since
        return restore_in_chunks(self.restorer, crops, chunk, is_oom=self.is_oom, progress=progress,
                                 check_interrupt=check_interrupt, done=done, total=total, out=out)

    def default_chunk_size(self, device: torch.device) -> int:
        """Faces per network call on ``device`` (see :func:`gpen.pipeline.memory.default_chunk_size`)."""
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

    def paste_faces(self, out: torch.Tensor, out_masks: torch.Tensor, frames: torch.Tensor, faces: Sequence[Face],
                    first_frame: int, restored: torch.Tensor, aligned: torch.Tensor, face_masks: torch.Tensor | None,
                    strength: float, user_mask: torch.Tensor | None, scale: int = 1) -> None:
        """Blend ``restored`` crops onto the background ``frames`` (F, H, W, C), in place into ``out`` and
        ``out_masks`` (those frames' slots of the output), inside each face's box (:func:`paste_into`).

        ``aligned``: the input crops (mixed in by ``strength``); ``user_mask`` (F or 1, H, W) bounds the
        blend (``out_masks`` stays unscaled by it); ``scale``: ``frames`` are that many times larger.
        """
        dev = frames.device
        idx = torch.tensor([f.image_index - first_frame for f in faces], device=dev)
        inverse = invert_affine(np.stack([f.affine for f in faces]).astype(np.float64))
        inverse = torch.from_numpy(scale_inverse(inverse, scale)).float()
        paste_into(out, out_masks, frames, restored, aligned if strength < 1 else None, inverse.to(dev), idx,
                   face_masks, float(strength), user_mask)

    # ---- the whole pipeline -------------------------------------------------------------------

    def restore(self, images: torch.Tensor, landmarks=None, *, strength: float = 1.0, template: str = "gpen",
                detector: str = "retinaface_resnet50", detection_threshold: float = 0.5,
                face_selection: str | Sequence[int] = "all", sort: str = "left-to-right", min_face_size: float = 0,
                mask: torch.Tensor | None = None, parsing: bool = False, color_correction: bool = False,
                temporal_smoothing: float = 0.0, reference: torch.Tensor | None = None,
                reference_threshold: float = REFERENCE_THRESHOLD, track_faces: bool | None = None, max_gap: int = 3,
                min_track: int = 2, chunk_size: int | None = None, frames_per_chunk: int | None = None,
                detector_dirs=(), allow_download: bool = True, keep_crops: str = "restored", range_only: bool = False,
                restore_range: tuple[int, int] | None = None, progress: ProgressFn | None = None,
                check_interrupt: Callable[[], None] | None = None, regions=None, occlusion=None, upscale: int = 1,
                upscaler: Upscaler | None = None, temporal_consistency: float = 0.0) -> RestoreResult:
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
        ``restore_range`` (start, stop): restore only frames start .. stop - 1; the others are context (for
        smoothing and tracks) and come back unchanged, or with ``range_only`` are left out of the result.

        ``regions`` (with ``parsing``): the parsing regions taken from the restored face, a list or
        comma string of :data:`gpen.faces.parsing.REGIONS` (None: the default face parts); the
        others come back from the original. ``occlusion``: XSeg occluder(s) ("xseg_1", "xseg_2",
        "xseg_3", "all", a list or ``.onnx`` paths; None/"none": off): what covers a face in the
        input stays. ``upscale`` 1..4: the output is that many times larger; the background is
        resized (antialiased bicubic) or made by ``upscaler`` (frames (F, H, W, 3) -> larger frames,
        resized to exactly ``upscale`` x), and each face, warped from the original image, is pasted
        at the output resolution (the bit-identity below then holds against the larger background).

        ``temporal_consistency`` 0..1 (tracked video batches): each restored crop is blended with
        the restored crops of its track in the frames around it where the aligned input did not
        change (:mod:`gpen.pipeline.consistency`), so texture holds still where the face does; 0
        (default) is off. With a ``restore_range``, the faces of up to
        :data:`~gpen.pipeline.consistency.RADIUS` context frames each side are restored too (not
        pasted), so that segments give what one run gives.

        Options are checked before detection starts. The input is never modified; pixels outside
        every face mask come back bit-identical; an empty batch or one without faces passes through.
        """
        check_images(images)
        check_options(template=template, strength=strength, keep_crops=keep_crops, face_selection=face_selection,
                      sort=sort, detection_threshold=detection_threshold, min_face_size=min_face_size,
                      temporal_smoothing=temporal_smoothing, reference_threshold=reference_threshold,
                      track_faces=track_faces, max_gap=max_gap, min_track=min_track, chunk_size=chunk_size,
                      temporal_consistency=temporal_consistency)
        b, h, w, c = images.shape
        mask = prepare_mask(mask, b, h, w)
        first, stop = check_restore_range(restore_range, b)
        check_reference(reference, b, h, w)
        if landmarks is not None:
            warn_landmarks_outside(check_landmarks(landmarks, b), h, w)
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
        self.prepare_masks(self.work_device(images), parsing, occlusion, detector_dirs, allow_download)
        frames_per_chunk = frames_per_chunk or default_frames_per_chunk(h * upscale, w * upscale)
        # one bar for both phases when the detector runs: detection first half, restoration second
        halves = progress is not None and landmarks is None and min(h, w) >= _DETECT_MIN_SIDE
        found = self.find_faces(images, landmarks, detector=detector, detection_threshold=detection_threshold,
                                detector_dirs=detector_dirs, allow_download=allow_download,
                                frames_per_chunk=min(frames_per_chunk, DETECT_FRAMES),
                                progress=(lambda d, t: progress(d, 2 * t)) if halves else None,
                                check_interrupt=check_interrupt)
        detected = [len(f[0]) for f in found]
        shots = find_shots(images)
        tracks = None
        if track_faces or (track_faces is None and b >= 3):
            # faces the user gave are never dropped; a filled face is kept only where the frame shows it
            tracks = self.link_tracks(found, max_gap=int(max_gap), min_track=int(min_track), shots=shots,
                                      min_score=0.0 if landmarks is not None else FALSE_DETECTION_SCORE,
                                      images=images)
            found = tracks.found
        if temporal_smoothing > 0 and b > 2:
            ids = tracks.ids if tracks is not None else link_faces(
                [f[0] for f in found], max_gap=int(max_gap), landmarks=[f[2] for f in found], shots=shots)
            smoothed = smooth_landmarks([f[2] for f in found], [f[0] for f in found],
                                        strength=float(temporal_smoothing), max_gap=int(max_gap), tracks=ids)
            found = [(bx, sc, lm.astype(np.float32)) for (bx, sc, _), lm in zip(found, smoothed)]
        if tracks is None:
            chosen = select_faces(found, selection=face_selection, sort=sort, min_face_size=min_face_size, mask=mask)
            faces = self.align_faces(found, chosen, template)
        else:
            chosen, numbers = select_tracks(found, tracks.ids, selection=face_selection, sort=sort,
                                            min_face_size=min_face_size, mask=mask)
            faces = self.align_faces(found, chosen, template, numbers, tracks.interpolated)
        consistency = float(temporal_consistency) if tracks is not None else 0.0
        reach = RADIUS if consistency > 0 else 0  # context frames whose faces the filter needs restored
        faces = [f for f in faces if first - reach <= f.image_index < stop + reach]  # others: context, kept as is
        unchanged = 0
        if reference is not None and faces:
            changed = self.reference_differences(images, reference, faces, frames_per_chunk) > reference_threshold
            unchanged = int(sum(not c for f, c in zip(faces, changed) if first <= f.image_index < stop))
            faces = [f for f, c in zip(faces, changed) if c]
        restored_faces = faces
        faces = [f for f in faces if first <= f.image_index < stop]

        out_images, out_masks, crops = self._restore_frames(
            images, restored_faces, frames_per_chunk, strength=float(strength), mask=mask, parsing=parsing,
            color_correction=color_correction, chunk_size=chunk_size, detector_dirs=detector_dirs,
            allow_download=allow_download, keep_crops=keep_crops, check_interrupt=check_interrupt,
            progress=(lambda d, t: progress(t + d, 2 * t)) if halves else progress,
            regions=regions, occlusion=occlusion, upscale=upscale, upscaler=upscaler,
            consistency=consistency, paste_range=(first, stop), shots=shots, range_only=range_only)
        if halves and not faces:
            progress(1, 1)
        counts = np.bincount(np.array([f.image_index for f in faces], dtype=np.int64), minlength=b).tolist()
        info = restore_summary(counts, detected, faces, tracks, unchanged, shots) + (
            f"; output x{upscale}" if upscale > 1 else "")
        log.info(info)
        return RestoreResult(out_images, out_masks, crops, faces, counts, info, upscale, shots)

    def _restore_frames(self, images: torch.Tensor, faces: list[Face], frames_per_chunk: int, *, strength: float,
                        mask: torch.Tensor | None, parsing: bool, color_correction: bool, chunk_size: int | None,
                        detector_dirs, allow_download: bool, keep_crops: str, progress: ProgressFn | None,
                        check_interrupt: Callable[[], None] | None, regions=None, occlusion: Sequence[str] = (),
                        upscale: int = 1, upscaler: Upscaler | None = None, consistency: float = 0.0,
                        paste_range: tuple[int, int] | None = None, shots=None, range_only: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crop, restore and paste ``faces`` step by step (:func:`gpen.pipeline.memory.frame_steps`: at most
        ``frames_per_chunk`` frames and ``default_faces_per_chunk`` faces); (images, masks, crops) as in
        RestoreResult. Faces are pasted straight into the output inside their boxes: without ``upscale``
        the only full-size tensors are the output images and masks; with it, one step's background.
        ``consistency`` > 0: the restored crops go through the track filter
        (:class:`gpen.pipeline.consistency.TrackFilter`) first, each face pasted once the faces
        ``RADIUS`` frames after it are restored, never across ``shots`` (frame ranges); only faces
        inside ``paste_range`` are pasted; with ``range_only`` the output holds only those frames.
        """
        b, h, w, c = images.shape
        first, stop_all = paste_range if paste_range is not None else (0, b)
        lo, hi = (first, stop_all) if range_only else (0, b)  # the frames the output holds
        resized = upscale != 1 or upscaler is not None
        oh, ow = h * upscale, w * upscale
        out_images = torch.empty((hi - lo, oh, ow, c), dtype=images.dtype, device=images.device) if resized \
            else images[lo:hi].clone()
        out_masks = torch.zeros((hi - lo, oh, ow), dtype=torch.float32, device=images.device)
        kept, dev = [], self.work_device(images)
        net_chunk = max(1, int(chunk_size or self.default_chunk_size(dev)))
        # the aligned crops are needed after the network for these; else the network restores them in place
        keep_aligned = strength < 1 or color_correction or keep_crops == "aligned" or bool(occlusion)
        done, written = 0, lo  # written: frames [lo, written) of the output hold their (resized) background

        def backgrounds(upto: int) -> None:
            nonlocal written
            for s0 in range(written, upto, frames_per_chunk):
                s1 = min(upto, s0 + frames_per_chunk)
                out_images[s0 - lo:s1 - lo] = upscale_images(images[s0:s1].to(dev), upscale, upscaler).to(images.device)
            written = max(written, upto)

        def finish(sel: Sequence[Face], start: int, stop: int, frames: torch.Tensor, aligned: torch.Tensor,
                   restored: torch.Tensor) -> None:
            """Masks, colour, paste and kept crops of the restored faces ``sel`` of frames start .. stop - 1."""
            nonlocal written
            face_masks = self.face_masks(restored, parsing, detector_dirs, allow_download, aligned=aligned,
                                         regions=regions, occlusion=occlusion)
            if color_correction:
                weight = face_masks if face_masks is not None else \
                    feather_mask(self.size, dev)[None].expand(len(sel), -1, -1)
                # statistics of pixels inside the image only: the zero padding beyond a border is no face
                inside = inside_image(np.stack([f.affine for f in sel]), (h, w), self.size).to(dev)
                restored = match_color(restored, aligned, weight * inside)
            user_mask = None if mask is None else (mask if mask.shape[0] == 1 else mask[start:stop])
            background = frames
            if resized:  # the background at the output size; the faces keep their full-resolution crops
                backgrounds(start)
                background = upscale_images(frames, upscale, upscaler)
                if written < stop:
                    out_images[written - lo:stop - lo] = background[written - start:].to(images.device)
                    written = stop
                user_mask = None if user_mask is None else resize_masks(user_mask.to(dev), (oh, ow))
            self.paste_faces(out_images[start - lo:stop - lo], out_masks[start - lo:stop - lo], background, sel,
                             start, restored, aligned, face_masks, strength, user_mask, scale=upscale)
            if keep_crops != "none":
                kept.append((restored if keep_crops == "restored" else aligned).permute(0, 2, 3, 1).to(images.device))

        track_filter = TrackFilter(consistency, shots) if consistency > 0 else None
        steps = frame_steps([f.image_index for f in faces], frames_per_chunk,
                            default_faces_per_chunk(self.size, net_chunk))
        for start, stop, i0, i1 in steps:
            sel = faces[i0:i1]
            frames = images[start:stop].to(dev)  # a view when the work device is the images' device
            aligned = self.crop_faces(frames, sel, start)
            low = low_pass(aligned) if track_filter is not None else None  # before the network may overwrite it
            restored = self.run_network(aligned, net_chunk, progress, check_interrupt, done, len(faces),
                                        out=None if keep_aligned else aligned)
            done += len(sel)
            if track_filter is None:
                finish(sel, start, stop, frames, aligned, restored)
            else:
                track_filter.add(sel, restored, low, aligned if keep_aligned else restored)
                # every face of frames before `complete` is restored; a face's neighbours reach RADIUS frames on
                complete = faces[i1].image_index if i1 < len(faces) else float("inf")
                ready = track_filter.take(complete - RADIUS, lambda f: first <= f.image_index < stop_all)
                if ready is not None:  # faces of context frames only served as neighbours
                    s0, s1 = ready[0][0].image_index, ready[0][-1].image_index + 1
                    finish(ready[0], s0, s1, images[s0:s1].to(dev), ready[1], ready[2])
            del frames, aligned, restored
        if resized:
            backgrounds(hi)
        if mask is not None:  # the user's mask also bounds the blend mask, frame by frame
            for i in sorted({f.image_index for f in faces if first <= f.image_index < stop_all}):
                m = mask[0 if mask.shape[0] == 1 else i].to(out_masks.device, torch.float32)
                out_masks[i - lo].mul_((resize_masks(m[None], (oh, ow))[0] if resized else m).clamp(0, 1))
        crops = torch.cat(kept) if kept else torch.zeros((0, self.size, self.size, 3), device=images.device)
        return out_images, out_masks, crops

    def restore_aligned(self, images: torch.Tensor, *, strength: float = 1.0, chunk_size: int | None = None,
                        progress: ProgressFn | None = None, check_interrupt: Callable[[], None] | None = None,
                        upscale: int = 1, keep_crops: str = "restored") -> RestoreResult:
        """Restore frames that already are aligned face crops: see :func:`gpen.pipeline.aligned.restore_aligned`."""
        return restore_aligned(self, images, strength=strength, chunk_size=chunk_size, progress=progress,
                               check_interrupt=check_interrupt, upscale=upscale, keep_crops=keep_crops)
