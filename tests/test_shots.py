"""Face selection on real batches: shots (gpen.faces.shots), filled faces only where the face is
(gpen.faces.gaps), false detections by score, fast faces, natural file order, reference= at the
border. Real pictures (skimage.data, the astronaut's face pasted into them) and a detector
stand-in that reports scores (tests/stand_ins.py)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import gpen
from gpen.faces.detect import FaceDetector

from conftest import REPO, astronaut, landmarks_of
from stand_ins import ScriptedDetector
from test_restore_selection import Darken, other_face, swap_face

LM = landmarks_of("skimage.data.astronaut")[0]  # eyes 43.5 px apart
FACE = (astronaut()[0, 60:260, 120:320].numpy() * 255).round().astype(np.uint8)  # the face, 200 x 200


def picture(name: str, h: int, w: int) -> np.ndarray:
    """skimage.data's ``name`` as RGB uint8 (h, w, 3), scaled to cover and centre-cropped."""
    from skimage import data

    x = np.asarray(getattr(data, name)())
    x = np.repeat(x[..., None], 3, -1) if x.ndim == 2 else x[..., :3]
    s = max(h / x.shape[0], w / x.shape[1])
    x = cv2.resize(x, (max(w, round(x.shape[1] * s)), max(h, round(x.shape[0] * s))), interpolation=cv2.INTER_AREA)
    y0, x0 = (x.shape[0] - h) // 2, (x.shape[1] - w) // 2
    return np.ascontiguousarray(x[y0:y0 + h, x0:x0 + w])


def paste_face(frame: np.ndarray, x: int, y: int, scale: float = 1.0) -> np.ndarray:
    """The astronaut's face pasted with its patch's top-left at (x, y) (clipped at the frame's
    border), scaled by ``scale``; returns its landmarks (5, 2) in the frame."""
    side = round(200 * scale)
    face = cv2.resize(FACE, (side, side), interpolation=cv2.INTER_AREA) if scale != 1 else FACE
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, w), min(y + side, h)
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = face[y0 - y:y1 - y, x0 - x:x1 - x]
    return ((LM - [120.0, 60.0]) * (side / 200) + [x, y]).astype(np.float32)


def batch(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)


def restorer(faces) -> gpen.FaceRestorer:
    """A restorer that darkens the faces a scripted detector reports (per frame [(landmarks, score)])."""
    return gpen.FaceRestorer(Darken(), size=64, detector=FaceDetector(backend=ScriptedDetector(faces)))


# ---- shots ---------------------------------------------------------------------------------------

def test_a_batch_of_unrelated_pictures_is_restored_picture_by_picture():
    frames, faces = [], []
    for name, face_at in (("astronaut", None), ("coffee", False), ("chelsea", (120, 60)), ("rocket", (720, 60))):
        frame = picture(name, 512, 1024)
        if name == "astronaut":
            frame = np.full((512, 1024, 3), 90, np.uint8)
            frame[:, :512] = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
            faces.append([(LM, 0.99)])
        elif face_at:
            faces.append([(paste_face(frame, *face_at), 0.99)])
        else:
            faces.append([])
        frames.append(frame)
    images = batch(frames)
    res = restorer(faces).restore(images)  # tracking switches itself on for 3+ frames
    assert res.faces_per_image == [1, 0, 1, 1]  # the far face is no "false detection"...
    assert torch.equal(res.images[1], images[1])  # ...and nothing is painted onto the coffee cup
    assert res.shots == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert not any(f.interpolated for f in res.faces)
    assert "4 shot(s) (4 single picture(s): faces as found)" in res.info


def test_a_picture_without_a_face_between_two_portraits_stays_untouched():
    portrait = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
    images = batch([portrait, picture("coffee", 512, 512), portrait])
    res = restorer([[(LM, 0.99)], [], [(LM, 0.99)]]).restore(images)
    assert res.faces_per_image == [1, 0, 1] and torch.equal(res.images[1], images[1])
    assert res.shots == [(0, 1), (1, 2), (2, 3)]


