"""FaceRestorer.restore picking the right faces: only swapped ones (reference), one person through a
clip (tracks), faces filled into frames the detector missed, false detections left alone, options
checked before detection, masks of another size, empty batches, detection in chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gpen
from gpen.errors import InvalidInputError
from gpen.faces.align import estimate_similarity, invert_affine, template_points, warp_affine
from gpen.faces.detect import Detections, FaceDetector
from gpen.faces.paste import paste_back
from gpen.faces.reference import REFERENCE_THRESHOLD

from conftest import astronaut, landmarks_of

LM = landmarks_of("skimage.data.astronaut")[0]


class Darken:
    """A restorer that visibly changes every face it gets (to see which faces were restored)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return x * 0.5 - 0.5


def other_face(size: int = 256) -> torch.Tensor:
    """Another person's aligned face (1, 3, S, S): the astronaut's face mirrored and darkened,
    recoloured like a different skin and light (a stand-in for a swapper's output)."""
    crop = warp_affine(astronaut().permute(0, 3, 1, 2), torch.from_numpy(
        estimate_similarity(LM, template_points("gpen", size)).astype(np.float32))[None], None, size)
    return (crop.flip(-1) * torch.tensor([0.8, 0.6, 0.5]).view(1, 3, 1, 1)).clamp(0, 1)


def swap_face(image: torch.Tensor, lm: np.ndarray, face: torch.Tensor) -> torch.Tensor:
    """``image`` (1, H, W, 3) with the face at ``lm`` replaced by ``face``, pasted with the feather mask."""
    affine = estimate_similarity(lm, template_points("gpen", face.shape[-1]))
    inverse = torch.from_numpy(invert_affine(affine[None].astype(np.float64))).float()
    out, _ = paste_back(image, face, None, inverse, torch.zeros(1, dtype=torch.long))
    return out


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    import cv2

    rgb = (image[0].numpy() * 255 + 0.5).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return torch.from_numpy(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255)[None]


def two_faces() -> tuple[torch.Tensor, np.ndarray]:
    """The astronaut twice side by side (1, 512, 1024, 3) and both faces' landmarks (2, 5, 2)."""
    img = astronaut()
    return torch.cat([img, img], dim=2), np.stack([LM, LM + np.array([512.0, 0.0], np.float32)])


# ---- only the faces a swap changed ---------------------------------------------------------------

def test_only_the_face_that_differs_from_the_reference_is_restored():
    before, lms = two_faces()
    after = swap_face(before, lms[1], other_face())
    r = gpen.FaceRestorer(Darken(), size=128)
    res = r.restore(after, [lms], reference=before)
    assert len(res.faces) == 1 and np.allclose(res.faces[0].landmarks, lms[1])
    assert res.masks[0, :, :512].abs().sum() == 0 and res.masks[0, :, 512:].max() > 0.99
    assert torch.equal(res.images[0, :, :512], after[0, :, :512])  # the unswapped face: bit-identical
    assert torch.equal(res.images[0][res.masks[0] == 0], after[0][res.masks[0] == 0])
    assert "1 face(s) left alone: unchanged from the reference" in res.info
    # without the reference both faces are restored: the reference is what left the first alone
    assert len(r.restore(after, [lms]).faces) == 2
    # a picture that went through JPEG (quality 75) after the swap: the noise is no swap
    noisy = jpeg(after, 75)
    res = r.restore(noisy, [lms], reference=before)
    assert [np.allclose(f.landmarks, lms[1]) for f in res.faces] == [True]
    diffs = r.reference_differences(noisy, before, r.align_faces(r.find_faces(noisy, [lms]), [np.arange(2)]))
    assert diffs[0] < REFERENCE_THRESHOLD / 2 and diffs[1] > 2 * REFERENCE_THRESHOLD, diffs


