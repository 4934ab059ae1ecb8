"""The restore node's ``face_landmarks`` input in the real hosts: faces from core's MediaPipe Face
Landmarker drive the detect path end to end.

ComfyUI 0.33.0 has core's "Detect Face Landmarks (MediaPipe)"; its weights cannot be had here, so
the test-only node ``GPENTestFaceLandmarks`` (``tests/host_nodes/landmarks_stand_in``) emits the
same ``FACE_LANDMARKS`` payload for the real faces of ``tests/fixtures/geometry/landmarks.json``
(MTCNN's boxes, scores and five points; 478-point meshes whose iris centres, nose tip and mouth
corners are those five points). A workflow queued through the HTTP API restores the astronaut and
the 29 Solvay faces with a seeded 256 px GPEN of reduced width (:data:`CHECKPOINT`: the real
architecture at 1/16 of GPEN-BFR-256's channels, all 29 faces in one network pass, so the test adds
seconds, not minutes, to a run; the geometry is the full model's); the saved picture must equal what
``gpen.FaceRestorer`` computes from the same faces (within SaveImage's 8 bits), and every pixel
outside the blend mask must be the input's. ComfyUI 0.8.0 has no such type: there the input must
not be offered. Uses the session servers of conftest.py (``comfy_server``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import host_utils as H
from conftest import SOLVAY, landmarks_of
from mesh_faces import fixture_faces

PICTURES = {"skimage.data.astronaut": "gpen_landmarks_astronaut.png",
            "solvay_conference_1927.png": "gpen_landmarks_solvay.png"}
"""Fixture picture -> the file name it gets in the host's input folder."""
MEDIAPIPE_NODES = ("LoadMediaPipeFaceLandmarker", "MediaPipeFaceLandmarker")
CHECKPOINT = "gpen_test_256_narrow_seeded.pth"
FACES_PER_PASS = 29


def _checkpoint(host) -> Path:
    """The narrow seeded checkpoint in the host's facerestore_models (written on first use)."""
    path = host.base_dir / "models" / "facerestore_models" / CHECKPOINT
    if not path.is_file():
        from gpen.model.layouts import seeded_state_dict
        from gpen.model.network import GPENConfig

        config = GPENConfig(size=256, style_dim=64, n_mlp=2, channel_multiplier=1, narrow=1 / 16)
        torch.save(seeded_state_dict(config, seed=20), path)
    return path


@pytest.fixture
def host(comfy_server):
    return comfy_server


def _has_core_landmarks(host) -> bool:
    return all(n in host.object_info for n in MEDIAPIPE_NODES)


def _needs_core_landmarks(host) -> None:
    if not _has_core_landmarks(host):
        pytest.skip(f"{host.host} has no core MediaPipe face nodes (FACE_LANDMARKS): the input is not offered there")


def _picture(name: str) -> np.ndarray:
    if name == "skimage.data.astronaut":
        from skimage.data import astronaut

        return astronaut()
    assert name == SOLVAY.name
    return np.asarray(Image.open(SOLVAY).convert("RGB"))


def _prompt(image_file: str, faces_of: str, prefix: str, landmarks_image: str | None = None) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_file}},
        "2": {"class_type": "GPENModelLoader", "inputs": {"model_name": CHECKPOINT, "precision": "auto"}},
        "3": {"class_type": "GPENFaceRestore", "inputs": {"image": ["1", 0], "gpen_model": ["2", 0],
                                                          "face_mode": "detect", "strength": 1.0,
                                                          "face_batch_size": FACES_PER_PASS,
                                                          "face_landmarks": ["5", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
        "5": {"class_type": "GPENTestFaceLandmarks", "inputs": {"image": ["8" if landmarks_image else "1", 0],
                                                                 "faces_of": faces_of}},
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 1]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix + "_mask"}},
        **({"8": {"class_type": "LoadImage", "inputs": {"image": landmarks_image}}} if landmarks_image else {}),
    }


def _saved(host, entry: dict, node_id: str) -> np.ndarray:
    (f,) = H.output_files(entry, node_id)
    return np.asarray(Image.open(host.base_dir / "output" / f.get("subfolder", "") / f["filename"]).convert("RGB"))


