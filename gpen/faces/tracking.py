"""Face tracks across a batch of video frames: which face in one frame is which face in the next.

:func:`track_faces` links the faces of consecutive frames into tracks by where they are. Each
track predicts its face in the next frame: the last landmarks (box corners when there are no
landmarks) moved on at the velocity between its last two observations (constant motion; a track
seen once stands still). A face continues the track whose prediction is nearest, measured as the
mean landmark distance in units of the track's face size (the square root of its box area), when
that distance is at most ``max_distance`` or the predicted box overlaps the face's box by an IoU
of at least ``iou_threshold``. Pairs are taken nearest first (greedy), one face per track and
frame. Two people who walk past each other keep their tracks because each track follows its own
motion; a track survives up to ``max_gap`` frames in which its face was not found.

:func:`link_tracks` builds on it for the restorer, inside each shot of the batch
(:mod:`gpen.faces.shots`): tracks with fewer detections than ``min_track`` and a low detector
score are dropped as false detections, and a face missing from up to ``max_gap`` frames inside
its track gets landmarks and box interpolated linearly from the neighbouring frames, so it can
be restored there too (where the frame shows it: :func:`gpen.faces.gaps.check_filled`). Everything here is tiny (a few numbers per face): plain
float64 numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInputError
from .selection import Found

__all__ = ["FALSE_DETECTION_SCORE", "Tracks", "box_iou", "link_tracks", "track_faces"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (x0, y0, x1, y1): (A, 4) x (B, 4) -> (A, B)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _points(boxes: np.ndarray, landmarks: np.ndarray | None, t: int) -> np.ndarray:
    """(K, P, 2) points that locate each face: its landmarks, else its two box corners."""
    if landmarks is None:
        return boxes.reshape(-1, 2, 2)
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.size == 0:
        lm = lm.reshape(0, 5, 2)
    if lm.ndim != 3 or lm.shape[0] != boxes.shape[0] or lm.shape[2] != 2:
        raise InvalidInputError(f"frame {t}: landmarks must have shape ({boxes.shape[0]}, P, 2) to match the "
                                f"boxes, got {lm.shape}.")
    return lm


def track_faces(boxes: Sequence[np.ndarray], iou_threshold: float = 0.3, max_gap: int = 2, *,
                landmarks: Sequence[np.ndarray] | None = None, max_distance: float = 3.0,
                shots: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]:
    """Link faces across frames: per frame an int array (K_i,) of track ids (0, 1, ... in order of creation).

    ``boxes``: per frame (K_i, 4) boxes x0, y0, x1, y1; ``landmarks``: optionally per frame
    (K_i, P, 2) points of the same faces (5-point landmarks), which locate faces better than box
    corners. A face continues the track whose motion-predicted position is nearest (see the
    module docstring) when the distance is at most ``max_distance`` face sizes or the predicted
    box overlaps by IoU >= ``iou_threshold``, and the track was seen at most ``max_gap`` frames
    before. Faces left over are then paired when that is unambiguous (:func:`_pair_leftovers`: a
    fast face, e.g. in a quick pan, jumps further than ``max_distance``); the rest start new tracks.
    ``shots``: frame ranges (:func:`gpen.faces.shots.find_shots`); no track crosses from one to the next.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise InvalidInputError(f"iou_threshold must lie in (0, 1], got {iou_threshold!r}.")
    if isinstance(max_gap, bool) or not isinstance(max_gap, (int, np.integer)) or max_gap < 0:
        raise InvalidInputError(f"max_gap must be a whole number of frames >= 0, got {max_gap!r}.")
    if not max_distance >= 0:
        raise InvalidInputError(f"max_distance must be >= 0 (in face sizes), got {max_distance!r}.")
    if landmarks is not None and len(landmarks) != len(boxes):
        raise InvalidInputError(f"got landmarks for {len(landmarks)} frames but boxes for {len(boxes)}.")
    seen: list[list[tuple[int, np.ndarray, np.ndarray]]] = []  # per track its last two (t, box, points)
    ids_per_frame = []
    starts = {int(a) for a, _ in shots} if shots is not None else set()
    for t, bx in enumerate(boxes):
        if t in starts:  # a new shot: no earlier track goes on
            seen = [[(-10 ** 9, o[-1][1], o[-1][2])] for o in seen]
        bx = np.asarray(bx, dtype=np.float64).reshape(-1, 4)
        pts = _points(bx, None if landmarks is None else landmarks[t], t)
        ids = np.full(len(bx), -1, dtype=np.int64)
        alive = [k for k, obs in enumerate(seen) if t - obs[-1][0] <= max_gap + 1 and obs[-1][2].shape == pts.shape[1:]]
        if alive and len(bx):
            pred_pts, pred_box, scale = _predict([seen[k] for k in alive], t)
            dist = np.linalg.norm(pred_pts[:, None] - pts[None], axis=-1).mean(-1) / scale[:, None]
            allowed = (dist <= max_distance) | (box_iou(pred_box, bx) >= iou_threshold)
            cost = np.where(allowed, dist, np.inf)
            taken = np.zeros(len(alive), dtype=bool)
            for flat in np.argsort(cost, axis=None, kind="stable"):
                ti, di = divmod(int(flat), len(bx))
                if not np.isfinite(cost[ti, di]):
                    break
                if ids[di] >= 0 or taken[ti]:
                    continue
                ids[di] = alive[ti]
                taken[ti] = True
            _pair_leftovers(ids, [k for k, tk in zip(alive, taken) if not tk and seen[k][-1][0] == t - 1],
                            seen, bx, pts, t)
        for di in range(len(bx)):
            if ids[di] < 0:
                ids[di] = len(seen)
                seen.append([])
            seen[ids[di]] = (seen[ids[di]] + [(t, bx[di], pts[di])])[-2:]
        ids_per_frame.append(ids)
    return ids_per_frame


