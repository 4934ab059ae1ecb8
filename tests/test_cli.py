"""The command line: ``python -m gpen restore|download|info``."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from skimage.transform import SimilarityTransform

from gpen.faces.align import template_points
from gpen.runs.cli import main

from conftest import FIXTURES, REPO, SOLVAY, astronaut, landmarks_of, needs_solvay, psnr

MODEL_512 = FIXTURES / "reference" / "fixture_s512.pth"  # a narrow 512 px network: fast on CPU


def write_landmarks(path, entries: dict[str, np.ndarray]) -> None:
    images = {name: {"faces": [{"landmarks5": lm.tolist()} for lm in lms]} for name, lms in entries.items()}
    path.write_text(json.dumps({"images": images}))


def official_crop(bgr: np.ndarray, lm: np.ndarray, size: int = 512) -> np.ndarray:
    """The official crop recipe with an independent similarity fit (scikit-image's Umeyama)."""
    t = SimilarityTransform.from_estimate(lm.astype(np.float64), template_points("gpen", size))
    return cv2.warpAffine(bgr, t.params[:2], (size, size), flags=cv2.INTER_LINEAR)


def crops_psnr(out_dir, stem: str, bgr: np.ndarray, lms: np.ndarray) -> list[float]:
    scores = []
    for k, lm in enumerate(lms):
        ours = cv2.imread(str(out_dir / f"{stem}_face{k:02d}_crop.png"))
        ref = official_crop(bgr, lm)
        scores.append(psnr(torch.from_numpy(ours / 255.0), torch.from_numpy(ref / 255.0)))
    return scores


@needs_solvay
def test_crops_of_the_group_photo_match_the_official_crops(tmp_path):
    lms = landmarks_of("solvay_conference_1927.png")
    write_landmarks(tmp_path / "lm.json", {SOLVAY.name: lms})
    rc = main(["-q", "restore", str(SOLVAY), "--model", str(MODEL_512), "-o", str(tmp_path / "out"),
               "--landmarks", str(tmp_path / "lm.json"), "--save-crops", "--sort", "score"])
    assert rc == 0
    stem = SOLVAY.stem
    assert len(list((tmp_path / "out").glob(f"{stem}_face*_crop.png"))) == 29
    scores = crops_psnr(tmp_path / "out", stem, cv2.imread(str(SOLVAY)), lms)
    assert min(scores) >= 36.0, scores
    restored = cv2.imread(str(tmp_path / "out" / f"{stem}.png"))
    assert restored.shape == cv2.imread(str(SOLVAY)).shape


def test_restore_writes_images_and_crops(tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="gpen")
    img = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(src / name), img[:, :, ::-1])
    lm = landmarks_of("skimage.data.astronaut")
    write_landmarks(tmp_path / "lm.json", {"a.png": lm, "b.png": np.concatenate([lm, lm + 5])})
    rc = main(["restore", str(src), "--model", str(MODEL_512), "-o", str(tmp_path / "out"),
               "--landmarks", str(tmp_path / "lm.json"), "--save-crops", "--sort", "score", "--dtype", "bf16"])
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["a.png", "a_face00_crop.png", "b.png", "b_face00_crop.png", "b_face01_crop.png"]
    assert min(crops_psnr(tmp_path / "out", "a", img[:, :, ::-1].copy(), lm)) >= 40.0
    err = capsys.readouterr().err
    assert "restoring" in err  # progress bar over the files
    assert "2 image(s), 0 video(s) (0 frames), 3 face(s) restored" in caplog.text


