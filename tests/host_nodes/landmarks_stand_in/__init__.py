"""Test-only node pack: emits ``FACE_LANDMARKS`` of known real faces (never part of the pack).

Core's "Detect Face Landmarks (MediaPipe)" needs its weights (``models/detection``), which cannot be
downloaded on the test machines. This node outputs what it outputs, a ``FACE_LANDMARKS`` payload
(``{"frames", "image_size", "connection_sets"}``, per face ``bbox_xyxy``, ``landmarks_xy`` (478, 2),
``score``), for the faces that ``tests/fixtures/geometry/landmarks.json`` lists for a picture: the
fixture's boxes and scores, and meshes whose iris centres, nose tip and mouth corners are exactly
the fixture's five points (``tests/mesh_faces.py``, loaded from the repository this folder belongs
to). The tests link it into ``custom_nodes`` as ``landmarks_stand_in``; its image input gives the
frame count and image size.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_HELPER = Path(__file__).resolve().parents[2] / "mesh_faces.py"
_spec = importlib.util.spec_from_file_location("gpen_test_mesh_faces", _HELPER)
mesh_faces = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mesh_faces)

PICTURES = ["skimage.data.astronaut", "solvay_conference_1927.png"]


class GPENTestFaceLandmarks:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "faces_of": (PICTURES,)}}

    RETURN_TYPES = ("FACE_LANDMARKS",)
    RETURN_NAMES = ("face_landmarks",)
    FUNCTION = "emit"
    CATEGORY = "testing"

    def emit(self, image, faces_of):
        b, h, w = image.shape[:3]
        return (mesh_faces.face_landmarks_payload(faces_of, h, w, frames=b),)


NODE_CLASS_MAPPINGS = {"GPENTestFaceLandmarks": GPENTestFaceLandmarks}
NODE_DISPLAY_NAME_MAPPINGS = {"GPENTestFaceLandmarks": "GPEN test: fixture face landmarks"}
