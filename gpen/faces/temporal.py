"""Temporal smoothing of 5-point landmarks over a batch of video frames.

Faces are linked into tracks by :func:`gpen.faces.tracking.track_faces` (box overlap and landmark
distance to each track's motion prediction), or the caller passes the tracks it already has. Each
track's landmarks are then smoothed by a centred local linear fit over ``window`` frames (a moving
least-squares line evaluated at the frame itself). A local line reproduces any constant-velocity motion exactly, so a
static or uniformly moving face is smoothed with zero lag; only acceleration leaves a bias, at most
``|a| * r * (r + 1) / 6`` pixels inside a track (``r = window // 2``, ``a`` the acceleration in
pixels/frame^2). Inside a track the jitter variance drops to ``1 / window`` of the raw one.
Track ends use the frames available (a one-sided fit), so faces that appear or vanish are handled.
Everything here is tiny (a few numbers per face), so it is plain float64 numpy.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InvalidInputError
from .tracking import box_iou, track_faces

logger = logging.getLogger(__name__)

__all__ = ["box_iou", "track_faces", "smooth_landmarks"]  # the tracking names stay importable from here


def _check_frames(frames, boxes) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(frames) != len(boxes):
        raise InvalidInputError(f"Got landmarks for {len(frames)} frames but boxes for {len(boxes)}.")
    lms, bxs = [], []
    for t, (lm, bx) in enumerate(zip(frames, boxes)):
        lm = np.asarray(lm, dtype=np.float64)
        bx = np.asarray(bx, dtype=np.float64)
        if lm.size == 0:
            lm = lm.reshape(0, 5, 2)
        if bx.size == 0:
            bx = bx.reshape(0, 4)
        if lm.ndim != 3 or lm.shape[1:] != (5, 2):
            raise InvalidInputError(f"Frame {t}: landmarks must have shape (K, 5, 2), got {lm.shape}.")
        if bx.ndim != 2 or bx.shape[1] != 4 or bx.shape[0] != lm.shape[0]:
            raise InvalidInputError(
                f"Frame {t}: boxes must have shape ({lm.shape[0]}, 4) to match the landmarks, got {bx.shape}."
            )
        if not (np.isfinite(lm).all() and np.isfinite(bx).all()):
            raise InvalidInputError(f"Frame {t}: landmarks or boxes contain NaN or infinite values.")
        lms.append(lm)
        bxs.append(bx)
    return lms, bxs


def _local_linear(t: np.ndarray, y: np.ndarray, radius: int) -> np.ndarray:
    """Centred moving least-squares line: value at each t[j] of the line fitted to the points with
    |t - t[j]| <= radius. t (T,) sorted; y (T, D). Uses running sums, O(T)."""
    t = t - t[0]
    lo = np.searchsorted(t, t - radius, side="left")
    hi = np.searchsorted(t, t + radius, side="right")

    def window_sum(v):
        c = np.concatenate([np.zeros((1,) + v.shape[1:]), np.cumsum(v, axis=0)])
        return c[hi] - c[lo]

    n = (hi - lo).astype(np.float64)
    st = window_sum(t)
    stt = window_sum(t * t)
    sy = window_sum(y)
    sty = window_sum(t[:, None] * y)
    # sums of d = t_i - t_j over the window
    s1 = st - n * t
    s2 = stt - 2 * t * st + n * t * t
    sdy = sty - t[:, None] * sy
    den = n * s2 - s1 * s1
    ok = den > 1e-9 * np.maximum(n * s2, 1.0)
    safe = np.where(ok, den, 1.0)
    fit = (s2[:, None] * sy - s1[:, None] * sdy) / safe[:, None]
    return np.where(ok[:, None], fit, sy / n[:, None])


def smooth_landmarks(
    frames: list[np.ndarray],
    boxes: list[np.ndarray],
    window: int = 5,
    strength: float = 1.0,
    iou_threshold: float = 0.3,
    max_gap: int = 2,
    return_tracks: bool = False,
    tracks: list[np.ndarray] | None = None,
):
    """Smooth 5-point landmarks of faces across consecutive video frames.

    frames: per frame an array (K_i, 5, 2) of landmarks; boxes: per frame (K_i, 4) boxes (x0, y0,
    x1, y1) in the same face order (used with the landmarks to link faces into tracks, see
    :func:`gpen.faces.tracking.track_faces`, unless ``tracks`` gives per frame the track id of
    every face, e.g. from :func:`gpen.faces.tracking.link_tracks`; id -1: not smoothed).
    window: frames in the centred fit (odd, >= 1; 1 = no smoothing). strength: 0..1 blend between
    the raw (0) and the smoothed (1) landmarks.
    Returns a list of new arrays of the same shapes and face order (float64, or the input's
    float dtype); with ``return_tracks`` also the per-frame track ids.
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1 or window % 2 == 0:
        raise InvalidInputError(f"window must be an odd number of frames >= 1, got {window!r}.")
    if not 0.0 <= float(strength) <= 1.0:
        raise InvalidInputError(f"strength must lie in [0, 1], got {strength!r}.")
    lms, bxs = _check_frames(frames, boxes)
    if tracks is None:
        ids = track_faces(bxs, iou_threshold=iou_threshold, max_gap=max_gap, landmarks=lms)
    else:
        ids = [np.asarray(i, dtype=np.int64).reshape(-1) for i in tracks]
        if len(ids) != len(lms) or any(len(i) != len(lm) for i, lm in zip(ids, lms)):
            raise InvalidInputError("tracks must give one track id per face of every frame.")
    out = [lm.copy() for lm in lms]
    n_tracks = max((int(i.max()) + 1 for i in ids if len(i)), default=0)
    radius = window // 2
    if radius > 0 and strength > 0 and n_tracks:
        members: list[list[tuple[int, int]]] = [[] for _ in range(n_tracks)]
        for t, frame_ids in enumerate(ids):
            for k, tid in enumerate(frame_ids.tolist()):
                if tid >= 0:
                    members[tid].append((t, k))
        for track in members:
            if len(track) < 3:
                continue  # a line through one or two points reproduces them
            times = np.array([t for t, _ in track], dtype=np.float64)
            vals = np.stack([lms[t][k].reshape(10) for t, k in track])
            smooth = _local_linear(times, vals, radius)
            new = vals + float(strength) * (smooth - vals)
            for (t, k), v in zip(track, new):
                out[t][k] = v.reshape(5, 2)
    result = []
    for src, lm in zip(frames, out):
        dt = getattr(src, "dtype", None)
        result.append(lm.astype(dt) if dt is not None and np.issubdtype(dt, np.floating) else lm)
    return (result, ids) if return_tracks else result
