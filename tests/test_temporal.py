"""Landmark smoothing over video frames: jitter, lag, track matching."""

from __future__ import annotations

import numpy as np
import pytest

from gpen.errors import InvalidInputError
from gpen.faces.temporal import box_iou, smooth_landmarks, track_faces

BASE = np.array([[40.0, 50.0], [60.0, 50.0], [50.0, 60.0], [42.0, 70.0], [58.0, 70.0]])


def face_box(lm: np.ndarray, pad: float = 15.0) -> np.ndarray:
    return np.array([lm[:, 0].min() - pad, lm[:, 1].min() - pad, lm[:, 0].max() + pad, lm[:, 1].max() + pad])


def video(paths: list[np.ndarray], jitter: float, seed: int = 0):
    """paths: per face (T, 2) offsets of BASE; returns per-frame landmarks, boxes, and the truth."""
    rng = np.random.default_rng(seed)
    t_len = len(paths[0])
    frames, boxes, truth = [], [], []
    for t in range(t_len):
        true = np.stack([BASE + p[t] for p in paths])
        noisy = true + rng.normal(0.0, jitter, true.shape)
        frames.append(noisy)
        boxes.append(np.stack([face_box(lm) for lm in true]))
        truth.append(true)
    return frames, boxes, truth


def rms(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def test_static_face_loses_jitter_without_bias():
    frames, boxes, truth = video([np.zeros((60, 2))], jitter=1.0)
    out = smooth_landmarks(frames, boxes, window=7)
    raw_err, new_err = rms(frames, truth), rms(out, truth)
    # interior: variance / 7, ends: one-sided fits; overall well below the raw jitter
    assert new_err < 0.6 * raw_err
    inner = slice(3, -3)
    assert rms(out[inner], truth[inner]) < 0.5 * rms(frames[inner], truth[inner])
    # the smoother is linear, so its bias is what it does to the noise-free track: nothing
    clean, clean_boxes, _ = video([np.zeros((60, 2))], jitter=0.0)
    np.testing.assert_allclose(np.stack(smooth_landmarks(clean, clean_boxes, window=7)), np.stack(clean), atol=1e-9)


def test_constant_velocity_is_followed_exactly():
    t = np.arange(40, dtype=np.float64)
    path = np.stack([3.0 * t, -1.5 * t], axis=1)  # 3.4 px/frame
    frames, boxes, truth = video([path], jitter=0.0)
    out = smooth_landmarks(frames, boxes, window=9)
    np.testing.assert_allclose(np.stack(out), np.stack(truth), atol=1e-9)  # zero lag, even at the ends
    # (the smoother is linear: with jitter its expected output is this noise-free one, so no lag either)
    frames, boxes, truth = video([path], jitter=0.8, seed=1)
    out = smooth_landmarks(frames, boxes, window=9)
    assert rms(out, truth) < 0.6 * rms(frames, truth)


def test_accelerating_face_bias_is_within_the_stated_bound():
    t = np.arange(50, dtype=np.float64)
    acc = 0.2  # px / frame^2
    path = np.stack([0.5 * acc * t**2, np.zeros_like(t)], axis=1)
    frames, boxes, truth = video([path], jitter=0.0)
    window = 5
    r = window // 2
    out = smooth_landmarks(frames, boxes, window=window, iou_threshold=0.05)
    err = np.abs(np.stack(out) - np.stack(truth))[r:-r]
    bound = acc * r * (r + 1) / 6
    assert err.max() <= bound + 1e-9
    assert err.max() >= 0.9 * bound  # the bound is tight: this is the bias of a local line


def test_faces_swapping_order_are_matched():
    t_len = 30
    a = np.zeros((t_len, 2))
    b = np.tile([120.0, 10.0], (t_len, 1))
    frames, boxes, truth = video([a, b], jitter=0.7, seed=2)
    # the detector reports the two faces in a different order on odd frames
    for t in range(1, t_len, 2):
        frames[t], boxes[t], truth[t] = frames[t][::-1].copy(), boxes[t][::-1].copy(), truth[t][::-1].copy()
    out, ids = smooth_landmarks(frames, boxes, window=5, return_tracks=True)
    for t in range(t_len):
        expect = [0, 1] if t % 2 == 0 else [1, 0]
        assert ids[t].tolist() == expect
        assert out[t].shape == frames[t].shape
    assert rms(out, truth) < 0.75 * rms(frames, truth)
    # had the faces been mixed up, landmarks would have jumped by ~120 px
    assert max(np.abs(o - tr).max() for o, tr in zip(out, truth)) < 5


def test_faces_appearing_disappearing_and_gaps():
    t_len = 20
    a = np.zeros((t_len, 2))
    b = np.tile([150.0, 0.0], (t_len, 1))
    frames, boxes, truth = video([a, b], jitter=0.5, seed=3)
    # face b only exists in frames 5..14, and the detector misses face a in frame 10
    for t in range(t_len):
        keep = [0] if not 5 <= t <= 14 else [0, 1]
        if t == 10:
            keep = [1]
        frames[t], boxes[t], truth[t] = frames[t][keep], boxes[t][keep], truth[t][keep]
    out, ids = smooth_landmarks(frames, boxes, window=5, return_tracks=True)
    a_id, b_id = ids[0][0], ids[5][1]
    assert a_id != b_id
    assert ids[10].tolist() == [b_id]
    assert ids[11][0] == a_id  # the track of face a survives the missed frame
    assert len({int(i) for f in ids for i in f}) == 2
    assert all(o.shape == f.shape for o, f in zip(out, frames))
    assert max(np.abs(o - tr).max() for o, tr in zip(out, truth)) < 3


def test_identity_settings_and_inputs_untouched():
    frames, boxes, _ = video([np.zeros((10, 2))], jitter=1.0, seed=4)
    frames = [f.astype(np.float32) for f in frames]
    snapshot = [f.copy() for f in frames]
    for kwargs in ({"window": 1}, {"strength": 0.0}):
        out = smooth_landmarks(frames, boxes, **kwargs)
        assert all(np.array_equal(o, f) for o, f in zip(out, frames))
    out = smooth_landmarks(frames, boxes, window=5)
    assert out[0].dtype == np.float32
    assert all(np.array_equal(f, s) for f, s in zip(frames, snapshot))
    half = smooth_landmarks(frames, boxes, window=5, strength=0.5)
    np.testing.assert_allclose(np.stack(half), 0.5 * (np.stack(out) + np.stack(frames)), atol=1e-5)


def test_empty_frames_and_short_tracks():
    out = smooth_landmarks([np.zeros((0, 5, 2)), BASE[None], np.zeros((0, 5, 2))], [np.zeros((0, 4)), face_box(BASE)[None], np.zeros((0, 4))])
    assert out[0].shape == (0, 5, 2) and np.array_equal(out[1][0], BASE)
    assert smooth_landmarks([], []) == []


def test_box_iou_and_track_faces():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    b = np.array([[5, 0, 15, 10]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150], [0]])
    ids = track_faces([a, a[::-1] + 1, np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4)), a], max_gap=2)
    assert ids[1].tolist() == [1, 0]
    assert ids[5].tolist() == [2, 3]  # three frames missing > max_gap: new tracks


def test_bad_inputs():
    frames, boxes, _ = video([np.zeros((3, 2))], jitter=0.0)
    with pytest.raises(InvalidInputError):
        smooth_landmarks(frames, boxes[:2])
    with pytest.raises(InvalidInputError):
        smooth_landmarks(frames, boxes, window=4)
    with pytest.raises(InvalidInputError):
        smooth_landmarks(frames, boxes, strength=2.0)
    with pytest.raises(InvalidInputError):
        smooth_landmarks([np.zeros((1, 4, 2))], [np.zeros((1, 4))])
    with pytest.raises(InvalidInputError):
        smooth_landmarks([np.zeros((2, 5, 2))], [np.zeros((1, 4))])
    with pytest.raises(InvalidInputError):
        smooth_landmarks([np.full((1, 5, 2), np.nan)], [np.zeros((1, 4))])
