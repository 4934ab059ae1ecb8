"""Is a filled-in face really there? Filled faces checked against their track's neighbouring frames.

:func:`gpen.faces.tracking.link_tracks` fills a frame where a track's face was not detected with
landmarks interpolated between the detections on either side. That is right when the detector
merely missed the face (blur, a turned head) and wrong when the face is gone: it left the frame,
or something covers it. So each filled face's aligned crop (GPEN template, :data:`GAP_CROP`
pixels, grey, the face region of :data:`gpen.faces.selection.FACE_BOX_IN_CROP`) is compared with
the crops of the same track on the nearest detected frames before and after: the correlation
over the pixels inside both frames (the best over small shifts), the better of the two. A filled face whose crop lies less than
:data:`MIN_INSIDE` inside its frame, or correlates less than :data:`FILL_SIMILARITY`, is not
restored.

:data:`FILL_SIMILARITY` comes from ``python -m bench gaps`` (``bench/results/cpu_gap_fill.json``):
a face really there at the interpolated place (moved off the straight line, relit, noisy) against
the same frames with the face gone (the background of real pictures, a face leaving at the border).
"""

from __future__ import annotations

import numpy as np
import torch

from .align import estimate_similarity, inside_image, template_points, warp_affine
from .selection import FACE_BOX_IN_CROP
from .tracking import Tracks

__all__ = ["FILL_SIMILARITY", "GAP_CROP", "MIN_INSIDE", "check_filled", "crop_similarity", "fill_similarities"]

GAP_CROP = 32  # side of the aligned grey crops compared
FILL_SIMILARITY = 0.74  # see the module docstring and bench/results/cpu_gap_fill.json
MIN_INSIDE = 0.25  # a filled face with less of its face region inside the frame is not there to restore
MAX_SHIFT = 3  # crop pixels (a sixth of the face region) the filled face may be off


def _region() -> tuple[slice, slice]:
    (x0, y0), (x1, y1) = (np.round(FACE_BOX_IN_CROP.min(0) * GAP_CROP).astype(int),
                          np.round(FACE_BOX_IN_CROP.max(0) * GAP_CROP).astype(int))
    return slice(int(y0), int(y1)), slice(int(x0), int(x1))


def grey_crops(images: torch.Tensor, landmarks: np.ndarray, frame_of: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Face regions of the aligned grey crops (N, h, w) of faces ``landmarks`` (N, 5, 2) on frames
    ``frame_of`` (N,) of ``images`` (B, H, W, C) 0..1, and where they lie inside the frame (N, h, w)."""
    rows, cols = _region()
    if not len(landmarks):
        return torch.zeros(0, rows.stop - rows.start, cols.stop - cols.start), \
            torch.zeros(0, rows.stop - rows.start, cols.stop - cols.start)
    fwd = estimate_similarity(np.asarray(landmarks, np.float64), template_points("gpen", GAP_CROP)).astype(np.float32)
    frames = sorted(set(np.asarray(frame_of).tolist()))
    where = {f: i for i, f in enumerate(frames)}
    x = images[frames][..., :3] if images.shape[-1] >= 3 else images[frames][..., :1].expand(-1, -1, -1, 3)
    x = x.permute(0, 3, 1, 2).float()
    idx = torch.tensor([where[int(f)] for f in frame_of], device=x.device)
    crops = warp_affine(x, torch.from_numpy(fwd).to(x.device), idx, GAP_CROP).cpu()
    grey = crops[:, 0] * 0.299 + crops[:, 1] * 0.587 + crops[:, 2] * 0.114
    inside = inside_image(fwd, tuple(images.shape[1:3]), GAP_CROP)
    return grey[:, rows, cols].double(), inside[:, rows, cols].double()


def _pearson(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted correlation (N,) of ``a`` and ``b`` (N, h, w) over weights ``w``; and where either is flat."""
    n = w.sum((1, 2)).clamp_min(1)
    ma = (a * w).sum((1, 2)) / n
    mb = (b * w).sum((1, 2)) / n
    da, db = (a - ma[:, None, None]) * w, (b - mb[:, None, None]) * w
    va, vb = (da * da).sum((1, 2)), (db * db).sum((1, 2))
    return (da * db).sum((1, 2)) / (va * vb).sqrt().clamp_min(1e-12), (va < 1e-8 * n) | (vb < 1e-8 * n)


def crop_similarity(a: torch.Tensor, b: torch.Tensor, inside_a: torch.Tensor, inside_b: torch.Tensor) -> np.ndarray:
    """Correlation (N,) -1..1 of crops ``a`` and ``b`` (N, h, w) over the pixels inside both frames,
    the best over shifts of up to :data:`MAX_SHIFT` crop pixels (an interpolated face is rarely
    exactly where the face is); -1 where ``a`` lies less than :data:`MIN_INSIDE` inside its frame."""
    h, w = a.shape[1:]
    best = torch.full((a.shape[0],), -1.0, dtype=torch.float64)
    for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):
        ya, yb = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
            xa, xb = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            r, flat = _pearson(a[:, ya, xa].double(), b[:, yb, xb].double(),
                               (inside_a[:, ya, xa] * inside_b[:, yb, xb]).double())
            best = torch.maximum(best, torch.where(flat, -1.0, r))
    few = inside_a.mean((1, 2)) < MIN_INSIDE
    return torch.where(few, -1.0, best).numpy()


