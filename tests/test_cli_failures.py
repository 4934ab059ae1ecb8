"""Failing well (issue 29): every bad argument or input gives exit code 2 and a short message that
says what to do, found before any face is restored; folder runs try every input; silent nonsense
gets a warning; the API raises gpen errors with the same messages."""

from __future__ import annotations

import struct
import sys
import zlib

import cv2
import numpy as np
import pytest
import torch

import gpen
from gpen.errors import GPENError, InvalidInputError
from gpen.pipeline.restorer import FaceRestorer
from gpen.runs.cli import main

from conftest import FIXTURES, astronaut, landmarks_of
from test_cli import write_landmarks

MODEL_512 = FIXTURES / "reference" / "fixture_s512.pth"


def huge_png_header(path, width: int = 70000, height: int = 70000) -> None:
    """A valid 4x4 PNG whose IHDR chunk (CRC fixed) claims ``width`` x ``height``."""
    data = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def run(capsys, *args) -> tuple[int, list[str]]:
    rc = main(["-q", *map(str, args)])
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("case, extra, message", [
    ("output is a file", ["-o", "{tmp}/file.txt"], "is a file"),
    ("output cannot be created", ["-o", "{tmp}/file.txt/sub"], "cannot create the output folder"),
    ("output cannot be written", ["-o", "/proc/self"], "cannot write into the output folder"),
    ("empty output", ["-o", ""], "output folder (-o) is empty"),
    ("unknown device", ["-o", "{tmp}/out", "--device", "tpu"], "unknown device 'tpu'"),
    ("threads", ["-o", "{tmp}/out", "--threads", "-2"], "--threads must be 1 or more"),
    ("chunk size", ["-o", "{tmp}/out", "--chunk-size", "-3"], "chunk size (faces per network call) must be >= 1"),
])
def test_bad_arguments_exit_2_before_any_face(tmp_path, capsys, no_restore, case, extra, message):
    if case == "output cannot be written" and not sys.platform.startswith("linux"):
        pytest.skip("/proc is Linux's")
    (tmp_path / "file.txt").write_text("x")
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), (astronaut()[0].numpy()[:, :, ::-1] * 255).astype(np.uint8))
    write_landmarks(tmp_path / "lm.json", {"img.png": landmarks_of("skimage.data.astronaut")})
    args = [a.format(tmp=tmp_path) for a in extra]
    rc, err = run(capsys, "restore", img, "--model", MODEL_512, "--landmarks", tmp_path / "lm.json", *args)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert "Traceback" not in err[0] and not no_restore
    assert (tmp_path / "file.txt").read_text() == "x" and not (tmp_path / "out" / "img.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys, no_restore):
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    rc, err = run(capsys, "restore", img, "--model", MODEL_512, "-o", tmp_path / "out", "--device", "cuda")
    assert rc == 2 and len(err) == 1 and "no CUDA GPU" in err[0] and "use cpu" in err[0] and not no_restore


def test_huge_png_header_is_refused_by_name(tmp_path, capsys, no_restore):
    huge_png_header(tmp_path / "huge.png")
    rc, err = run(capsys, "restore", tmp_path / "huge.png", "--model", MODEL_512, "-o", tmp_path / "out")
    assert rc == 2 and len(err) == 1 and "huge.png" in err[0] and "70000x70000" in err[0] and not no_restore


def test_a_folder_run_tries_every_input_and_names_each_failure(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    img = (astronaut()[0].numpy()[:, :, ::-1] * 255).astype(np.uint8)
    for name in ("a.png", "c.png", "e.png"):
        cv2.imwrite(str(src / name), img)
    (src / "b.png").write_bytes(b"not a picture")  # sorted before the good c.png and e.png
    huge_png_header(src / "d.png")
    lm = landmarks_of("skimage.data.astronaut")
    write_landmarks(tmp_path / "lm.json", {n: lm for n in ("a.png", "b.png", "c.png", "d.png", "e.png")})
    rc, err = run(capsys, "restore", src, "--model", MODEL_512, "-o", tmp_path / "out", "--landmarks",
                  tmp_path / "lm.json")
    assert rc == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png", "e.png"]
    assert [line.split(":")[0] for line in err[:2]] == ["error", "error"]
    assert "b.png" in err[0] and "not a readable image" in err[0]
    assert "d.png" in err[1] and "70000x70000" in err[1]
    assert len(err) == 3 and "2 input(s) failed" in err[2]


def test_q_is_accepted_after_the_command(tmp_path, capsys):
    rc = main(["info", str(MODEL_512), "-q"])
    assert rc == 0 and '"size": 512' in capsys.readouterr().out


def test_ctrl_c_stays_130(tmp_path, capsys, monkeypatch):
    import gpen.runs.runner as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "restore_files", interrupted)
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    rc, err = run(capsys, "restore", img, "--model", MODEL_512, "-o", tmp_path / "out")
    assert rc == 130 and err == ["error: interrupted"]


# ---- the API: gpen errors with the same messages ----------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(source=None), "load_model takes a weights file"),
    (dict(source=MODEL_512, dtype="fp8"), "unsupported dtype 'fp8'"),
    (dict(source=MODEL_512, device="tpu"), "unknown device 'tpu'"),
])
def test_load_model_refuses_bad_arguments_with_gpen_errors(kwargs, message):
    with pytest.raises(GPENError, match=message.replace("(", r"\(")):
        gpen.load_model(**kwargs)