@pytest.mark.parametrize("args, message", [
    (["restore", "/nonexistent.png", "--model", str(MODEL_512), "-o", "{tmp}/out"], "no such file"),
    (["restore", "{img}", "--model", "{tmp}/broken.pth", "-o", "{tmp}/out"], "truncated or corrupt file"),
    (["restore", "{tmp}/broken.pth", "--model", str(MODEL_512), "-o", "{tmp}/out"], "not a readable image"),
    (["restore", "{img}", "--model", str(MODEL_512), "-o", "{tmp}/out", "--landmarks", "{tmp}/broken.pth"],
     "not a landmarks file"),
    (["restore", "{img}", "--model", str(MODEL_512), "-o", "{tmp}"], "would overwrite the input"),
    (["restore", "{tmp}", "--model", str(MODEL_512), "-o", "{tmp}"], "is an input folder"),
    (["restore", "{img}", "--model", str(MODEL_512), "-o", "{tmp}/out", "--strength", "2"], "strength must be"),
    (["restore", "{img}", "--model", str(MODEL_512), "-o", "{tmp}/out", "--select", "x"], "face selection must"),
])
def test_bad_input_gives_exit_code_and_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setenv("GPEN_OFFLINE", "1")
    monkeypatch.setenv("GPEN_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04 not really a zip")
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((32, 32, 3), np.uint8))
    args = [a.format(tmp=tmp_path, img=tmp_path / "img.png") for a in args]
    rc = main(["-q", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


@pytest.mark.parametrize("args, name, folder", [
    (["restore", "{img}", "--model", "GPEN-BFR-1024", "-o", "{tmp}/out", "--no-download"], "GPEN-BFR-1024.pth",
     "{tmp}/models/facerestore_models"),
    (["download", "GPEN-BFR-2048", "--dir", "{tmp}/models"], "GPEN-BFR-2048.pth", "{tmp}/models"),
])
def test_missing_weights_say_the_folder_first_then_one_line_per_source(tmp_path, capsys, monkeypatch, args, name,
                                                                       folder):
    from gpen.weights.registry import REGISTRY

    monkeypatch.setenv("GPEN_OFFLINE", "1")
    monkeypatch.setenv("GPEN_MODELS_DIR", str(tmp_path / "models"))
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((32, 32, 3), np.uint8))
    rc = main(["-q", *[a.format(tmp=tmp_path, img=tmp_path / "img.png") for a in args]])
    err = capsys.readouterr().err.rstrip().splitlines()
    assert rc == 2 and err[0].startswith(f"error: {name} is missing") and folder.format(tmp=tmp_path) in err[0]
    assert [line.strip() for line in err[1:]] == list(REGISTRY[name].urls)  # each source once, on its own line


def test_missing_weights_message_names_file_and_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPEN_OFFLINE", "1")
    monkeypatch.setenv("GPEN_MODELS_DIR", str(tmp_path))
    assert main(["-q", "download", "GPEN-BFR-512"]) == 2
    err = capsys.readouterr().err
    assert "GPEN-BFR-512.pth" in err and str(tmp_path / "facerestore_models") in err


def test_module_entry_point_and_info():
    proc = subprocess.run([sys.executable, "-m", "gpen", "info", str(MODEL_512)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["size"] == 512 and info["style_dim"] == 64 and info["narrow"] == pytest.approx(1 / 16)


def test_rgba_and_16_bit_files_round_trip(tmp_path):
    from gpen.runs.imageio import read_image, write_image

    rgba = np.random.default_rng(0).integers(0, 65535, (20, 30, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "x.png"), rgba)
    img, bits = read_image(tmp_path / "x.png")
    assert bits == 16 and img.shape == (20, 30, 4)
    write_image(tmp_path / "y.png", img, bits)
    assert np.array_equal(cv2.imread(str(tmp_path / "y.png"), cv2.IMREAD_UNCHANGED), rgba)
    grey = np.arange(600, dtype=np.uint8).reshape(20, 30)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    g, bits = read_image(tmp_path / "g.png")
    assert bits == 8 and g.shape == (20, 30, 1)
    write_image(tmp_path / "g2.png", g)
    assert np.array_equal(cv2.imread(str(tmp_path / "g2.png"), cv2.IMREAD_UNCHANGED), grey)