FAST_SIZE_RATIO = 1.5  # a fast face paired by _pair_leftovers keeps its size within this factor


def _pair_leftovers(ids: np.ndarray, tracks: list[int], seen: list, bx: np.ndarray, pts: np.ndarray, t: int) -> None:
    """Pair the faces of frame ``t`` no track claimed with the ``tracks`` seen on frame ``t - 1`` that
    found no face, where the pairing is unambiguous: as many such faces as such tracks (everyone
    moved, as in a pan), each pair the other's nearest to its motion prediction, of about the same
    size (within :data:`FAST_SIZE_RATIO`). Writes the track ids into ``ids``."""
    free = np.flatnonzero(ids < 0)
    if not len(tracks) or len(tracks) != len(free):
        return
    pred_pts, _, scale = _predict([seen[k] for k in tracks], t)
    dist = np.linalg.norm(pred_pts[:, None] - pts[free][None], axis=-1).mean(-1)
    size = np.sqrt(np.clip((bx[free, 2] - bx[free, 0]) * (bx[free, 3] - bx[free, 1]), 1.0, None))
    for ti, k in enumerate(tracks):
        di = int(np.argmin(dist[ti]))
        if int(np.argmin(dist[:, di])) == ti and max(size[di], scale[ti]) <= FAST_SIZE_RATIO * min(size[di], scale[ti]):
            ids[free[di]] = k