def test_network_says_which_crop_size_it_takes():
    net = gpen.load_model(MODEL_512)
    with pytest.raises(InvalidInputError, match=r"GPEN-512 takes face crops \(batch, 3, 512, 512\)"):
        net(torch.zeros(1, 3, 256, 256))


def test_float_pixels_in_0_255_are_refused():
    net = gpen.load_model(MODEL_512)
    images = astronaut() * 255.0
    with pytest.raises(InvalidInputError, match="look like 0..255"):
        FaceRestorer(net).restore(images, [landmarks_of("skimage.data.astronaut")])


# ---- warnings for what used to pass silently ------------------------------------------------------

def test_selection_out_of_range_warns_with_a_hint(tmp_path, caplog):
    net = gpen.load_model(MODEL_512)
    one = [landmarks_of("skimage.data.astronaut")]
    with caplog.at_level("WARNING"):
        result = FaceRestorer(net).restore(astronaut(), one, face_selection="5")
    assert len(result.faces) == 0
    assert "face selection 5 picks no face" in caplog.text and "faces 0..0" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        FaceRestorer(net).restore(astronaut(), one, face_selection="-1")  # the last face: no warning
        assert "picks no face" not in caplog.text
        FaceRestorer(net).restore(astronaut(), one, face_selection="-30")
    assert "face selection -30 picks no face" in caplog.text


def test_landmarks_outside_the_image_warn(caplog):
    net = gpen.load_model(MODEL_512)
    far = landmarks_of("skimage.data.astronaut") + 4000  # another image's, or another scale's
    with caplog.at_level("WARNING"):
        FaceRestorer(net).restore(astronaut(), [far])
    assert "lie outside the 512x512 image" in caplog.text


# ---- what a person reads ------------------------------------------------------------------------

def test_one_image_shows_a_face_bar_and_each_summary_once(tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), (astronaut()[0].numpy()[:, :, ::-1] * 255).astype(np.uint8))
    write_landmarks(tmp_path / "lm.json", {"a.png": landmarks_of("skimage.data.astronaut")})
    rc = main(["restore", str(img), "--model", str(MODEL_512), "-o", str(tmp_path / "out"), "--landmarks",
               str(tmp_path / "lm.json")])
    assert rc == 0
    assert "a.png: 0%| | 0/1 [00:00<?, ?face/s]" in " ".join(capsys.readouterr().err.split())  # a bar over its 1 face
    said = [r.getMessage() for r in caplog.records]
    assert sum("face(s) restored" in m for m in said) == 2, said  # the image's line, then the run's
    assert "a.png: 1 face(s) restored" in said


def test_load_model_finds_a_released_name_where_the_command_line_does(tmp_path, monkeypatch):
    import shutil

    from gpen.errors import MissingWeightsError

    monkeypatch.setenv("GPEN_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("GPEN_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # not where the file is
    with pytest.raises(MissingWeightsError, match=str(tmp_path / "models" / "facerestore_models")):
        gpen.load_model("GPEN-BFR-512.pth")
    (tmp_path / "models" / "facerestore_models").mkdir(parents=True)
    shutil.copy(MODEL_512, tmp_path / "models" / "facerestore_models" / "GPEN-BFR-512.pth")
    for name in ("GPEN-BFR-512.pth", "GPEN-BFR-512"):
        assert gpen.load_model(name).size == 512


def test_float_pixels_a_resampler_rings_past_1_are_accepted():
    """Lanczos upscaling of 0..1 pictures overshoots 1.0 (1.45 at most in
    bench/results/float_range_overshoot.json); such a batch is still 0..1 input, not 0..255."""
    import json
    from pathlib import Path

    from gpen.pipeline.frames import check_images

    rows = json.loads((Path(__file__).resolve().parents[1] / "bench" / "results" / "float_range_overshoot.json")
                      .read_text())["rows"]
    worst = max(r["max"] for r in rows)
    check_images(torch.full((1, 8, 8, 3), worst))
    with pytest.raises(InvalidInputError, match="look like 0..255"):
        check_images(torch.full((1, 8, 8, 3), 255.0))


def test_missing_detector_weights_end_a_folder_run_with_one_message(tmp_path, capsys, monkeypatch):
    """Not about one input: said once (the folder to put the file in first), not once per input."""
    monkeypatch.setenv("GPEN_OFFLINE", "1")
    monkeypatch.setenv("GPEN_MODELS_DIR", str(tmp_path / "models"))
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(src / name), (astronaut()[0].numpy()[:, :, ::-1] * 255).astype(np.uint8))
    rc, err = run(capsys, "restore", src, "--model", MODEL_512, "-o", tmp_path / "out")
    assert rc == 2 and sum("is missing" in line for line in err) == 1
    assert err[0].startswith("error: detection_Resnet50_Final.pth is missing") and "facedetection" in err[0]