def test_a_cut_to_empty_frames_then_a_new_person_nearby_fills_nothing():
    portrait = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
    frames, faces = [], []
    for t in range(8):
        if t < 3:
            frames.append(portrait.copy())
            faces.append([(LM, 0.99)])
            continue
        frame = picture("coffee", 512, 512)
        faces.append([(paste_face(frame, 120 + 90, 60), 0.99)] if t >= 5 else [])  # 90 px from the astronaut
        frames.append(frame)
    images = batch(frames)
    res = restorer(faces).restore(images)
    assert res.faces_per_image == [1, 1, 1, 0, 0, 1, 1, 1]
    assert torch.equal(res.images[3], images[3]) and torch.equal(res.images[4], images[4])
    assert (0, 3) in res.shots and all(a >= 3 or z <= 3 for a, z in res.shots)  # a cut at frame 3


def test_cut_scores_separate_the_measured_motion_from_cuts():
    from gpen.faces.shots import CUT_THRESHOLD, cut_scores, find_shots

    # the threshold lies between the worst motion and the weakest cut measured (bench shots)
    rows = json.loads((REPO / "bench" / "results" / "cpu_shot_cuts.json").read_text())["rows"]
    summary = rows[0]
    assert summary["motion_max"] < CUT_THRESHOLD < summary["cut_min"]
    # and on pictures here: a pan and a brightness change are motion, another picture is a cut
    canvas = picture("chelsea", 300, 700)
    pan = [canvas[:, 40 * t:40 * t + 400] for t in range(4)]
    frames = batch(pan + [(pan[-1] * 0.8).astype(np.uint8), picture("rocket", 300, 400)])
    scores = cut_scores(frames)
    assert (scores[:4] < CUT_THRESHOLD).all() and scores[4] > CUT_THRESHOLD, scores
    assert find_shots(frames) == [(0, 5), (5, 6)]
    # frames of different sizes are different shots; an empty batch has none
    a = torch.from_numpy(canvas[:, :400].astype(np.float32) / 255)
    assert find_shots([a, a, a[:, :300]]) == [(0, 2), (2, 3)] and find_shots(torch.zeros(0, 8, 8, 3)) == []


def test_landmark_smoothing_stops_at_a_cut():
    portrait = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
    frames, given = [], []
    for t in range(6):  # the same place for 3 frames, a cut, another person 20 px away for 3 frames
        frame = portrait.copy() if t < 3 else picture("coffee", 512, 512)
        given.append((LM if t < 3 else paste_face(frame, 140, 60))[None])
        frames.append(frame)
    r = gpen.FaceRestorer(Darken(), size=64)
    for track in (None, False):  # with tracks, and with smoothing's own linking
        res = r.restore(batch(frames), given, temporal_smoothing=1.0, track_faces=track)
        for f in res.faces:  # still faces inside each shot: smoothing leaves them where they are
            np.testing.assert_allclose(f.landmarks, given[f.image_index][0], atol=1e-3)


# ---- filled faces only where the face is --------------------------------------------------------

def test_a_face_leaving_at_the_border_is_not_painted_there():
    frames, faces = [], []
    for t, x in enumerate([600, 620, 640, None, None, None, 640, 620]):  # steps out for frames 3-5
        frame = picture("chelsea", 512, 768)
        faces.append([] if x is None else [(paste_face(frame, x, 150), 0.95)])
        frames.append(frame)
    images = batch(frames)
    res = restorer(faces).restore(images)
    assert res.faces_per_image == [1, 1, 1, 0, 0, 0, 1, 1]
    for t in (3, 4, 5):
        assert torch.equal(res.images[t], images[t]), t
    assert res.shots == [(0, 8)]
    assert "3 gap(s) left empty" in res.info
    # a face only missed by the detector in the same clip is still filled
    frames[4] = frames[4].copy()
    lm = paste_face(frames[4], 640, 150)
    missed = [f if t != 4 else [] for t, f in enumerate(faces)]
    missed[3], missed[5] = [(paste_face(frames[3], 640, 150), 0.95)], [(paste_face(frames[5], 640, 150), 0.95)]
    res = restorer(missed).restore(batch(frames))
    assert res.faces_per_image == [1] * 8 and res.faces[4].interpolated
    np.testing.assert_allclose(res.faces[4].landmarks, lm, atol=1e-3)


# ---- false detections by evidence, fast faces ----------------------------------------------------

