"""The command line's files: EXIF orientation, output names that never collide or replace an input,
landmarks files read as UTF-8 whatever the locale (issue 19, point 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from gpen.runs.cli import main
from gpen.runs.imageio import read_image

from conftest import FIXTURES, REPO, astronaut, landmarks_of
from test_cli import crops_psnr, write_landmarks

MODEL_512 = FIXTURES / "reference" / "fixture_s512.pth"

# What a viewer does to the stored pixels for each EXIF orientation (the inverse is how a camera stores them).
STORE = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
         5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, 1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
         8: lambda a: np.rot90(a, -1)}


def save_with_orientation(path, upright_rgb: np.ndarray, orientation: int, quality: int = 95) -> None:
    """Store ``upright_rgb`` as a camera does: pixels turned, plus the EXIF tag that turns them back."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(STORE[orientation](upright_rgb))).save(path, quality=quality,
                                                                               exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_opencv_and_viewers_do(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    upright = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    upright[:4, :6] = 255  # a bright corner marks top-left
    path = tmp_path / f"o{orientation}.jpg"
    save_with_orientation(path, upright, orientation)
    got, bits = read_image(path)
    # OpenCV's default read applies the EXIF orientation: an independent oracle on the same decoder
    want = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1] / 255.0
    assert bits == 8 and got.shape == (24, 40, 3)
    assert np.array_equal(got.numpy(), want.astype(np.float32))
    assert got[:4, :6].mean() > 0.9  # the marked corner is top-left again


def test_phone_portrait_is_restored_upright(tmp_path):
    """A photo stored sideways with orientation 6: the faces are found where the upright picture has
    them, and the output is written upright."""
    upright = (astronaut()[0].numpy() * 255).round().astype(np.uint8)[:, :400]  # portrait-ish 512 x 400
    path = tmp_path / "in" / "portrait.jpg"
    path.parent.mkdir()
    save_with_orientation(path, upright, 6)
    lm = landmarks_of("skimage.data.astronaut")
    write_landmarks(tmp_path / "lm.json", {"portrait.jpg": lm})
    rc = main(["-q", "restore", str(path), "--model", str(MODEL_512), "-o", str(tmp_path / "out"),
               "--landmarks", str(tmp_path / "lm.json"), "--save-crops"])
    assert rc == 0
    out = cv2.imread(str(tmp_path / "out" / "portrait.png"))
    viewed = cv2.imread(str(path), cv2.IMREAD_COLOR)  # upright, as a viewer shows it
    assert out.shape == viewed.shape == (512, 400, 3)
    assert min(crops_psnr(tmp_path / "out", "portrait", viewed, lm)) >= 36.0


def _no_faces(path, names) -> None:
    path.write_text(json.dumps({"images": {n: {"faces": []} for n in names}}))


def test_same_stem_different_suffix_gets_two_outputs(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    png = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    jpg = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(src / "a.png"), png)
    cv2.imwrite(str(src / "a.jpg"), jpg)
    cv2.imwrite(str(src / "b.png"), png)
    _no_faces(tmp_path / "lm.json", ["a.png", "a.jpg", "b.png"])
    rc = main(["-q", "restore", str(src), "--model", str(MODEL_512), "-o", str(tmp_path / "out"),
               "--landmarks", str(tmp_path / "lm.json")])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_jpg.png", "a_png.png", "b.png"]
    # no faces: each output is its own input, unchanged
    assert np.array_equal(cv2.imread(str(tmp_path / "out" / "a_png.png")), png)
    assert np.array_equal(cv2.imread(str(tmp_path / "out" / "a_jpg.png")), cv2.imread(str(src / "a.jpg")))


def test_two_folders_with_the_same_name_are_refused(tmp_path, capsys):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        cv2.imwrite(str(tmp_path / d / "a.png"), np.zeros((8, 8, 3), np.uint8))
    rc = main(["-q", "restore", str(tmp_path / "x"), str(tmp_path / "y"), "--model", str(MODEL_512),
               "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "would both be written as" in err
    assert not (tmp_path / "out").exists()


def test_output_folder_equal_to_the_input_folder_never_touches_originals(tmp_path, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(src / "a.png")  # Pillow's bytes, not OpenCV's
    before = (src / "a.png").read_bytes()
    _no_faces(tmp_path / "lm.json", ["a.png"])
    rc = main(["-q", "restore", str(src), "--model", str(MODEL_512), "-o", str(src),
               "--landmarks", str(tmp_path / "lm.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "is an input folder" in err
    assert (src / "a.png").read_bytes() == before
    assert sorted(p.name for p in src.iterdir()) == ["a.png"]
    # the same folder reached another way (a relative path) is the same folder
    monkeypatch.chdir(tmp_path)
    rc = main(["-q", "restore", "in/a.png", "--model", str(MODEL_512), "-o", "./in/../in",
               "--landmarks", str(tmp_path / "lm.json")])
    assert rc == 2 and "would overwrite the input" in capsys.readouterr().err
    assert (src / "a.png").read_bytes() == before


def test_landmarks_file_is_utf8_whatever_the_locale(tmp_path):
    """A landmarks file written by another tool, with non-ASCII text in it, read by a process whose
    locale is plain ASCII (the C locale, no UTF-8 mode; on Windows it would be cp1252)."""
    img = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img[:, :, ::-1])
    lm = landmarks_of("skimage.data.astronaut")
    data = {"source": "Détecteur — caméra «rue»", "images": {"a.png": {"faces": [{"landmarks5": lm[0].tolist(),
                                                                                   "label": "Zoë"}]}}}
    (tmp_path / "lm.json").write_bytes(json.dumps(data, ensure_ascii=False).encode("utf-8"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8", "PYTHONIOENCODING"))}
    env.update(LC_ALL="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "gpen", "-q", "restore", str(tmp_path / "a.png"), "--model",
                           str(MODEL_512), "-o", str(tmp_path / "out"), "--landmarks", str(tmp_path / "lm.json")],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = cv2.imread(str(tmp_path / "out" / "a.png"))
    assert out.shape == img.shape and not np.array_equal(out, img[:, :, ::-1])  # the face was restored


def test_a_file_given_twice_is_restored_once_under_its_plain_name(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.zeros((8, 8, 3), np.uint8))
    _no_faces(tmp_path / "lm.json", ["a.png"])
    rc = main(["-q", "restore", str(src), str(src / "a.png"), "--model", str(MODEL_512), "-o", str(tmp_path / "out"),
               "--landmarks", str(tmp_path / "lm.json")])
    assert rc == 0 and [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]
