"""Face tracks across frames (gpen.faces.tracking): linking, crossing paths, gaps, short tracks."""

from __future__ import annotations

import numpy as np
import pytest

from gpen.errors import InvalidInputError
from gpen.faces.selection import select_tracks
from gpen.faces.tracking import link_tracks, track_faces

from conftest import landmarks_of

LM = landmarks_of("skimage.data.astronaut")[0].astype(np.float64)  # a real face, ~60 px between the eyes


def box(lm: np.ndarray) -> np.ndarray:
    return np.array([lm[:, 0].min() - 40, lm[:, 1].min() - 50, lm[:, 0].max() + 40, lm[:, 1].max() + 40])


def found_of(per_frame: list[list[np.ndarray]], scores=None) -> list:
    """Detections (boxes, scores, landmarks) per frame from per-frame lists of landmark sets."""
    out = []
    for t, lms in enumerate(per_frame):
        lm = np.array(lms, np.float32).reshape(-1, 5, 2)
        sc = np.ones(len(lm), np.float32) if scores is None else np.asarray(scores[t], np.float32)
        out.append((np.array([box(x) for x in lm], np.float32).reshape(-1, 4), sc, lm))
    return out


def test_faces_walking_past_each_other_keep_their_tracks():
    # A walks right, B walks left on the same line; they pass each other between frames 2 and 3,
    # and the detector lists them in either order. Last-position matching would swap them there.
    xs = np.linspace(0.0, 500.0, 6)
    frames = []
    for t, x in enumerate(xs):
        a, b = LM + [x, 0], LM + [500 - x, 0]
        frames.append(np.stack([a, b] if t % 2 == 0 else [b, a]))
    ids = track_faces([np.stack([box(f) for f in lm]) for lm in frames], landmarks=frames)
    a_track = ids[0][0]
    for t in range(6):
        a_index = 0 if t % 2 == 0 else 1
        assert ids[t][a_index] == a_track, (t, ids)
    assert len({int(i) for f in ids for i in f}) == 2


def test_boxes_only_and_landmarks_link_alike():
    frames = [np.stack([LM + [8.0 * t, 3.0 * t], LM + [300.0 - 5 * t, 40.0]]) for t in range(8)]
    boxes = [np.stack([box(f) for f in lm]) for lm in frames]
    assert [i.tolist() for i in track_faces(boxes)] == [[0, 1]] * 8
    assert [i.tolist() for i in track_faces(boxes, landmarks=frames)] == [[0, 1]] * 8


def test_a_face_too_far_from_every_track_starts_a_new_one():
    # a jump of ~7 face sizes in one frame, while the face that was there stays: a second person
    far = [np.stack([LM]), np.stack([LM, LM + [1000.0, 0.0]])]
    ids = track_faces([np.stack([box(f) for f in lm]) for lm in far], landmarks=far)
    assert [i.tolist() for i in ids] == [[0], [0, 1]]
    # the face alone jumps as far but at three times the size: not the same face, a new track
    big = [np.stack([LM]), np.stack([(LM - LM.mean(0)) * 3 + LM.mean(0) + [1000.0, 0.0]])]
    ids = track_faces([np.stack([box(f) for f in lm]) for lm in big], landmarks=big)
    assert [i.tolist() for i in ids] == [[0], [1]]