def test_face_landmarks_is_offered_only_where_the_host_has_the_type(host):
    optional = host.object_info["GPENFaceRestore"]["input"]["optional"]
    if not _has_core_landmarks(host):  # 0.8.0: the node is exactly as before
        assert "face_landmarks" not in optional
        assert "face_landmarks" not in host.object_info["GPENFaceRestore"]["input_order"]["optional"]
        return
    kind, opts = optional["face_landmarks"]
    # the very type core's detector outputs, so the frontend links the two
    assert kind == host.object_info["MediaPipeFaceLandmarker"]["output"][0] == "FACE_LANDMARKS"
    assert opts["tooltip"] and "default" not in opts
    assert host.object_info["GPENTestFaceLandmarks"]["output"] == ["FACE_LANDMARKS"]
    # a socket, not a widget: saved workflows keep their widget values
    assert "face_landmarks" not in [name for name, _ in H.widget_inputs(host.object_info["GPENFaceRestore"])]


@pytest.mark.parametrize("picture", list(PICTURES), ids=["astronaut", "solvay"])
def test_core_face_landmarks_restore_the_real_faces(host, picture):
    _needs_core_landmarks(host)
    checkpoint = _checkpoint(host)
    pixels = _picture(picture)
    Image.fromarray(pixels).save(host.base_dir / "input" / PICTURES[picture])
    entry = host.run(_prompt(PICTURES[picture], picture, "gpen_landmarks"), timeout=300)
    assert entry["status"]["status_str"] == "success", [
        m[1].get("exception_message") for m in entry["status"]["messages"] if "error" in m[0]]
    out, mask = _saved(host, entry, "4"), _saved(host, entry, "7")[..., 0]

    # The same faces (the fixture's boxes, scores and five points) given straight to the core.
    import gpen
    from gpen.faces.detect import Detections

    faces = fixture_faces(picture)
    given = Detections.from_arrays(np.asarray([f["box"] for f in faces], np.float32),
                                   np.asarray([f["score"] for f in faces], np.float32), landmarks_of(picture))
    net = gpen.load_model(checkpoint)
    src = torch.from_numpy(pixels.astype(np.float32) / 255.0)[None]
    expected = gpen.FaceRestorer(net).restore(src, [given], chunk_size=FACES_PER_PASS)
    assert expected.faces_per_image == [len(faces)] and len(faces) == (1 if "astronaut" in picture else 29)
    assert entry["outputs"]["3"]["gpen_faces"] == [len(faces)]

    want = expected.images[0].numpy()
    assert out.shape == want.shape == pixels.shape
    assert np.abs(out / 255.0 - want).max() <= 1 / 255 + 1e-4  # SaveImage truncates to 8 bits
    want_mask = expected.masks[0].numpy()
    assert np.abs(mask / 255.0 - want_mask).max() <= 1 / 255 + 1e-4
    outside = want_mask == 0
    assert outside.mean() > 0.3 and np.array_equal(out[outside], pixels[outside])  # untouched, bit for bit
    inside = want_mask > 0.99
    assert inside.sum() > 100 * len(faces) and np.abs(out[inside].astype(int) - pixels[inside]).mean() > 5


def test_face_landmarks_of_another_image_size_is_a_node_error(host):
    _needs_core_landmarks(host)
    _checkpoint(host)
    picture = "skimage.data.astronaut"
    Image.fromarray(_picture(picture)).save(host.base_dir / "input" / PICTURES[picture])
    entry = host.run(_prompt(PICTURES[picture], picture, "gpen_landmarks_size", landmarks_image=H.FACE_CROP))  # landmarks found on the 256 x 256 crop
    assert entry["status"]["status_str"] == "error"
    (err,) = H.status_messages(entry, "execution_error")
    assert err["node_type"] == "GPENFaceRestore" and err["exception_type"].endswith("InvalidInputError")
    assert "256x256" in err["exception_message"] and "512x512" in err["exception_message"]
    assert "Traceback" not in err["exception_message"]