def _predict(tracks: list[list[tuple[int, np.ndarray, np.ndarray]]], t: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each track's face should be at frame ``t``: (points (A, P, 2), boxes (A, 4), face sizes (A,))."""
    pts, boxes, scale = [], [], []
    for obs in tracks:
        t1, box1, p1 = obs[-1]
        move = np.zeros_like(p1)
        if len(obs) == 2:
            t0, _, p0 = obs[0]
            move = (p1 - p0) * (t - t1) / (t1 - t0)
        shift = move.mean(axis=0)
        pts.append(p1 + move)
        boxes.append(box1 + np.concatenate([shift, shift]))
        scale.append(max(1.0, float(np.sqrt(max(0.0, (box1[2] - box1[0]) * (box1[3] - box1[1]))))))
    return np.stack(pts), np.stack(boxes), np.asarray(scale)


FALSE_DETECTION_SCORE = 0.9
"""A face the detector found in fewer than ``min_track`` frames of a shot is dropped as a false
detection only when its best score is below this. Every real face of the shared test pictures
(29 Solvay faces, the astronaut; MTCNN, ``tests/fixtures/geometry/landmarks.json``) scores 0.963
or more, so a confident face seen once (0.99) is always restored; one seen once at 0.6 is not."""
MIN_SHOT_TO_DROP = 3  # shorter shots (and single pictures) keep every face as found


@dataclass
class Tracks:
    """Faces of a batch with their tracks (see :func:`link_tracks`).

    ``found``: per frame (boxes (K, 4), scores (K,), landmarks (K, 5, 2)): the detected faces in
    their original order, then the interpolated ones. ``ids``: per frame the track id of every
    face (-1: a detection dropped as false, or a filled face found not to be there, see
    :func:`gpen.faces.gaps.check_filled`). ``interpolated``: per frame, True for the faces filled in
    between detections. ``dropped``: how many detected faces were dropped. ``shots``: the frame
    ranges (start, stop) the tracks were linked in; no track crosses from one to the next.
    """

    found: list[Found]
    ids: list[np.ndarray]
    interpolated: list[np.ndarray]
    dropped: int = 0
    shots: list[tuple[int, int]] = field(default_factory=list)

    @property
    def filled(self) -> int:
        """How many faces were interpolated into frames where their track was not detected (and kept)."""
        return int(sum(int((f & (i >= 0)).sum()) for f, i in zip(self.interpolated, self.ids)))

    def shot_report(self, shot: tuple[int, int]) -> dict[str, int]:
        """What happened in frames ``shot`` (start, stop): tracks linked, faces filled, filled faces
        rejected (no face at that place) and detections dropped as false."""
        a, z = shot
        ids = self.ids[a:z]
        interp = self.interpolated[a:z]
        return {"tracks": len({int(t) for i in ids for t in i.tolist() if t >= 0}),
                "filled": int(sum(int((f & (i >= 0)).sum()) for f, i in zip(interp, ids))),
                "unfilled": int(sum(int((f & (i < 0)).sum()) for f, i in zip(interp, ids))),
                "dropped": int(sum(int((~f & (i < 0)).sum()) for f, i in zip(interp, ids)))}


def link_tracks(found: Sequence[Found], *, max_gap: int = 3, min_track: int = 2, iou_threshold: float = 0.3,
                max_distance: float = 3.0, shots: Sequence[tuple[int, int]] | None = None,
                min_score: float = FALSE_DETECTION_SCORE) -> Tracks:
    """Track the faces of a frame batch, drop doubtful short tracks and fill short gaps (see the module docstring).

    ``found``: per frame (boxes, scores, landmarks (K, 5, 2)) from the detector or from given
    landmarks. Faces are linked with :func:`track_faces` inside each of ``shots`` (frame ranges;
    None: the batch is one shot), tracks surviving ``max_gap`` missing frames. In shots of
    :data:`MIN_SHOT_TO_DROP` or more frames a track detected in fewer than ``min_track`` frames gets
    id -1 (a false detection) unless its best score reaches ``min_score``
    (:data:`FALSE_DETECTION_SCORE`; 0 keeps every face). Every gap of up to ``max_gap`` frames
    inside a kept track is filled with landmarks and boxes interpolated linearly between the
    detections on either side (score: the lower of the two). The input is not modified.
    """
    if isinstance(min_track, bool) or not isinstance(min_track, (int, np.integer)) or min_track < 1:
        raise InvalidInputError(f"min_track must be a whole number of frames >= 1, got {min_track!r}.")
    found = [(np.asarray(b, np.float32).reshape(-1, 4), np.asarray(s, np.float32).reshape(-1),
              np.asarray(lm, np.float32).reshape(-1, 5, 2)) for b, s, lm in found]
    shots = [(0, len(found))] if shots is None else [(int(a), int(z)) for a, z in shots]
    ids = track_faces([f[0] for f in found], iou_threshold, max_gap, landmarks=[f[2] for f in found],
                      max_distance=max_distance, shots=shots)
    shot_length = np.zeros(len(found), dtype=np.int64)
    for a, z in shots:
        shot_length[a:z] = z - a
    members: dict[int, list[tuple[int, int]]] = {}
    for t, frame_ids in enumerate(ids):
        for k, tid in enumerate(frame_ids.tolist()):
            members.setdefault(tid, []).append((t, k))
    dropped = 0
    extra: list[list[tuple[np.ndarray, float, np.ndarray, int]]] = [[] for _ in found]
    for tid, track in members.items():
        best = max(float(found[t][1][k]) for t, k in track)
        if len(track) < min_track and shot_length[track[0][0]] >= MIN_SHOT_TO_DROP and best < min_score:
            for t, k in track:
                ids[t][k] = -1
            dropped += len(track)
            continue
        for (t0, k0), (t1, k1) in zip(track, track[1:]):
            for t in range(t0 + 1, t1):
                a = (t - t0) / (t1 - t0)
                box = (1 - a) * found[t0][0][k0] + a * found[t1][0][k1]
                lm = (1 - a) * found[t0][2][k0] + a * found[t1][2][k1]
                extra[t].append((box, min(float(found[t0][1][k0]), float(found[t1][1][k1])), lm, tid))
    out_found, out_ids, interpolated = [], [], []
    for t, (boxes, scores, lms) in enumerate(found):
        new = extra[t]
        if new:
            boxes = np.concatenate([boxes, np.stack([e[0] for e in new]).astype(np.float32)])
            scores = np.concatenate([scores, np.asarray([e[1] for e in new], np.float32)])
            lms = np.concatenate([lms, np.stack([e[2] for e in new]).astype(np.float32)])
        out_found.append((boxes, scores, lms))
        out_ids.append(np.concatenate([ids[t], np.asarray([e[3] for e in new], np.int64)]))
        interpolated.append(np.arange(len(boxes)) >= len(ids[t]))
    return Tracks(out_found, out_ids, interpolated, dropped, shots)