def test_link_tracks_fills_gaps_and_drops_short_tracks():
    path = [LM + [20.0 * t, 6.0 * t] for t in range(6)]
    per_frame = [[p] for p in path]
    per_frame[3] = []  # the detector missed the face
    per_frame[2].append(LM + [600.0, 300.0])  # a false face, one frame only, at a doubtful score
    scores = [[0.99] * len(f) for f in per_frame]
    scores[2][1] = 0.6
    tracks = link_tracks(found_of(per_frame, scores), max_gap=3, min_track=2)
    assert tracks.dropped == 1 and tracks.filled == 1
    assert tracks.ids[2].tolist() == [0, -1]
    # the same face seen once at a confident score is kept: one frame is no evidence against it
    scores[2][1] = 0.99
    assert link_tracks(found_of(per_frame, scores), max_gap=3, min_track=2).dropped == 0
    scores[2][1] = 0.6
    assert link_tracks(found_of(per_frame, scores), max_gap=3, min_track=2, min_score=0).dropped == 0
    boxes, scores, lms = tracks.found[3]
    assert tracks.interpolated[3].tolist() == [True] and tracks.ids[3].tolist() == [0]
    np.testing.assert_allclose(lms[0], path[3], atol=1e-4)  # linear motion: interpolation is exact
    np.testing.assert_allclose(boxes[0], box(path[3]), atol=1e-3)
    # gaps longer than max_gap split the track (no interpolation across them)
    long_gap = [[p] for p in path]
    long_gap[1] = long_gap[2] = long_gap[3] = []
    split = link_tracks(found_of(long_gap), max_gap=2, min_track=1)
    assert split.filled == 0 and split.ids[0].tolist() != split.ids[4].tolist()
    # the input is left alone
    found = found_of(per_frame)
    before = [f[2].copy() for f in found]
    link_tracks(found, min_score=1.1)
    assert all(np.array_equal(f[2], b) for f, b in zip(found, before))


def test_tracks_are_numbered_by_first_appearance_in_sort_order():
    # frame 0: faces P (right) and Q (left); frame 2: R appears at the far left.
    p, q, r = LM + [300.0, 0.0], LM, LM + [-150.0, 200.0]
    per_frame = [[p, q], [p, q], [p, q, r], [q, r, p]]
    found = found_of(per_frame)
    tracks = link_tracks(found, min_track=1)
    chosen, numbers = select_tracks(tracks.found, tracks.ids, selection="all")
    # left to right on frame 0: Q = 0, P = 1; R comes later = 2
    q_number = {tuple(np.round(tracks.found[t][2][k][0])): n for t in range(4)
                for k, n in zip(chosen[t], numbers[t])}
    assert q_number[tuple(np.round(q[0]))] == 0 and q_number[tuple(np.round(p[0]))] == 1
    assert q_number[tuple(np.round(r[0]))] == 2
    picked, nums = select_tracks(tracks.found, tracks.ids, selection=[2, 0])
    assert [n.tolist() for n in nums] == [[0], [0], [2, 0], [2, 0]]  # in the user's order
    # sort by score numbers tracks by their score on the first frame
    scored = found_of(per_frame, scores=[[0.9, 0.6], [0.5, 0.95], [0.9, 0.6, 0.7], [0.6, 0.7, 0.9]])
    tracks = link_tracks(scored, min_track=1)
    first, nums = select_tracks(tracks.found, tracks.ids, selection="0", sort="score")
    assert all(np.allclose(tracks.found[t][2][k], p) for t in range(4) for k in first[t])
    # "largest": the track with the largest mean box, in every frame it is in
    big_p = (p - p.mean(0)) * 1.5 + p.mean(0)
    tracks = link_tracks(found_of([[big_p if x is p else x for x in fr] for fr in per_frame]), min_track=1)
    largest, nums = select_tracks(tracks.found, tracks.ids, selection="largest")
    assert [n.tolist() for n in nums] == [[1]] * 4
    assert all(np.allclose(tracks.found[t][2][k], big_p) for t in range(4) for k in largest[t])


def test_bad_tracking_options():
    with pytest.raises(InvalidInputError, match="max_gap"):
        track_faces([np.zeros((1, 4))], max_gap=-1)
    with pytest.raises(InvalidInputError, match="min_track"):
        link_tracks(found_of([[LM]]), min_track=0)
    with pytest.raises(InvalidInputError, match="landmarks"):
        track_faces([np.zeros((1, 4))], landmarks=[np.zeros((2, 5, 2))])
