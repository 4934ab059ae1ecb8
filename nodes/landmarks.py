"""The restore node's ``face_landmarks`` input: faces from ComfyUI's core MediaPipe Face Landmarker.

ComfyUI 0.33.0 ships "Detect Face Landmarks (MediaPipe)" (``MediaPipeFaceLandmarker`` in
``comfy_extras/nodes_mediapipe.py``), whose first output has the custom type ``FACE_LANDMARKS``
(declared there as ``io.Custom("FACE_LANDMARKS")``; ``comfy_api`` exports no constant for it):
``{"frames": [[face, ...] per frame], "image_size": (H, W), "connection_sets": ...}``, each face
with ``bbox_xyxy``, ``landmarks_xy`` (478, 2) and ``score``. The input is offered only where the
host has that module, so on older hosts (0.8.0) the node's schema stays as it was. Turning the
payload into faces is the core's job (:func:`gpen.faces.mesh.faces_from_landmarks`, called by the
restore node).
"""

from __future__ import annotations

import importlib.util

from comfy_api.latest import io

FACE_LANDMARKS = "FACE_LANDMARKS"
CORE_MEDIAPIPE_MODULE = "comfy_extras.nodes_mediapipe"
"""The host module that defines ``FACE_LANDMARKS`` and the nodes that produce it."""
TOOLTIP = ("Faces from core's 'Detect Face Landmarks (MediaPipe)' (face_landmarks output), detected on this same "
           "image batch: when connected they replace RetinaFace (detector and detection_threshold are not "
           "used); the five GPEN points come from each face mesh (iris centres, nose tip, mouth corners). "
           "Selection, tracking, masks and paste-back work as for detected faces (detect mode).")


def host_has_face_landmarks() -> bool:
    """Whether this ComfyUI ships core's MediaPipe face nodes (0.33.0 and later)."""
    try:
        return importlib.util.find_spec(CORE_MEDIAPIPE_MODULE) is not None
    except (ImportError, ValueError):
        return False


def face_landmarks_inputs() -> list:
    """The optional ``face_landmarks`` socket where the host has the type, else nothing."""
    if not host_has_face_landmarks():
        return []
    return [io.Custom(FACE_LANDMARKS).Input("face_landmarks", optional=True, tooltip=TOOLTIP)]

