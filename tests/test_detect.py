"""Face detection (gpen.faces.detect) without real RetinaFace weights.

The RetinaFace tests run facexlib's network with seeded random weights and prove our batched RGB
pipeline computes exactly what facexlib's own single-image ``detect_faces`` computes on the BGR
uint8 image. Real faces come from a test-only MTCNN backend (facenet-pytorch's shipped weights),
which also shows that the detector interface is pluggable.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from gpen.weights import download as dl
from gpen.weights import registry
from gpen.weights import paths
from gpen.faces.detect import (
    BGR_MEAN,
    Detections,
    FaceDetector,
    RetinaFaceBackend,
    build_retinaface,
    load_weights_into,
    retinaface_priors,
)
from gpen.errors import InvalidInputError, MissingWeightsError, ModelLoadError

FIXTURES = Path(__file__).parent / "fixtures" / "detect"
SHARED = Path(os.environ.get("GPEN_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))


@pytest.fixture(autouse=True)
def _isolated_models(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_MODELS_DIR, str(tmp_path / "models"))
    monkeypatch.delenv(dl.ENV_OFFLINE, raising=False)


def _random_retinaface(seed: int = 0) -> torch.nn.Module:
    """mobile0.25 RetinaFace with seeded weights that give distinct, unsaturated scores.

    PyTorch's default init makes deep features vanish (many identical scores); Kaiming init with
    down-scaled heads keeps every anchor's score different, so orderings are unambiguous.
    """
    torch.manual_seed(seed)
    net = build_retinaface("mobile0.25")
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
                if "Head" in name:
                    m.weight.mul_(0.003)
                    m.bias.normal_(0.0, 0.01)
    return net.eval()


@pytest.fixture(scope="module")
def net():
    return _random_retinaface()


def _smooth_noise(h: int, w: int, seed: int) -> np.ndarray:
    """A uint8 RGB image with structure at several scales (random walk along x, per channel)."""
    rng = np.random.default_rng(seed)
    img = np.cumsum(rng.normal(size=(h, w, 3)), axis=1) * 10 + 128
    return img.clip(0, 255).astype(np.uint8)


def _to_batch(*imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).float() / 255.0


# ---------------------------------------------------------------- RetinaFace pipeline


@pytest.mark.parametrize("size", [(120, 160), (97, 203), (64, 64)])
def test_priors_match_facexlib_priorbox(net, size):
    from facexlib.detection.retinaface_utils import PriorBox

    ref = PriorBox(net.cfg, image_size=size).forward()
    ours = retinaface_priors(*size, net.cfg)
    assert ours.shape == ref.shape
    assert torch.equal(ours, ref)


def test_network_sees_bgr_0_255_minus_mean(net):
    img = _smooth_noise(48, 64, seed=1)
    captured = []
    handle = net.register_forward_pre_hook(lambda m, args: captured.append(args[0].clone()))
    try:
        FaceDetector(backend=RetinaFaceBackend(net, max_side=None)).detect(_to_batch(img), threshold=0.9)
    finally:
        handle.remove()
    expected = img[:, :, ::-1].astype(np.float32).transpose(2, 0, 1) - np.array(BGR_MEAN, np.float32)[:, None, None]
    assert len(captured) == 1 and captured[0].shape == (1, 3, 48, 64)
    np.testing.assert_allclose(captured[0][0].numpy(), expected, atol=1e-4)
    # Channel 0 reaching the network is blue: not equal to red unless the image were grey.
    assert not np.allclose(captured[0][0, 0].numpy() + BGR_MEAN[0], img[:, :, 0])


def test_detect_equals_facexlib_detect_faces_on_bgr(net):
    img = _smooth_noise(120, 160, seed=0)
    thr = 0.55
    ours = FaceDetector(backend=RetinaFaceBackend(net, max_side=None, nms_threshold=0.4)).detect(
        _to_batch(img), threshold=thr
    )[0]
    with torch.no_grad():
        ref = net.detect_faces(np.ascontiguousarray(img[:, :, ::-1]), conf_threshold=thr, nms_threshold=0.4)
        ref_wrong_order = net.detect_faces(img, conf_threshold=thr, nms_threshold=0.4)
    assert len(ours) == ref.shape[0] > 5
    np.testing.assert_allclose(ours.scores, ref[:, 4], atol=1e-6)
    np.testing.assert_allclose(ours.boxes, ref[:, :4], atol=1e-3)
    np.testing.assert_allclose(ours.landmarks, ref[:, 5:].reshape(-1, 5, 2), atol=1e-3)
    # The comparison is sensitive to colour order: RGB fed as if BGR gives other detections.
    assert ref_wrong_order.shape != ref.shape or not np.allclose(ref_wrong_order[:, 4], ref[:, 4])


def test_output_types_order_and_threshold(net):
    d = FaceDetector(backend=RetinaFaceBackend(net, max_side=None)).detect(
        _to_batch(_smooth_noise(80, 96, 3)), 0.5
    )[0]
    assert d.boxes.dtype == d.scores.dtype == d.landmarks.dtype == np.float32
    assert d.boxes.shape == (len(d), 4) and d.landmarks.shape == (len(d), 5, 2)
    assert len(d) > 0 and np.all(d.scores > 0.5)
    assert np.all(np.diff(d.scores) <= 0)
    assert np.all(d.boxes[:, 2] > d.boxes[:, 0]) and np.all(d.boxes[:, 3] > d.boxes[:, 1])


def test_batch_equals_single_images(net):
    imgs = [_smooth_noise(72, 88, s) for s in (4, 5, 6)]
    det = FaceDetector(backend=RetinaFaceBackend(net, max_side=None, batch_size=2))  # chunks 2 + 1
    batched = det.detect(_to_batch(*imgs), 0.52)
    singles = [det.detect(_to_batch(im), 0.52)[0] for im in imgs]
    assert len(batched) == 3
    for b, s in zip(batched, singles):
        assert len(b) == len(s) > 0
        np.testing.assert_allclose(b.boxes, s.boxes, atol=1e-3)
        np.testing.assert_allclose(b.scores, s.scores, atol=1e-5)
        np.testing.assert_allclose(b.landmarks, s.landmarks, atol=1e-3)


def test_large_image_is_detected_downscaled_and_mapped_back(net):
    small = _smooth_noise(60, 80, seed=7)
    big = small.repeat(2, axis=0).repeat(2, axis=1)  # exact 2x: area downscaling recovers `small`
    d_small = FaceDetector(backend=RetinaFaceBackend(net, max_side=None)).detect(_to_batch(small), 0.52)[0]
    captured = []
    handle = net.register_forward_pre_hook(lambda m, args: captured.append(tuple(args[0].shape)))
    try:
        d_big = FaceDetector(backend=RetinaFaceBackend(net, max_side=80)).detect(_to_batch(big), 0.52)[0]
    finally:
        handle.remove()
    assert captured == [(1, 3, 60, 80)]
    assert len(d_big) == len(d_small) > 0
    np.testing.assert_allclose(d_big.boxes, 2 * d_small.boxes, atol=1e-3)
    np.testing.assert_allclose(d_big.landmarks, 2 * d_small.landmarks, atol=1e-3)
    np.testing.assert_allclose(d_big.scores, d_small.scores, atol=1e-6)


def test_input_is_not_modified(net):
    x = _to_batch(_smooth_noise(40, 40, 8))
    before = x.clone()
    FaceDetector(backend=RetinaFaceBackend(net)).detect(x, 0.5)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(2, 3, 32, 32), r"\(B, H, W, 3\)"),
        (torch.zeros(32, 32, 3), r"\(B, H, W, 3\)"),
        (torch.zeros(1, 32, 32, 3, dtype=torch.uint8), "float"),
        (np.zeros((1, 32, 32, 3), np.float32), "torch.Tensor"),
    ],
)
def test_bad_images_are_rejected(net, bad, match):
    with pytest.raises(InvalidInputError, match=match):
        FaceDetector(backend=RetinaFaceBackend(net)).detect(bad)


def test_bad_threshold_and_model_are_rejected(net):
    with pytest.raises(InvalidInputError, match="threshold"):
        FaceDetector(backend=RetinaFaceBackend(net)).detect(torch.zeros(1, 8, 8, 3), threshold=1.5)
    with pytest.raises(InvalidInputError, match="retinaface_resnet50"):
        FaceDetector(model="yolo")


def test_empty_batch():
    det = FaceDetector(backend=lambda images, threshold: pytest.fail("not called"))
    assert det.detect(torch.zeros(0, 16, 16, 3)) == []


# ---------------------------------------------------------------- weights


def _save_state(net, path: Path, prefix: str = "") -> Path:
    torch.save({prefix + k: v for k, v in net.state_dict().items()}, path)
    return path


def test_weights_file_is_loaded_safely_with_module_prefix(net, tmp_path):
    path = _save_state(net, tmp_path / "mnet.pth", prefix="module.")
    det = FaceDetector("retinaface_mobile0.25", weights_path=path, max_side=None)
    ref = FaceDetector(backend=RetinaFaceBackend(net, max_side=None))
    x = _to_batch(_smooth_noise(64, 80, 9))
    a, b = det.detect(x, 0.52)[0], ref.detect(x, 0.52)[0]
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_weights_found_in_extra_dirs(net, tmp_path):
    extra = tmp_path / "comfy_facedetection"
    extra.mkdir()
    _save_state(net, extra / "detection_mobilenet0.25_Final.pth")
    det = FaceDetector("retinaface_mobile0.25", extra_dirs=[extra], allow_download=False)
    sd = det.backend.net.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in net.state_dict().items())


def test_wrong_architecture_is_a_clear_error(net, tmp_path):
    path = _save_state(net, tmp_path / "detection_Resnet50_Final.pth")  # mobile weights under the r50 name
    with pytest.raises(ModelLoadError, match="RetinaFace resnet50") as err:
        FaceDetector("retinaface_resnet50", weights_path=path)
    assert str(path) in str(err.value) and "missing" in str(err.value)


class _NotATensor:
    pass


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"body.conv1.weight": _NotATensor()}, f, protocol=2)
    with pytest.raises(ModelLoadError, match="never does") as err:
        load_weights_into(torch.nn.Linear(2, 2), path, "test")
    assert path.name in str(err.value)


def test_missing_weights_without_download_names_file_and_folder():
    with pytest.raises(MissingWeightsError) as err:
        FaceDetector("retinaface_resnet50", allow_download=False)
    msg = str(err.value)
    assert "detection_Resnet50_Final.pth" in msg
    assert str(paths.models_dir("facedetection")) in msg


def test_missing_weights_and_no_network_fail_fast(monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/detection_mobilenet0.25_Final.pth"
    s.close()  # nothing listens there: connection refused, as without network
    name = "detection_mobilenet0.25_Final.pth"
    monkeypatch.setitem(registry.REGISTRY, name, registry.WeightsFile(name, "facedetection", (url,)))
    with pytest.raises(MissingWeightsError) as err:
        FaceDetector("retinaface_mobile0.25")
    msg = str(err.value)
    assert name in msg and url in msg and str(paths.models_dir("facedetection")) in msg
    assert not paths.models_dir("facedetection").exists() or list(paths.models_dir("facedetection").iterdir()) == []


# ---------------------------------------------------------------- pluggable backend, real faces


class MTCNNBackend:
    """Test-only detector backend on facenet-pytorch's MTCNN (weights ship inside its wheel)."""

    def __init__(self):
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(keep_all=True, min_face_size=12, thresholds=[0.6, 0.7, 0.8], device="cpu")

    def detect(self, images: torch.Tensor, threshold: float) -> list[Detections]:
        batch = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        out = []
        for img in batch:
            boxes, probs, points = self.mtcnn.detect(img, landmarks=True)
            if boxes is None:
                out.append(Detections.empty())
                continue
            d = Detections.from_arrays(boxes, probs, np.asarray(list(points), dtype=np.float32))
            keep = np.flatnonzero(d.scores > threshold)
            keep = keep[np.argsort(-d.scores[keep], kind="stable")]
            out.append(Detections(d.boxes[keep], d.scores[keep], d.landmarks[keep]))
        return out


