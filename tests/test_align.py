"""Alignment geometry against the official GPEN matrices and against cv2.warpAffine."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gpen.faces.align import estimate_similarity, invert_affine, template_points, warp_affine
from gpen.errors import InvalidInputError

from conftest import SOLVAY, needs_solvay, psnr, landmarks_of
from conftest import astronaut as astronaut_tensor

GEOMETRY = Path(__file__).resolve().parent / "fixtures" / "geometry"


def alignment_reference() -> dict:
    return json.loads((GEOMETRY / "alignment.json").read_text())


def face_landmarks(image: str) -> np.ndarray:
    return landmarks_of(image, np.float64)


def astronaut() -> np.ndarray:
    return astronaut_tensor()[0].numpy()


def cv2_crops(img: np.ndarray, mats: np.ndarray, size: int) -> np.ndarray:
    return np.stack([cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) for m in mats])


def our_crops(img: np.ndarray, mats: np.ndarray, size, dtype=torch.float32) -> np.ndarray:
    t = torch.from_numpy(img).permute(2, 0, 1)[None].to(dtype)
    out = warp_affine(t, torch.from_numpy(mats), torch.zeros(len(mats), dtype=torch.long), size)
    assert out.dtype == dtype
    return out.float().permute(0, 2, 3, 1).numpy()


# --- templates -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [256, 512, 1024, 2048])
def test_gpen_template_matches_official_at_every_size(size):
    expected = np.asarray(alignment_reference()["gpen_template"][str(size)])
    got = template_points("gpen", size)
    assert got.shape == (5, 2) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_ffhq_template_is_facexlibs():
    expected = np.asarray(alignment_reference()["ffhq_template_512_facexlib"])
    np.testing.assert_allclose(template_points("ffhq", 512), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(template_points("ffhq", 1024), 2 * expected, rtol=1e-12)


def test_template_is_a_fresh_array():
    a = template_points()
    a[:] = 0
    assert template_points().min() > 100


@pytest.mark.parametrize("name, size", [("arcface", 512), ("GPEN ", 512), ("gpen", 0), ("gpen", 3.5)])
def test_template_bad_arguments(name, size):
    with pytest.raises(InvalidInputError):
        template_points(name, size)


# --- similarity ------------------------------------------------------------------------------


def test_similarity_matches_official_forward_matrices():
    ref = alignment_reference()
    tmpl = template_points("gpen", 512)
    for case in ref["similarity_cases"]:
        assert case["crop_size"] == 512
        got = estimate_similarity(np.asarray(case["landmarks5"]), tmpl)
        want = np.asarray(case["forward_2x3"])
        assert got.shape == (2, 3)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_similarity_is_vectorised_over_faces():
    cases = alignment_reference()["similarity_cases"]
    lms = np.asarray([c["landmarks5"] for c in cases])
    got = estimate_similarity(lms, template_points())
    assert got.shape == (len(cases), 2, 3)
    for k, c in enumerate(cases):
        np.testing.assert_allclose(got[k], np.asarray(c["forward_2x3"]), rtol=1e-9, atol=1e-7)
    # torch landmarks are accepted too
    np.testing.assert_allclose(estimate_similarity(torch.from_numpy(lms).float(), template_points()), got, rtol=1e-5, atol=1e-3)


def test_similarity_recovers_an_exact_similarity():
    rng = np.random.default_rng(0)
    tmpl = template_points("gpen", 512)
    for _ in range(5):
        ang, sc = rng.uniform(-np.pi, np.pi), rng.uniform(0.05, 8.0)
        rot = sc * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        shift = rng.uniform(-3000, 3000, 2)
        lms = tmpl @ rot.T + shift  # the face in an image, exactly similar to the template
        m = estimate_similarity(lms, tmpl)
        np.testing.assert_allclose(lms @ m[:, :2].T + m[:, 2], tmpl, atol=1e-8)


def test_similarity_excludes_reflection():
    tmpl = template_points()
    mirrored = tmpl * np.array([-1.0, 1.0])  # a mirror image cannot be reached by a similarity
    m = estimate_similarity(mirrored, tmpl)
    assert np.linalg.det(m[:, :2]) > 0


def test_similarity_bad_inputs():
    tmpl = template_points()
    with pytest.raises(InvalidInputError, match="same place"):
        estimate_similarity(np.ones((5, 2)) * 7, tmpl)
    with pytest.raises(InvalidInputError):
        estimate_similarity(np.ones((4, 2)), tmpl)
    with pytest.raises(InvalidInputError):
        estimate_similarity(np.full((5, 2), np.nan), tmpl)
    with pytest.raises(InvalidInputError):
        estimate_similarity(np.ones((2, 5, 3)), tmpl)


def test_invert_affine_matches_official_inverse():
    cases = alignment_reference()["similarity_cases"]
    fwd = np.asarray([c["forward_2x3"] for c in cases])
    inv = np.asarray([c["inverse_2x3"] for c in cases])
    np.testing.assert_allclose(invert_affine(fwd), inv, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(invert_affine(fwd[0]), inv[0], rtol=1e-9, atol=1e-9)
    t = invert_affine(torch.from_numpy(fwd))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    np.testing.assert_allclose(t.numpy(), inv, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(invert_affine(invert_affine(fwd)), fwd, rtol=1e-9, atol=1e-9)
    with pytest.raises(InvalidInputError, match="singular"):
        invert_affine(np.zeros((2, 3)))


# --- warp ------------------------------------------------------------------------------------


def test_warp_matches_cv2_on_astronaut():
    img = astronaut()
    mats = estimate_similarity(face_landmarks("skimage.data.astronaut"), template_points("gpen", 512))
    ours, ref = our_crops(img, mats, 512), cv2_crops(img, mats, 512)
    assert np.abs(ours - ref).max() < 1 / 255
    assert psnr(ours, ref) >= 50


@needs_solvay
@pytest.mark.parametrize("size", [256, 512])
def test_warp_matches_cv2_on_solvay_faces(size):
    bgr = cv2.imread(str(SOLVAY), cv2.IMREAD_COLOR)
    img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    lms = face_landmarks("solvay_conference_1927.png")
    assert len(lms) == 29
    mats = estimate_similarity(lms, template_points("gpen", size))
    ours, ref = our_crops(img, mats, size), cv2_crops(img, mats, size)
    per_face = [psnr(ours[k], ref[k]) for k in range(len(mats))]
    max_diff = float(np.abs(ours - ref).max())
    print(f"solvay {size}px: min PSNR {min(per_face):.1f} dB, max |diff| {max_diff * 255:.4f}/255")
    assert min(per_face) >= 50  # the task floor is 36 dB; measured about 105 dB at 512
    assert max_diff < 1 / 255


def test_warp_faces_across_the_border_and_non_square_sizes():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.random((90, 140, 3), dtype=np.float32), (0, 0), 1.5)
    mats = []
    for _ in range(6):
        ang, sc = rng.uniform(-1, 1), rng.uniform(0.5, 3)
        inv = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0]]) / sc
        inv[:, 2] = rng.uniform(-40, 150, 2)  # crop origin somewhere around (and outside) the image
        mats.append(invert_affine(inv))
    mats = np.asarray(mats)
    ours = our_crops(img, mats, (48, 80))
    ref = np.stack([cv2.warpAffine(img, m, (80, 48), flags=cv2.INTER_LINEAR) for m in mats])
    assert ours.shape == (6, 48, 80, 3)
    assert (ref == 0).any()  # the border is really crossed
    assert np.abs(ours - ref).max() < 4 / 255  # cv2 rounds positions to 1/32 px; blurred noise has steep gradients
    assert psnr(ours, ref) >= 45


def test_warp_batches_faces_of_several_images():
    rng = np.random.default_rng(2)
    imgs = rng.random((3, 3, 60, 70), dtype=np.float32)
    mats = np.asarray([invert_affine(np.array([[0.5, 0.1, rng.uniform(0, 30)], [-0.1, 0.5, rng.uniform(0, 30)]])) for _ in range(5)])
    index = torch.tensor([2, 0, 2, 1, 0])
    before = torch.from_numpy(imgs.copy())
    images = torch.from_numpy(imgs)
    mats_t = torch.from_numpy(mats).float()
    out = warp_affine(images, mats_t, index, 32)
    assert torch.equal(images, before)  # input untouched
    for k in range(5):
        single = warp_affine(images[index[k] : index[k] + 1], mats_t[k : k + 1], None, 32)
        torch.testing.assert_close(out[k], single[0], rtol=0, atol=1e-6)
        ref = cv2.warpAffine(np.ascontiguousarray(imgs[index[k]].transpose(1, 2, 0)), mats[k], (32, 32), flags=cv2.INTER_LINEAR)
        assert psnr(out[k].permute(1, 2, 0).numpy(), ref) >= 40


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2), (torch.float64, 5e-5)])
def test_warp_reduced_precision_keeps_positions_exact(dtype, tol):
    # positions are computed in float32 even for half inputs: only the pixel values lose precision
    img = cv2.resize(astronaut(), (1600, 1600), interpolation=cv2.INTER_LINEAR)
    mats = estimate_similarity(face_landmarks("skimage.data.astronaut") * 1600 / 512, template_points("gpen", 256))
    ref = our_crops(img, mats, 256)
    low = our_crops(img, mats, 256, dtype=dtype)
    assert np.abs(low - ref).max() <= tol


def test_warp_bad_inputs():
    img = torch.zeros(1, 3, 10, 10)
    m = torch.eye(2, 3)[None]
    with pytest.raises(InvalidInputError):
        warp_affine(torch.zeros(3, 10, 10), m, None, 8)
    with pytest.raises(InvalidInputError):
        warp_affine(img.to(torch.uint8), m, None, 8)
    with pytest.raises(InvalidInputError):
        warp_affine(img, torch.eye(3)[None], None, 8)
    with pytest.raises(InvalidInputError):
        warp_affine(img, m, torch.tensor([1]), 8)
    with pytest.raises(InvalidInputError):
        warp_affine(img, m, None, 0)
    with pytest.raises(InvalidInputError):
        warp_affine(torch.zeros(2, 3, 10, 10), m, None, 8)  # which image is the face from?
    assert warp_affine(img, torch.zeros(0, 2, 3), None, 8).shape == (0, 3, 8, 8)


def test_matrices_stay_float32_on_devices_without_float64(monkeypatch):
    """MPS has no float64: warp_affine must never put a float64 matrix on such a device (the
    device check is simulated on the CPU)."""
    import gpen.faces.align as align

    assert align.supports_float64("cpu") and not align.supports_float64(torch.device("mps"))
    assert align.matrix_dtype(torch.device("mps")) == torch.float32
    real_invert = align.invert_affine

    def no_float64_on_device(m):
        if isinstance(m, torch.Tensor):
            assert m.dtype != torch.float64, "a float64 matrix reached the (simulated MPS) device"
        return real_invert(m)

    img = torch.rand(2, 3, 40, 50)
    mats = torch.tensor([[[1.1, 0.1, -3.0], [-0.1, 1.1, 2.0]], [[0.9, 0.0, 1.0], [0.0, 0.9, -1.0]]],
                        dtype=torch.float64)
    expected = warp_affine(img, mats, torch.tensor([0, 1]), 32)
    monkeypatch.setattr(align, "supports_float64", lambda device: False)
    monkeypatch.setattr(align, "invert_affine", no_float64_on_device)
    got = align.warp_affine(img, mats, torch.tensor([0, 1]), 32)
    assert (got - expected).abs().max() <= 1e-5