def test_a_face_seen_once_is_dropped_only_at_a_low_score():
    frames, faces = [], []
    for t in range(5):
        frame = picture("coffee", 512, 768)
        faces.append([(paste_face(frame, 40 + 30 * t, 100), 0.99)])
        frames.append(frame)
    once = paste_face(frames[2], 520, 250, 0.6)  # a second face in frame 2 only
    images = batch(frames)
    for score, kept in ((0.6, False), (0.99, True)):
        script = [list(f) for f in faces]
        script[2] = script[2] + [(once, score)]
        res = restorer(script).restore(images)
        assert res.faces_per_image == [1, 1, 1 + kept, 1, 1], score
        assert any(np.allclose(f.landmarks, once) for f in res.faces) == kept
    assert "1 detection(s) dropped (seen once, score < 0.9)" in restorer(
        [f if t != 2 else f + [(once, 0.6)] for t, f in enumerate(faces)]).restore(images).info
    # faces the user gives are never dropped
    given = [np.stack([lm for lm, _ in f]) for f in faces]
    given[2] = np.concatenate([given[2], once[None]])
    assert gpen.FaceRestorer(Darken(), size=64).restore(images, given).faces_per_image == [1, 1, 2, 1, 1]


def test_a_small_face_crossing_the_frame_fast_is_followed():
    canvas = picture("coffee", 400, 1400)
    frames, faces = [], []
    for t in range(5):  # the camera pans 30 px a frame, the face crosses 220 px a frame
        frame = canvas[:, 30 * t:30 * t + 1200].copy()
        lm = paste_face(frame, 30 + 220 * t, 150, scale=17 / 43.5)  # eyes 17 px apart
        faces.append([(lm, 0.8)])  # a fast, small face: a middling score
        frames.append(frame)
    res = restorer(faces).restore(batch(frames), face_selection="0")
    assert res.faces_per_image == [1] * 5 and {f.track for f in res.faces} == {0}
    assert res.shots == [(0, 5)]
    assert "1 track(s) restored: #0 frames 0-4" in res.info


# ---- natural file order, reference at the border ------------------------------------------------

def test_image_sequences_are_read_in_natural_order(tmp_path):
    from gpen.runs.cli import main
    from gpen.runs.imageio import list_inputs

    from test_cli_selection import MODEL_512, load, save, write_landmarks

    bg = picture("coffee", 320, 640)
    (tmp_path / "frames").mkdir()
    entries = {}
    for t in range(12):
        frame = bg.copy()
        entries[f"{t + 1}.png"] = [paste_face(frame, 20 + 30 * t, 60)]  # moving uniformly
        save(tmp_path / "frames" / f"{t + 1}.png", frame)
    write_landmarks(tmp_path / "lm.json", entries)
    args = ["--model", str(MODEL_512), "--landmarks", str(tmp_path / "lm.json")]
    assert main(["-q", "restore", str(tmp_path / "frames"), "-o", str(tmp_path / "seq"), "--track-faces",
                 "--temporal-smoothing", "1", *args]) == 0
    assert main(["-q", "restore", str(tmp_path / "frames"), "-o", str(tmp_path / "one"), *args]) == 0
    for t in range(12):  # uniform motion: smoothing in the right order leaves every face where it is
        seq, one = load(tmp_path / "seq" / f"{t + 1}.png"), load(tmp_path / "one" / f"{t + 1}.png")
        assert np.abs(seq.astype(int) - one).max() <= 2, t
    assert [p.name for p in list_inputs([tmp_path / "frames"])] == [f"{t + 1}.png" for t in range(12)]


def test_reference_compares_only_the_part_of_a_face_inside_the_frame():
    before = astronaut()[:, :, 240:]  # the face half out of the frame on the left (its left eye too)
    lm = LM - np.array([240.0, 0.0], np.float32)
    after = before + 0.3 * (swap_face(before, lm, other_face()) - before)  # a swap at 30 % strength
    r = gpen.FaceRestorer(Darken(), size=64)
    res = r.restore(after, [lm[None]], reference=before)
    assert len(res.faces) == 1, res.info
    # an untouched face half out of the frame is still left alone
    assert r.restore(before, [lm[None]], reference=before).faces == []


@pytest.mark.parametrize("landmarks_given", [False, True])
def test_a_one_frame_shot_keeps_every_face(landmarks_given):
    portrait = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
    images = batch([portrait])
    if landmarks_given:
        res = gpen.FaceRestorer(Darken(), size=64).restore(images, [LM[None]], track_faces=True)
    else:
        res = restorer([[(LM, 0.6)]]).restore(images, track_faces=True)
    assert res.faces_per_image == [1]