@pytest.fixture(scope="module")
def mtcnn_detector():
    pytest.importorskip("facenet_pytorch")
    return FaceDetector(backend=MTCNNBackend())


def test_pluggable_backend_reproduces_reference_landmarks_on_astronaut(mtcnn_detector):
    from skimage import data

    ref = json.loads((FIXTURES / "astronaut_mtcnn.json").read_text())
    img = data.astronaut()
    assert img.shape == (ref["height"], ref["width"], 3)
    d = mtcnn_detector.detect(_to_batch(img), threshold=0.9)[0]
    assert len(d) == len(ref["faces"]) == 1
    face = ref["faces"][0]
    np.testing.assert_allclose(d.landmarks[0], np.array(face["landmarks5"], np.float32), atol=2.0)
    np.testing.assert_allclose(d.boxes[0], np.array(face["box"], np.float32), atol=2.0)
    # Left eye (image left) has the smaller x, the mouth is below the eyes.
    assert d.landmarks[0, 0, 0] < d.landmarks[0, 1, 0] and d.landmarks[0, 3, 1] > d.landmarks[0, 0, 1]


def test_pluggable_backend_on_solvay_group_photo(mtcnn_detector):
    ref_path = SHARED / "test_images" / "landmarks.json"
    img_path = SHARED / "test_images" / "solvay_conference_1927.png"
    if not (ref_path.is_file() and img_path.is_file()):
        pytest.skip("shared reference data not available")
    import cv2

    ref = json.loads(ref_path.read_text())["images"]["solvay_conference_1927.png"]["faces"]
    img = cv2.cvtColor(cv2.imread(str(img_path)), cv2.COLOR_BGR2RGB)
    d = mtcnn_detector.detect(_to_batch(img), threshold=0.0)[0]
    assert len(d) == len(ref) == 29
    ref_marks = np.array([f["landmarks5"] for f in ref], np.float32)
    # Match each reference face to the nearest detection (by landmark centroid), then compare points.
    centroid = d.landmarks.mean(axis=1)
    for marks in ref_marks:
        i = np.argmin(np.linalg.norm(centroid - marks.mean(axis=0), axis=1))
        np.testing.assert_allclose(d.landmarks[i], marks, atol=2.0)


def test_backend_result_count_is_checked():
    det = FaceDetector(backend=lambda images, threshold: [Detections.empty()])
    with pytest.raises(InvalidInputError, match="1 results for 2 images"):
        det.detect(torch.zeros(2, 8, 8, 3))


def test_backend_may_return_plain_arrays():
    det = FaceDetector(backend=lambda images, threshold: [(np.ones((1, 4)), [0.9], np.zeros(10))])
    d = det.detect(torch.zeros(1, 8, 8, 3))[0]
    assert d.boxes.shape == (1, 4) and d.landmarks.shape == (1, 5, 2) and d.scores.dtype == np.float32
