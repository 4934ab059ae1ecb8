"""GPEN's five alignment points from a MediaPipe face mesh (468 or 478 points).

ComfyUI's core MediaPipe Face Landmarker (``comfy_extras/nodes_mediapipe.py``, 0.33.0 and later)
outputs, per face, ``landmarks_xy``: the 468 points of MediaPipe's canonical face mesh in image
pixels, plus 10 iris points (468-477) with FaceMesh v2. The mesh topology is fixed, so the five
points GPEN aligns to are fixed vertices:

=====================  ==============================  ===========================
GPEN point (image)      subject's                       mesh vertices
=====================  ==============================  ===========================
0 left eye              right eye                        iris centre 468, else the
                                                         middle of corners 33 / 133
1 right eye             left eye                         iris centre 473, else the
                                                         middle of corners 362 / 263
2 nose tip              nose tip                         1
3 left mouth corner     right mouth corner               61
4 right mouth corner    left mouth corner                291
=====================  ==============================  ===========================

"Left" and "right" in GPEN's (and RetinaFace's) order are as seen in an upright image, so they are
the subject's right and left. The vertices are those of MediaPipe's canonical mesh topology:
``mediapipe/python/solutions/face_mesh_connections.py`` puts 33 and 133 in ``FACEMESH_RIGHT_EYE``,
362 and 263 in ``FACEMESH_LEFT_EYE``, the ring 469-472 in ``FACEMESH_RIGHT_IRIS`` (centre 468) and
474-477 in ``FACEMESH_LEFT_IRIS`` (centre 473), and 61 and 291 at the ends of ``FACEMESH_LIPS``; the
host ships the same sets in ``FACE_LANDMARKS["connection_sets"]`` (read from its weights), and its
port reads these vertices by index too: ``_BS_INPUT_INDICES`` in
``comfy_extras/mediapipe/face_landmarker.py`` (MediaPipe's ``kLandmarksSubsetIdxs``) lists 1, 33,
61, 133, 263, 291, 362 and 468-477. Iris centres are where RetinaFace puts its eye points (the
pupils); the corner middle is the closest a 468-point mesh without irises gets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .detect import Detections

MESH_POINTS = 468
MESH_POINTS_WITH_IRISES = 478
IRIS_CENTRES = (468, 473)  # subject's right, left
EYE_CORNERS = ((33, 133), (362, 263))  # subject's right eye (outer, inner), left eye (inner, outer)
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)  # subject's right, left


def five_points(mesh: np.ndarray) -> np.ndarray:
    """(N, 2) mesh points (N = 468 or 478) -> (5, 2) GPEN points, float32 (see the module docstring)."""
    pts = np.asarray(mesh, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < MESH_POINTS:
        raise InvalidInputError(f"a MediaPipe face mesh has {MESH_POINTS} or {MESH_POINTS_WITH_IRISES} points "
                                f"(x, y), got shape {pts.shape}.")
    if not np.isfinite(pts).all():
        raise InvalidInputError("the face mesh contains NaN or infinite coordinates.")
    if pts.shape[0] >= MESH_POINTS_WITH_IRISES:
        eyes = pts[list(IRIS_CENTRES)]
    else:
        eyes = np.stack([pts[list(pair)].mean(axis=0) for pair in EYE_CORNERS])
    out = np.concatenate([eyes, pts[[NOSE_TIP]], pts[list(MOUTH_CORNERS)]])
    return out.astype(np.float32)


def faces_from_landmarks(payload: Mapping[str, Any], batch: int, height: int, width: int) -> list[Detections]:
    """Per frame the faces (boxes, scores, five points) of a ``FACE_LANDMARKS`` payload, for
    ``FaceRestorer.restore(landmarks=...)``.

    ``payload`` is what ComfyUI's "Detect Face Landmarks (MediaPipe)" node outputs:
    ``{"frames": [[face, ...], ...], "image_size": (H, W), ...}`` with ``face["landmarks_xy"]``
    (N, 2), ``face["bbox_xyxy"]`` (4,) and ``face["score"]``. One frame serves a whole batch; other
    counts, and an image size other than ``(height, width)``, are errors that say what to connect.
    """
    if not isinstance(payload, Mapping) or "frames" not in payload:
        raise InvalidInputError("face_landmarks must come from ComfyUI's 'Detect Face Landmarks (MediaPipe)' node "
                                f"(a dict with 'frames'), got {type(payload).__name__}.")
    size = payload.get("image_size")
    if size is not None and (int(size[0]), int(size[1])) != (height, width):
        raise InvalidInputError(f"face_landmarks were detected on {int(size[1])}x{int(size[0])} images, but the image "
                                f"to restore is {width}x{height}: connect the same image (batch) to both nodes.")
    frames: Sequence = payload["frames"]
    if len(frames) not in (1, batch):
        raise InvalidInputError(f"face_landmarks hold {len(frames)} frames for a batch of {batch} images: connect "
                                f"the same image batch to both nodes.")
    out = []
    for t in range(batch):
        faces = frames[t if len(frames) == batch else 0] or []
        marks = [five_points(f["landmarks_xy"]) for f in faces]
        boxes = [np.asarray(f.get("bbox_xyxy", _extent(f["landmarks_xy"])), np.float32).reshape(4) for f in faces]
        scores = [float(f.get("score", 1.0)) for f in faces]
        out.append(Detections.from_arrays(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                                          np.asarray(marks, np.float32).reshape(-1, 5, 2)))
    return out


def _extent(mesh) -> np.ndarray:
    pts = np.asarray(mesh, dtype=np.float32)
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])