def test_reference_per_frame_or_one_for_all_and_the_threshold():
    before, lms = two_faces()
    after = swap_face(before, lms[0], other_face())
    frames = torch.cat([after, jpeg(before, 85), after])  # frame 1 was not swapped, only re-encoded
    r = gpen.FaceRestorer(Darken(), size=64)
    per_frame = r.restore(frames, [lms] * 3, reference=before.repeat(3, 1, 1, 1), track_faces=False)
    one = r.restore(frames, [lms] * 3, reference=before, track_faces=False)
    for res in (per_frame, one):
        assert [(f.image_index, round(float(f.landmarks[0, 0]))) for f in res.faces] == \
            [(0, round(float(lms[0, 0, 0]))), (2, round(float(lms[0, 0, 0])))]
        assert res.faces_per_image == [1, 0, 1] and torch.equal(res.images[1], frames[1])
    assert len(r.restore(frames, [lms] * 3, reference=before, reference_threshold=1.0).faces) == 0
    # the threshold decides: at 0 the JPEG noise of frame 1 counts as a change, exact copies never do
    zero = r.restore(frames, [lms] * 3, reference=before, reference_threshold=0.0, track_faces=False)
    assert zero.faces_per_image == [1, 2, 1]
    with pytest.raises(InvalidInputError, match="reference"):
        r.restore(frames, [lms] * 3, reference=before[:, :256])
    with pytest.raises(InvalidInputError, match="reference"):
        r.restore(frames, [lms] * 3, reference=before.repeat(2, 1, 1, 1))


# ---- one person through a clip -------------------------------------------------------------------

def crossing_clip(frames: int = 6) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray]]:
    """Two faces that change left/right order: A walks right along the top, B left along the bottom.

    Returns the frames (grey, with each face's patch of the astronaut), the per-frame landmarks in
    the detector's order (alternating) and A's landmarks per frame."""
    img = astronaut()[0]
    patch = img[60:260, 120:320]  # the face
    clip = torch.full((frames, 560, 1100, 3), 0.5)
    per_frame, a_track = [], []
    for t in range(frames):
        ax, bx = 60 + 160 * t, 860 - 160 * t
        a = LM + np.array([ax - 120, -60 + 20], np.float32)
        b = LM + np.array([bx - 120, -60 + 300], np.float32)
        clip[t, 20:220, ax:ax + 200] = patch
        clip[t, 300:500, bx:bx + 200] = patch
        per_frame.append(np.stack([a, b] if t % 2 else [b, a]))
        a_track.append(a)
    return clip, per_frame, a_track


def test_by_index_follows_the_same_person_when_faces_change_order():
    clip, lms, a_path = crossing_clip()
    r = gpen.FaceRestorer(Darken(), size=64)
    res = r.restore(clip, lms, face_selection="0")  # tracking is on by default for 3+ frames
    assert res.faces_per_image == [1] * 6
    for t, f in enumerate(res.faces):
        assert f.image_index == t and f.track == 0 and np.allclose(f.landmarks, a_path[t])
        assert res.masks[t, 20:220, 60 + 160 * t:260 + 160 * t].max() > 0.99  # A's place is restored...
        assert res.masks[t, 300:].sum() == 0  # ...and nothing on B's row
    assert "1 track(s) restored: #0 frames 0-5" in res.info
    # frame by frame, "0" is whoever is leftmost: after the crossing that is B
    per_frame = r.restore(clip, lms, face_selection="0", track_faces=False)
    assert [np.allclose(f.landmarks, a) for f, a in zip(per_frame.faces, a_path)] == [True] * 3 + [False] * 3
    assert all(f.track is None for f in per_frame.faces)
    # "largest" and "all" report tracks too; B is track 1 (second from the left on frame 0)
    both = r.restore(clip, lms)
    assert sorted({f.track for f in both.faces}) == [0, 1] and len(both.faces) == 12
    assert [f.track for f in r.restore(clip, lms, face_selection="1").faces] == [1] * 6


def test_a_missed_face_is_restored_at_the_interpolated_place():
    clip, lms, a_path = crossing_clip()
    missed = [lm.copy() for lm in lms]
    missed[3] = np.stack([lm for lm in lms[3] if not np.allclose(lm, a_path[3])])  # A not found in frame 3
    r = gpen.FaceRestorer(Darken(), size=64)
    res = r.restore(clip, missed, face_selection="0")
    assert res.faces_per_image == [1] * 6
    filled = res.faces[3]
    assert filled.image_index == 3 and filled.interpolated and filled.track == 0
    np.testing.assert_allclose(filled.landmarks, a_path[3], atol=1e-3)  # A moves uniformly: exact
    truth = r.restore(clip[3:4], [a_path[3][None]])
    assert (res.masks[3] - truth.masks[0]).abs().max() < 1e-4
    assert (res.images[3] - truth.images[0]).abs().max() < 1e-4
    assert "(1 interpolated)" in res.info
    # gaps longer than max_gap are not filled
    assert r.restore(clip, missed, face_selection="0", max_gap=0).faces_per_image[3] == 0


