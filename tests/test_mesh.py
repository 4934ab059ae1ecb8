"""MediaPipe face mesh -> GPEN's five points (gpen.faces.mesh), on synthetic meshes."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import landmarks_of
from gpen.errors import InvalidInputError
from gpen.faces.mesh import faces_from_landmarks, five_points
from mesh_faces import mesh_with_five_points


@pytest.mark.parametrize("n", [478, 468])
def test_five_points_are_the_named_vertices(n):
    for five in landmarks_of("solvay_conference_1927.png")[:5]:
        got = five_points(mesh_with_five_points(five.astype(np.float64), n))
        np.testing.assert_allclose(got, five, atol=1e-4)


def test_iris_centres_win_over_eye_corners():
    five = landmarks_of("skimage.data.astronaut")[0].astype(np.float64)
    mesh = mesh_with_five_points(five)
    mesh[[33, 133, 362, 263]] += 40.0  # corners elsewhere: a 478-point mesh still uses the irises
    np.testing.assert_allclose(five_points(mesh), five, atol=1e-4)
    # without irises the corners decide
    np.testing.assert_allclose(five_points(mesh[:468])[:2], [(mesh[33] + mesh[133]) / 2, (mesh[362] + mesh[263]) / 2],
                               atol=1e-4)


@pytest.mark.parametrize("bad", [np.zeros((5, 2)), np.zeros((478, 3)), np.full((478, 2), np.nan)])
def test_bad_meshes_are_refused(bad):
    with pytest.raises(InvalidInputError):
        five_points(bad)


def _payload(frames, size=(568, 1328)):
    return {"frames": frames, "image_size": size, "connection_sets": {}}


def test_payload_frames_become_boxes_scores_and_points():
    marks = landmarks_of("solvay_conference_1927.png")
    faces = [{"landmarks_xy": mesh_with_five_points(m.astype(np.float64), seed=i), "bbox_xyxy": np.array([i, i, i + 9, i + 9.0]),
              "score": 0.5 + i / 100} for i, m in enumerate(marks[:3])]
    found = faces_from_landmarks(_payload([faces, []]), batch=2, height=568, width=1328)
    boxes, scores, lms = found[0].boxes, found[0].scores, found[0].landmarks
    np.testing.assert_allclose(lms, marks[:3], atol=1e-4)
    np.testing.assert_allclose(boxes[1], [1, 1, 10, 10])
    np.testing.assert_allclose(scores, [0.5, 0.51, 0.52], rtol=1e-6)
    assert found[1].landmarks.shape == (0, 5, 2) and found[1].boxes.shape == (0, 4)
    # one frame of landmarks serves a whole batch
    assert len(faces_from_landmarks(_payload([faces]), batch=4, height=568, width=1328)) == 4


def test_payload_mismatches_say_what_to_connect():
    with pytest.raises(InvalidInputError, match="1328x568 images.*100x50"):
        faces_from_landmarks(_payload([[]]), batch=1, height=50, width=100)
    with pytest.raises(InvalidInputError, match="3 frames for a batch of 2"):
        faces_from_landmarks(_payload([[], [], []]), batch=2, height=568, width=1328)
    with pytest.raises(InvalidInputError, match="Detect Face Landmarks"):
        faces_from_landmarks([[]], batch=1, height=568, width=1328)


def test_mesh_faces_drive_the_restorer_with_their_boxes_and_scores():
    """Faces from a payload restore like the same five points given as landmarks; sorting by score
    uses the payload's scores."""
    import torch

    import gpen
    from conftest import astronaut

    five = landmarks_of("skimage.data.astronaut")
    faces = [{"landmarks_xy": mesh_with_five_points(m.astype(np.float64), seed=3), "bbox_xyxy": np.array([150., 80., 300., 260.]),
              "score": 0.9} for m in five]
    image = astronaut()
    restorer = gpen.FaceRestorer(lambda x: -x, size=64)  # not the identity, so restored faces show
    given = faces_from_landmarks(_payload([faces], size=(512, 512)), batch=1, height=512, width=512)
    a = restorer.restore(image, given)
    b = restorer.restore(image, [five])
    assert torch.equal(a.images, b.images) and a.masks.max() > 0
    np.testing.assert_allclose(a.faces[0].box, [150, 80, 300, 260])
    assert a.faces[0].score == pytest.approx(0.9)