def fill_similarities(images: torch.Tensor, tracks: Tracks) -> list[np.ndarray]:
    """Per frame, for every face of ``tracks.found``: the similarity of a filled face to its track's
    nearest detected faces before and after (the better of the two, :func:`crop_similarity`); NaN for
    detected faces. ``images`` (B, H, W, C) 0..1, the frames the tracks were linked on."""
    out = [np.full(len(i), np.nan) for i in tracks.ids]
    detected: dict[int, list[tuple[int, int]]] = {}
    for t, (ids, interp) in enumerate(zip(tracks.ids, tracks.interpolated)):
        for k in np.flatnonzero(~interp & (ids >= 0)):
            detected.setdefault(int(ids[k]), []).append((t, int(k)))
    pairs: list[tuple[tuple[int, int], tuple[int, int]]] = []  # (filled face, a detected face of its track)
    for t, (ids, interp) in enumerate(zip(tracks.ids, tracks.interpolated)):
        for k in np.flatnonzero(interp & (ids >= 0)):
            seen = detected.get(int(ids[k]), [])
            before = [p for p in seen if p[0] < t][-1:]
            after = [p for p in seen if p[0] > t][:1]
            pairs += [((t, int(k)), p) for p in before + after]
    if not pairs:
        return out
    faces = sorted({p for pair in pairs for p in pair})
    pos = {p: i for i, p in enumerate(faces)}
    lms = np.stack([tracks.found[t][2][k] for t, k in faces])
    grey, inside = grey_crops(images, lms, np.array([t for t, _ in faces]))
    a = torch.tensor([pos[f] for f, _ in pairs])
    b = torch.tensor([pos[n] for _, n in pairs])
    sims = crop_similarity(grey[a], grey[b], inside[a], inside[b])
    for ((t, k), _), s in zip(pairs, sims):
        out[t][k] = s if np.isnan(out[t][k]) else max(out[t][k], s)
    return out


def check_filled(images: torch.Tensor, tracks: Tracks, threshold: float = FILL_SIMILARITY) -> Tracks:
    """``tracks`` with every filled face that does not look like its track (:func:`fill_similarities`
    below ``threshold``) given id -1 (not restored). The input is not modified."""
    sims = fill_similarities(images, tracks)
    ids = [np.where(interp & ~(np.nan_to_num(s, nan=np.inf) >= threshold), -1, i)
           for i, interp, s in zip(tracks.ids, tracks.interpolated, sims)]
    return Tracks(tracks.found, ids, tracks.interpolated, tracks.dropped, list(tracks.shots))

