"""Synthetic MediaPipe face meshes with known GPEN points, and ``FACE_LANDMARKS`` payloads built from
the real faces of ``tests/fixtures/geometry/landmarks.json``.

Needs numpy only: the test-only host node ``tests/host_nodes/landmarks_stand_in`` loads this file
inside the ComfyUI server, and tests/test_mesh.py and tests/node_harness.py use it directly.
The vertex numbers are those of :mod:`gpen.faces.mesh` (written out here so the stand-in does not
import the pack it tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LANDMARKS_JSON = Path(__file__).resolve().parent / "fixtures" / "geometry" / "landmarks.json"
IRIS_CENTRES, NOSE_TIP, MOUTH_CORNERS = (468, 473), 1, (61, 291)
EYE_CORNERS = ((33, 133), (362, 263))


def mesh_with_five_points(five, n: int = 478, seed: int = 0, box=None) -> np.ndarray:
    """(n, 2) float32 mesh (n = 478 or 468) whose named vertices make the GPEN points ``five`` (5, 2).

    The other vertices are random points inside ``box`` (x1, y1, x2, y2; default: the five points'
    extent grown by half its size), as a real mesh lies inside its face. With 468 points (no
    irises) the eye corners are placed symmetrically around each eye point.
    """
    five = np.asarray(five, dtype=np.float64)
    if box is None:
        lo, hi = five.min(axis=0), five.max(axis=0)
        pad = (hi - lo) / 2
        box = (*(lo - pad), *(hi + pad))
    x1, y1, x2, y2 = (float(v) for v in box)
    rng = np.random.default_rng(seed)
    mesh = np.stack([rng.uniform(x1, x2, n), rng.uniform(y1, y2, n)], axis=1)
    if n >= 478:
        mesh[IRIS_CENTRES[0]], mesh[IRIS_CENTRES[1]] = five[0], five[1]
    else:
        off = np.array([7.0, -1.5])
        for eye, (a, b) in zip(five[:2], EYE_CORNERS):
            mesh[a], mesh[b] = eye - off, eye + off
    mesh[NOSE_TIP], mesh[MOUTH_CORNERS[0]], mesh[MOUTH_CORNERS[1]] = five[2], five[3], five[4]
    return mesh.astype(np.float32)


def fixture_faces(image: str) -> list[dict]:
    """The fixture's faces of ``image`` ('skimage.data.astronaut' or 'solvay_conference_1927.png'):
    each ``{"box", "score", "landmarks5"}``."""
    return json.loads(LANDMARKS_JSON.read_text())["images"][image]["faces"]


def face_landmarks_payload(image: str, height: int, width: int, frames: int = 1) -> dict:
    """A ``FACE_LANDMARKS`` payload as core's MediaPipe Face Landmarker outputs it, for ``frames``
    copies of ``image``: per face ``bbox_xyxy`` (the fixture's box), ``score``, and a 478-point
    ``landmarks_xy`` mesh inside that box whose GPEN points are the fixture's five points."""
    faces = []
    for i, f in enumerate(fixture_faces(image)):
        box = np.asarray(f["box"], np.float32)
        faces.append({"bbox_xyxy": box, "score": float(f["score"]),
                      "landmarks_xy": mesh_with_five_points(f["landmarks5"], seed=i, box=box)})
    return {"frames": [[dict(face) for face in faces] for _ in range(frames)], "image_size": (height, width),
            "connection_sets": {}}
