"""FaceRestorer: the whole-image pipeline (faces -> crops -> restorer -> paste-back)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gpen
from gpen.faces.align import estimate_similarity, template_points
from gpen.faces.detect import Detections, FaceDetector
from gpen.errors import InvalidInputError
from gpen.model.network import GPENConfig
from gpen.model.layouts import seeded_state_dict

from conftest import astronaut, landmarks_of, needs_solvay, psnr, solvay


def identity(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


class Darken:
    """A restorer that visibly changes faces (to see where they went)."""

    calls: list[int]

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return x * 0.5 - 0.5


def box_psnr(a: torch.Tensor, b: torch.Tensor, faces) -> list[float]:
    out = []
    for f in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in f.box)
        out.append(psnr(a[f.image_index, y0:y1, x0:x1], b[f.image_index, y0:y1, x0:x1]))
    return out


@needs_solvay
def test_identity_restorer_on_the_group_photo():
    img = solvay()
    lms = landmarks_of("solvay_conference_1927.png")
    res = gpen.FaceRestorer(identity, size=512).restore(img, [lms])
    assert len(res.faces) == 29 and res.faces_per_image == [29]
    outside = res.masks[0] == 0
    assert outside.any() and (res.images[0][outside] - img[0][outside]).abs().max() <= 1e-6
    scores = box_psnr(res.images, img, res.faces)
    assert min(scores) >= 45.0, scores
    assert res.crops.shape == (29, 512, 512, 3)


def test_identity_restorer_on_astronaut_and_input_untouched():
    img = astronaut()
    before = img.clone()
    res = gpen.FaceRestorer(identity, size=512).restore(img, [landmarks_of("skimage.data.astronaut")])
    assert torch.equal(img, before)
    assert torch.equal(res.images[0][res.masks[0] == 0], img[0][res.masks[0] == 0])
    assert box_psnr(res.images, img, res.faces)[0] >= 40.0  # sharp face upscaled 2.4x: 42.2 dB, as official


def test_crops_equal_opencv_warp():
    import cv2

    img = astronaut()
    lms = landmarks_of("skimage.data.astronaut")
    res = gpen.FaceRestorer(identity, size=512).restore(img, [lms], keep_crops="aligned")
    m = estimate_similarity(lms[0], template_points("gpen", 512))
    ref = cv2.warpAffine(img[0].numpy(), m, (512, 512), flags=cv2.INTER_LINEAR)
    assert psnr(res.crops[0], torch.from_numpy(ref)) >= 50.0
    assert np.allclose(res.faces[0].affine, m, atol=1e-4)


def test_no_faces_passes_the_image_through():
    img = torch.rand(2, 64, 80, 3)
    calls = Darken()
    res = gpen.FaceRestorer(calls, size=64).restore(img, [np.zeros((0, 5, 2)), None])
    assert torch.equal(res.images, img) and res.images is not img
    assert res.masks.shape == (2, 64, 80) and res.masks.abs().sum() == 0
    assert res.faces == [] and res.crops.shape[0] == 0 and calls.calls == []
    assert "no faces found" in res.info


def test_only_selected_faces_change():
    img = astronaut()
    lm = landmarks_of("skimage.data.astronaut")[0]
    shifted = lm + np.array([300.0, 250.0], dtype=np.float32)  # a second, fake face lower right
    small = (lm - lm.mean(0)) * 0.5 + lm.mean(0) + np.array([-120.0, 260.0], dtype=np.float32)
    faces = np.stack([shifted, lm, small])
    r = gpen.FaceRestorer(Darken(), size=128)
    all_ = r.restore(img, [faces])
    assert [round(float(f.box[0])) for f in all_.faces] == sorted(round(float(f.box[0])) for f in all_.faces)
    largest = r.restore(img, [faces], face_selection="largest")
    assert len(largest.faces) == 1 and np.allclose(largest.faces[0].landmarks, faces[np.argmax(
        [np.ptp(f[:, 0]) for f in faces])])
    picked = r.restore(img, [faces], face_selection="0,2")
    assert [f.landmarks[0, 0] for f in picked.faces] == [all_.faces[0].landmarks[0, 0], all_.faces[2].landmarks[0, 0]]
    big_first = r.restore(img, [faces], sort="largest-first", face_selection=[0])
    assert np.allclose(big_first.faces[0].landmarks, largest.faces[0].landmarks)
    sides = sorted(float(min(f.box[2] - f.box[0], f.box[3] - f.box[1])) for f in all_.faces)
    sized = r.restore(img, [faces], min_face_size=(sides[0] + sides[1]) / 2)
    assert len(sized.faces) == 2 and not any(np.allclose(f.landmarks, small) for f in sized.faces)
    # a mask over the upper left keeps only the original face
    mask = torch.zeros(1, 512, 512)
    mask[:, :260, :300] = 1
    masked = r.restore(img, [faces], mask=mask)
    assert len(masked.faces) == 1 and np.allclose(masked.faces[0].landmarks, lm)
    # unselected faces: unchanged pixels
    x0, y0, x1, y1 = (int(v) for v in all_.faces[-1].box)
    assert not torch.equal(all_.images[0, y0:y1, x0:x1], img[0, y0:y1, x0:x1])
    assert torch.equal(masked.images[0][masked.masks[0] == 0], img[0][masked.masks[0] == 0])
    with pytest.raises(InvalidInputError, match="indices like"):
        r.restore(img, [faces], face_selection="first")


def test_faces_of_all_images_are_restored_together():
    img = astronaut().repeat(3, 1, 1, 1)
    lm = landmarks_of("skimage.data.astronaut")
    calls = Darken()
    res = gpen.FaceRestorer(calls, size=64).restore(img, [lm, lm, lm], chunk_size=8)
    assert calls.calls == [3]
    assert [f.image_index for f in res.faces] == [0, 1, 2]
    calls.calls.clear()
    gpen.FaceRestorer(calls, size=64).restore(img, [lm, lm, lm], chunk_size=2)
    assert calls.calls == [2, 1]


def test_batch_equals_single_images():
    net = gpen.load_model(seeded_state_dict(GPENConfig(size=64, style_dim=32, n_mlp=2, narrow=0.0625), seed=4))
    img = torch.cat([astronaut(), astronaut().flip(2)])
    lm = landmarks_of("skimage.data.astronaut")
    lm_flipped = lm.copy()
    lm_flipped[..., 0] = 511 - lm[..., 0]
    lm_flipped = lm_flipped[:, [1, 0, 2, 4, 3]]
    r = gpen.FaceRestorer(net)
    both = r.restore(img, [lm, lm_flipped])
    one = r.restore(img[1:], [lm_flipped])
    assert (both.images[1] - one.images[0]).abs().max() <= 1e-5


def test_strength_zero_and_colour_correction():
    img = astronaut()
    lm = [landmarks_of("skimage.data.astronaut")]
    r = gpen.FaceRestorer(Darken(), size=512)
    zero = r.restore(img, lm, strength=0.0)
    assert box_psnr(zero.images, img, zero.faces)[0] >= 40.0
    half = r.restore(img, lm, strength=0.5)
    full = r.restore(img, lm)
    # the mix is linear in strength
    assert torch.allclose(half.images, (zero.images + full.images) / 2, atol=2e-6)
    fixed = r.restore(img, lm, color_correction=True)
    inside = full.masks[0] > 0.99
    ref_mean = img[0][inside].mean(0)
    assert (fixed.images[0][inside].mean(0) - ref_mean).abs().max() < 0.03
    assert (full.images[0][inside].mean(0) - ref_mean).abs().max() > 0.2


def test_rgba_grey_tiny_and_huge_images():
    lm = landmarks_of("skimage.data.astronaut")
    r = gpen.FaceRestorer(Darken(), size=128)
    rgba = torch.cat([astronaut(), torch.rand(1, 512, 512, 1)], dim=-1)
    out = r.restore(rgba, [lm])
    assert out.images.shape == rgba.shape and torch.equal(out.images[..., 3], rgba[..., 3])
    grey = astronaut().mean(-1, keepdim=True)
    g = r.restore(grey, [lm])
    assert g.images.shape == grey.shape
    assert torch.equal(g.images[0][g.masks[0] == 0], grey[0][g.masks[0] == 0])
    assert (g.images - grey).abs().max() > 0.1
    one = torch.rand(1, 1, 1, 3)
    assert torch.equal(r.restore(one, [None]).images, one)
    big = torch.zeros(1, 4320, 7680, 3)
    big[0, 1000:1512, 3000:3512] = astronaut()[0]
    res = r.restore(big, [lm + np.array([3000, 1000], dtype=np.float32)])
    assert res.masks[0, :1000].sum() == 0 and res.masks[0, 1100:1400, 3200:3400].max() > 0.99


def test_nan_input_is_refused():
    img = astronaut()
    img[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN"):
        gpen.FaceRestorer(identity, size=64).restore(img, [None])


def test_detector_path_with_a_pluggable_backend():
    img = astronaut()
    lm = landmarks_of("skimage.data.astronaut")
    seen = []

    def backend(images, threshold):
        seen.append((tuple(images.shape), threshold))
        box = np.array([[lm[0, :, 0].min() - 30, lm[0, :, 1].min() - 40, lm[0, :, 0].max() + 30,
                         lm[0, :, 1].max() + 30]], np.float32)
        return [Detections.from_arrays(box, np.array([0.99], np.float32), lm) for _ in range(images.shape[0])]

    r = gpen.FaceRestorer(identity, size=256, detector=FaceDetector(backend=backend))
    res = r.restore(img, detection_threshold=0.7)
    assert seen == [((1, 512, 512, 3), 0.7)]
    assert len(res.faces) == 1 and res.faces[0].score == pytest.approx(0.99)
    assert res.faces[0].box[0] == pytest.approx(lm[0, :, 0].min() - 30)


def test_missing_detector_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GPEN_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("GPEN_OFFLINE", "1")
    with pytest.raises(gpen.MissingWeightsError) as info:
        gpen.FaceRestorer(identity, size=64).restore(astronaut())
    assert "detection_Resnet50_Final.pth" in str(info.value) and str(tmp_path / "facedetection") in str(info.value)


@pytest.mark.parametrize("masks", [{"parsing": True}, {"occlusion": "xseg_1"}], ids=["parser", "occluder"])
def test_missing_mask_weights_fail_before_detection(tmp_path, monkeypatch, masks):
    # The detector would find the face: the parser's or occluder's missing file must be reported
    # before it runs (and before any GPEN call), not after the first chunk of work.
    monkeypatch.setenv("GPEN_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("GPEN_OFFLINE", "1")
    calls = []

    def backend(images, threshold):
        calls.append(images.shape)
        return [Detections.from_arrays(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                       np.zeros((0, 5, 2), np.float32)) for _ in range(images.shape[0])]

    r = gpen.FaceRestorer(identity, size=64, detector=FaceDetector(backend=backend))
    with pytest.raises(gpen.MissingWeightsError) as info:
        r.restore(astronaut(), **masks)
    name = "parsing_parsenet.pth" if "parsing" in masks else "xseg_1.onnx"
    assert name in str(info.value) and str(tmp_path / "facedetection") in str(info.value)
    assert calls == []


def test_temporal_smoothing_reduces_jitter():
    frames = astronaut().repeat(7, 1, 1, 1)
    lm = landmarks_of("skimage.data.astronaut")
    rng = np.random.default_rng(0)
    jitter = [lm + rng.normal(0, 2.0, lm.shape).astype(np.float32) for _ in range(7)]
    r = gpen.FaceRestorer(identity, size=64)
    raw = r.restore(frames, jitter)
    smooth = r.restore(frames, jitter, temporal_smoothing=1.0)
    spread = lambda res: np.std([f.landmarks for f in res.faces], axis=0).mean()  # noqa: E731
    assert spread(smooth) < 0.6 * spread(raw)


def test_aligned_mode_is_exactly_the_network():
    net = gpen.load_model(seeded_state_dict(GPENConfig(size=64, style_dim=32, n_mlp=2, narrow=0.0625), seed=4))
    crops = torch.rand(3, 64, 64, 3)
    res = gpen.FaceRestorer(net).restore_aligned(crops, chunk_size=3)  # one network call, as below
    with torch.inference_mode():
        expected = ((net(crops.permute(0, 3, 1, 2) * 2 - 1).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
    assert torch.equal(res.images, expected)
    bigger = gpen.FaceRestorer(net).restore_aligned(torch.rand(2, 100, 90, 3), strength=0.5)
    assert bigger.images.shape == (2, 100, 90, 3) and bigger.masks.shape == (2, 100, 90)


def test_out_of_memory_halves_the_chunk():
    calls = []

    def flaky(x):
        calls.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return x

    img = astronaut().repeat(5, 1, 1, 1)
    lm = landmarks_of("skimage.data.astronaut")
    res = gpen.FaceRestorer(flaky, size=64).restore(img, [lm] * 5, chunk_size=8)
    assert calls == [5, 2, 2, 1] and len(res.faces) == 5


def test_host_decides_what_is_out_of_memory():
    """A host's ``is_oom`` (ComfyUI: ``model_management.is_oom``) decides when the chunk is halved;
    anything it does not count is raised at once, without retrying."""

    class HostOOM(RuntimeError):  # an error only the host's rule knows to be out-of-memory
        pass

    calls = []

    def flaky(x):
        calls.append(x.shape[0])
        if x.shape[0] > 1:
            raise HostOOM("device memory exhausted")
        return x

    img = astronaut().repeat(2, 1, 1, 1)
    lm = [landmarks_of("skimage.data.astronaut")] * 2
    with pytest.raises(HostOOM):  # not an OOM for the default rule (gpen.compat.is_oom): no retry
        gpen.FaceRestorer(flaky, size=64).restore(img, lm, chunk_size=2)
    assert calls == [2]
    calls.clear()
    host_rule = lambda e: isinstance(e, HostOOM)  # noqa: E731
    res = gpen.FaceRestorer(flaky, size=64, is_oom=host_rule).restore(img, lm, chunk_size=2)
    assert calls == [2, 1, 1] and len(res.faces) == 2


class _Recorder:
    """A stand-in detector / parser that records where it was moved."""

    def __init__(self, detections=None):
        self.moves, self.detections = [], detections

    def to(self, device):
        self.moves.append(str(device))
        return self

    def detect(self, images, threshold):
        return [self.detections] * images.shape[0]

    def masks(self, crops):
        return torch.ones(crops.shape[0], crops.shape[2], crops.shape[3])


def test_place_hook_sees_every_network_before_it_runs():
    """A host (ComfyUI's memory manager) is handed each network right before it runs, with the
    inputs it is about to process, so it can load it and count its memory; without a hook the
    parser is moved to the work device and the restorer and a given detector are left alone."""
    img = astronaut().repeat(3, 1, 1, 1)
    lm = landmarks_of("skimage.data.astronaut")
    box = np.array([[lm[0, :, 0].min() - 30, lm[0, :, 1].min() - 40, lm[0, :, 0].max() + 30,
                     lm[0, :, 1].max() + 30]], np.float32)
    det = _Recorder(Detections.from_arrays(box, np.array([0.99], np.float32), lm))
    parser = _Recorder()
    seen = []
    r = gpen.FaceRestorer(identity, size=64, device="cpu", detector=det, parser=parser,
                          place=lambda role, net, x: seen.append((role, net, tuple(x.shape))))
    res = r.restore(img, parsing=True, chunk_size=2, frames_per_chunk=2)
    assert len(res.faces) == 3
    assert seen == [("detector", det, (2, 512, 512, 3)),
                    ("restorer", identity, (2, 3, 64, 64)), ("parser", parser, (2, 3, 64, 64)),
                    ("restorer", identity, (1, 3, 64, 64)), ("parser", parser, (1, 3, 64, 64))]
    assert det.moves == [] and parser.moves == []  # the hook owns placement

    plain = gpen.FaceRestorer(identity, size=64, device="cpu", detector=det, parser=parser)
    plain.restore(img[:1], parsing=True)
    assert det.moves == [] and parser.moves == ["cpu"]  # a given detector stays where it is


def test_progress_and_interrupt():
    img = astronaut().repeat(4, 1, 1, 1)
    lm = landmarks_of("skimage.data.astronaut")
    progress = []
    gpen.FaceRestorer(identity, size=64).restore(img, [lm] * 4, chunk_size=2,
                                                   progress=lambda d, t: progress.append((d, t)))
    assert progress == [(2, 4), (4, 4)]

    class Stop(Exception):
        pass

    ticks = []

    def interrupt():
        ticks.append(1)
        if len(ticks) > 1:
            raise Stop

    with pytest.raises(Stop):
        gpen.FaceRestorer(identity, size=64).restore(img, [lm] * 4, chunk_size=1, check_interrupt=interrupt)
    assert len(ticks) == 2


def test_bad_arguments():
    r = gpen.FaceRestorer(identity, size=64)
    img = astronaut()
    with pytest.raises(InvalidInputError, match="shape"):
        r.restore(img[0])
    with pytest.raises(InvalidInputError, match="template"):
        r.restore(img, [None], template="arcface")
    with pytest.raises(InvalidInputError, match="strength"):
        r.restore(img, [None], strength=2)
    with pytest.raises(InvalidInputError, match="one array"):
        r.restore(img, [None, None])
    with pytest.raises(InvalidInputError, match="mask"):  # another size is resized; another batch length is not
        r.restore(img, [None], mask=torch.ones(2, 10, 10))
    with pytest.raises(InvalidInputError, match="crop size"):
        gpen.FaceRestorer(identity)


def test_mask_also_bounds_the_blend():
    img = astronaut()
    lm = landmarks_of("skimage.data.astronaut")
    centre = lm[0].mean(0)
    mask = torch.zeros(1, 512, 512)
    edge = int(centre[0]) + 3
    mask[:, :, :edge] = 1.0  # the left half of the face (its centre is inside)
    mask[:, :, edge - 10: edge - 5] = 0.5  # a soft band
    res = gpen.FaceRestorer(Darken(), size=128).restore(img, [lm], mask=mask)
    assert len(res.faces) == 1
    right = mask[0] == 0
    assert torch.equal(res.images[0][right], img[0][right]) and res.masks[0][right].abs().sum() == 0
    left = (mask[0] == 1) & (res.masks[0] > 0.99)
    assert left.any() and (res.images[0][left] - img[0][left]).abs().max() > 0.1
    assert res.masks.max() <= 1.0