def test_a_one_frame_false_face_is_not_restored():
    from stand_ins import ScriptedDetector

    clip, lms, _ = crossing_clip()
    false_face = (LM - LM.mean(0)) * 0.6 + np.array([980.0, 120.0], np.float32)
    with_false = [lm.copy() for lm in lms]
    with_false[2] = np.concatenate([lms[2], false_face[None]])
    # the detector is sure of the two people, not of the face it sees once
    script = [[(lm, 0.99 if k < 2 else 0.6) for k, lm in enumerate(frame)] for frame in with_false]
    r = gpen.FaceRestorer(Darken(), size=64, detector=FaceDetector(backend=ScriptedDetector(script)))
    res = r.restore(clip)
    assert res.faces_per_image == [2] * 6 and not any(np.allclose(f.landmarks, false_face) for f in res.faces)
    assert res.masks[2, 60:180, 920:1040].sum() == 0
    assert "1 detection(s) dropped as false" in res.info
    assert r.restore(clip, min_track=1).faces_per_image[2] == 3
    assert r.restore(clip, track_faces=False).faces_per_image[2] == 3
    # two frames: tracking may be asked for, but nothing is dropped (min_track needs 3+ frames)
    r = gpen.FaceRestorer(Darken(), size=64, detector=FaceDetector(backend=ScriptedDetector(script[1:3])))
    assert r.restore(clip[1:3], track_faces=True).faces_per_image == [2, 3]
    # faces given as landmarks are the user's: never dropped
    assert gpen.FaceRestorer(Darken(), size=64).restore(clip, with_false).faces_per_image[2] == 3


def test_detected_faces_are_tracked_like_given_ones():
    clip, lms, a_path = crossing_clip()
    lms = [lm.copy() for lm in lms]
    lms[3] = np.stack([lm for lm in lms[3] if not np.allclose(lm, a_path[3])])
    lms[2] = np.concatenate([lms[2], ((LM - LM.mean(0)) * 0.6 + [980.0, 120.0])[None].astype(np.float32)])

    def backend(images, threshold):
        start = calls.pop(0)
        out = []
        for t in range(start, start + images.shape[0]):
            boxes = np.stack([[m[:, 0].min() - 30, m[:, 1].min() - 40, m[:, 0].max() + 30, m[:, 1].max() + 30]
                              for m in lms[t]]).astype(np.float32)
            out.append(Detections.from_arrays(boxes, np.full(len(boxes), 0.9, np.float32), lms[t]))
        return out

    calls = [0, 2, 4]
    r = gpen.FaceRestorer(Darken(), size=64, detector=FaceDetector(backend=backend))
    res = r.restore(clip, face_selection="0", frames_per_chunk=2)
    assert calls == [] and res.faces_per_image == [1] * 6
    assert [f.interpolated for f in res.faces] == [False] * 3 + [True] + [False] * 2
    for t, f in enumerate(res.faces):
        np.testing.assert_allclose(f.landmarks, a_path[t], atol=1e-3)


# ---- options, masks, empty batches ---------------------------------------------------------------

def test_selection_options_are_checked_before_any_detection():
    seen = []

    def backend(images, threshold):
        seen.append(images.shape[0])
        return [Detections.empty() for _ in range(images.shape[0])]

    r = gpen.FaceRestorer(Darken(), size=64, detector=FaceDetector(backend=backend))
    img = astronaut()
    for bad in (dict(face_selection="0,x"), dict(face_selection=" , "), dict(face_selection=[]),
                dict(sort="random"), dict(min_face_size=-1), dict(detection_threshold=1.5), dict(max_gap=-1),
                dict(min_track=0), dict(max_gap=1.5), dict(track_faces="yes"), dict(reference_threshold=2),
                dict(temporal_smoothing=3), dict(mask=torch.ones(2, 8, 8)), dict(reference=img[:, :100])):
        with pytest.raises(InvalidInputError):
            r.restore(img.repeat(3, 1, 1, 1), **bad)
    assert seen == []
    r.restore(img, face_selection="1, 0, 1")
    assert seen == [1]


def test_empty_index_list_is_refused():
    from gpen.faces.selection import parse_indices, parse_selection

    for empty in ("", " ", ",", []):
        with pytest.raises(InvalidInputError, match="empty"):
            parse_indices(empty)
        with pytest.raises(InvalidInputError, match="empty"):
            parse_selection(empty)
    assert parse_indices("2, 0,2") == [2, 0] and parse_selection(None) == "all" and parse_selection(" All") == "all"
    with pytest.raises(InvalidInputError, match="empty"):
        gpen.FaceRestorer(Darken(), size=64).restore(astronaut(), [LM[None]], face_selection=[])


