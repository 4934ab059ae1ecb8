"""The command line's face choice: ``--reference`` (only swapped faces) and ``--track-faces`` (frames)."""

from __future__ import annotations

import json

import cv2
import numpy as np

from gpen.runs.cli import main

from conftest import FIXTURES, astronaut, landmarks_of

MODEL_512 = FIXTURES / "reference" / "fixture_s512.pth"  # a narrow 512 px network: fast on CPU
LM = landmarks_of("skimage.data.astronaut")[0]


def write_landmarks(path, entries: dict) -> None:
    images = {name: {"faces": [{"landmarks5": np.asarray(lm).tolist()} for lm in lms]} for name, lms in entries.items()}
    path.write_text(json.dumps({"images": images}))


def save(path, rgb: np.ndarray) -> None:
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


def load(path) -> np.ndarray:
    return cv2.imread(str(path))[:, :, ::-1]


def test_reference_file_or_folder_restores_only_the_swapped_face(tmp_path):
    face = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
    before = np.concatenate([face, face], axis=1)  # two faces
    after = before.copy()
    after[60:260, 512 + 120:512 + 320] = after[60:260, 512 + 120:512 + 320][:, ::-1] // 2  # "swapped"
    (tmp_path / "in").mkdir()
    (tmp_path / "before").mkdir()
    save(tmp_path / "in" / "pic.png", after)
    save(tmp_path / "before" / "pic.png", before)
    write_landmarks(tmp_path / "lm.json", {"pic.png": [LM, LM + [512.0, 0.0]]})
    for ref in (tmp_path / "before" / "pic.png", tmp_path / "before"):
        out = tmp_path / f"out_{ref.name}"
        assert main(["-q", "restore", str(tmp_path / "in" / "pic.png"), "--model", str(MODEL_512), "-o", str(out),
                     "--landmarks", str(tmp_path / "lm.json"), "--reference", str(ref)]) == 0
        restored = load(out / "pic.png")
        assert np.array_equal(restored[:, :512], after[:, :512])  # the face the swap left alone: untouched
        assert np.abs(restored[60:260, 632:832].astype(int) - after[60:260, 632:832]).mean() > 2
    missing = tmp_path / "elsewhere"
    missing.mkdir()
    assert main(["-q", "restore", str(tmp_path / "in" / "pic.png"), "--model", str(MODEL_512), "-o",
                 str(tmp_path / "x"), "--landmarks", str(tmp_path / "lm.json"), "--reference", str(missing)]) == 2


def test_track_faces_follows_one_person_through_frames(tmp_path):
    img = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
    patch = img[60:260, 120:320]
    (tmp_path / "frames").mkdir()
    entries, a_places = {}, []
    for t in range(4):
        frame = np.full((520, 900, 3), 128, np.uint8)
        ax, bx = 40 + 200 * t, 660 - 200 * t  # A walks right on top, B left below: they change order
        frame[20:220, ax:ax + 200] = patch
        frame[300:500, bx:bx + 200] = patch
        save(tmp_path / "frames" / f"f{t}.png", frame)
        a = LM + [ax - 120.0, -40.0]
        b = LM + [bx - 120.0, 240.0]
        entries[f"f{t}.png"] = [b, a] if t % 2 else [a, b]
        a_places.append((ax, frame))
    entries["f2.png"] = [lm for lm in entries["f2.png"] if lm[0, 1] > 200]  # A missed in frame 2
    write_landmarks(tmp_path / "lm.json", entries)
    out = tmp_path / "out"
    assert main(["-q", "restore", str(tmp_path / "frames"), "--model", str(MODEL_512), "-o", str(out),
                 "--landmarks", str(tmp_path / "lm.json"), "--track-faces", "--select", "0"]) == 0
    for t, (ax, frame) in enumerate(a_places):
        restored = load(out / f"f{t}.png")
        assert np.array_equal(restored[280:], frame[280:]), t  # B's row: never restored
        assert np.abs(restored[40:200, ax + 20:ax + 180].astype(int) - frame[40:200, ax + 20:ax + 180]).mean() > 2, t


def test_bad_tracking_option_fails_before_the_model_is_loaded(tmp_path, capsys):
    save(tmp_path / "a.png", np.zeros((32, 32, 3), np.uint8))
    rc = main(["restore", str(tmp_path / "a.png"), "--model", "no-such-model", "-o", str(tmp_path / "o"),
               "--max-gap", "-1"])
    assert rc == 2 and "max_gap" in capsys.readouterr().err
