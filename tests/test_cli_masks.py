"""The command line's mask and output options: ``--regions``, ``--occlusion``, ``--upscale``."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from gpen.runs.cli import main

from conftest import FIXTURES, astronaut, landmarks_of

MODEL_512 = FIXTURES / "reference" / "fixture_s512.pth"  # a narrow 512 px network: fast on CPU


@pytest.fixture()
def photo(tmp_path):
    img = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img[:, :, ::-1])
    lm = landmarks_of("skimage.data.astronaut")
    (tmp_path / "lm.json").write_text(json.dumps({"images": {"a.png": {"faces": [{"landmarks5": lm[0].tolist()}]}}}))
    return tmp_path


def test_upscale_writes_a_bigger_picture(photo):
    rc = main(["-q", "restore", str(photo / "a.png"), "--model", str(MODEL_512), "-o", str(photo / "out"),
               "--landmarks", str(photo / "lm.json"), "--upscale", "2", "--save-crops"])
    assert rc == 0
    out = cv2.imread(str(photo / "out" / "a.png"))
    assert out.shape == (1024, 1024, 3)
    # far from the face the output is the resized input (bicubic; 8-bit rounding aside)
    src = cv2.imread(str(photo / "a.png"))
    ref = cv2.resize(src, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    corner = (slice(700, 1000), slice(40, 300))
    assert np.abs(out[corner].astype(int) - ref[corner].astype(int)).mean() < 3.0
    assert cv2.imread(str(photo / "out" / "a_face00_crop.png")).shape == (512, 512, 3)


@pytest.mark.parametrize("args, message", [
    (["--regions", "eyes"], "--parsing"),
    (["--parsing", "--regions", "eyes,beard"], "beard"),
    (["--occlusion", "xseg_2"], "xseg_2.onnx"),
])
def test_bad_mask_options_are_one_line_errors(photo, capsys, monkeypatch, args, message):
    monkeypatch.setenv("GPEN_OFFLINE", "1")
    monkeypatch.setenv("GPEN_MODELS_DIR", str(photo / "models"))
    rc = main(["-q", "restore", str(photo / "a.png"), "--model", str(MODEL_512), "-o", str(photo / "out"),
               "--landmarks", str(photo / "lm.json"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[0].startswith("error: ") and message in err[0]
    assert all(line.startswith("  https://") for line in err[1:])  # a missing file: then one line per source


def test_upscale_out_of_range_is_refused(photo, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["restore", str(photo / "a.png"), "--model", str(MODEL_512), "-o", str(photo / "out"), "--upscale", "5"])
    assert exc.value.code == 2 and "--upscale" in capsys.readouterr().err