def test_a_mask_of_another_size_is_resized_to_the_images():
    img = astronaut()
    small = torch.zeros(1, 128, 128)
    small[:, :, :64] = 1.0  # the left half, at a quarter of the size
    full = torch.nn.functional.interpolate(small[:, None], size=(512, 512), mode="bilinear",
                                           align_corners=False)[:, 0]
    r = gpen.FaceRestorer(Darken(), size=128)
    a = r.restore(img, [LM[None]], mask=small)
    b = r.restore(img, [LM[None]], mask=full)
    assert len(a.faces) == 1 and torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert a.masks[0, :, 300:].sum() == 0  # bounded by the (resized) mask
    assert torch.equal(r.restore(img, [LM[None]], mask=small[0]).images, a.images)  # (h, w) too
    assert torch.equal(r.restore(img, [LM[None]], mask=small[..., None]).images, a.images)  # and (1, h, w, 1)
    with pytest.raises(InvalidInputError, match="2 frames for 3 images"):
        r.restore(img.repeat(3, 1, 1, 1), [LM[None]] * 3, mask=small.repeat(2, 1, 1))


def test_an_empty_batch_passes_through():
    r = gpen.FaceRestorer(Darken(), size=64)
    empty = torch.zeros(0, 40, 30, 3)
    res = r.restore(empty)
    assert res.images.shape == (0, 40, 30, 3) and res.masks.shape == (0, 40, 30) and res.faces == []
    assert res.faces_per_image == [] and "empty" in res.info
    assert r.restore_aligned(torch.zeros(0, 64, 64, 3)).images.shape == (0, 64, 64, 3)


# ---- detection in chunks ---------------------------------------------------------------------------

def test_detection_reports_progress_checks_interrupts_and_backs_off_on_oom():
    lm = LM[None]
    calls = []

    def backend(images, threshold):
        calls.append(images.shape[0])
        if images.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        box = np.array([[150, 60, 300, 250]], np.float32)
        return [Detections.from_arrays(box, np.ones(1, np.float32), lm) for _ in range(images.shape[0])]

    frames = astronaut().repeat(7, 1, 1, 1)
    progress, ticks = [], []
    r = gpen.FaceRestorer(Darken(), size=64, detector=FaceDetector(backend=backend))
    res = r.restore(frames, frames_per_chunk=4, chunk_size=4, progress=lambda d, t: progress.append((d, t)),
                    check_interrupt=lambda: ticks.append(len(calls)))
    assert calls == [4, 2, 2, 2, 1]  # halved once, then kept at 2
    assert len(res.faces) == 7
    # one bar: detection is the first half, restoration the second, never going back
    assert progress[:4] == [(2, 14), (4, 14), (6, 14), (7, 14)] and progress[-1] == (14, 14)
    fractions = [d / t for d, t in progress]
    assert fractions == sorted(fractions)
    assert len(ticks) >= 5  # before each detector call (and each network chunk)

    class Stop(Exception):
        pass

    def stop_after_first():
        if calls:
            raise Stop

    calls.clear()
    with pytest.raises(Stop):
        r.restore(frames, frames_per_chunk=2, check_interrupt=stop_after_first)
    assert calls == [2]  # cancelled between detection chunks

    def broken(images, threshold):
        raise RuntimeError("not a memory problem")

    with pytest.raises(RuntimeError, match="not a memory"):
        gpen.FaceRestorer(Darken(), size=64, detector=FaceDetector(backend=broken)).restore(frames)


def test_out_of_memory_predicate():
    from gpen.compat import is_oom as is_out_of_memory

    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_detection_memory_model_matches_the_measurements():
    import json

    from conftest import REPO
    from gpen.faces.detect import detection_memory_bytes

    rows = json.loads((REPO / "bench" / "results" / "cpu_detection_memory.json").read_text())["rows"]
    weights = {r["model"]: r["weights_mib_fp32"] for r in rows if "weights_mib_fp32" in r}
    for r in rows:
        if "frames" not in r:
            continue
        measured = (r["working_mib"] + weights[r["model"]]) * 2 ** 20
        model = detection_memory_bytes(r["model"], 900, 1600, r["frames"])
        assert abs(model - measured) <= 0.15 * measured, r
    # frames larger than the detector's working size cost what the working size costs
    assert detection_memory_bytes("retinaface_resnet50", 2160, 3840, 2) == \
        detection_memory_bytes("retinaface_resnet50", 900, 1600, 2)
    assert detection_memory_bytes("retinaface_mobile0.25", 540, 960, 8) < \
        detection_memory_bytes("retinaface_resnet50", 540, 960, 8)
