"""FaceRestorer on long batches: bounded working memory, in-place paste, per-chunk checks (issue 19).

Memory is checked as an invariant, not measured: a torch dispatch mode records every new tensor
storage an operation creates, so a test can say "nothing but the outputs is as big as a frame".
(The peak memory itself is measured by ``python -m bench pipeline --frames 32``.)
"""

from __future__ import annotations

import gc
import logging
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import gpen
import gpen.pipeline.memory
import gpen.pipeline.aligned
import gpen.pipeline.restorer
from gpen.errors import ModelLoadError
from gpen.model.layouts import seeded_state_dict

from conftest import astronaut, landmarks_of, needs_solvay, solvay


def identity(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


class Allocations(TorchDispatchMode):
    """Sizes (bytes) of the new storages that operations create while active (views and in-place
    results share an input's storage and are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        seen = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        for t in _tensors(out):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                self.sizes.append(t.untyped_storage().nbytes())
        return out


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def video(frames: int, height: int = 360, width: int = 640, faces: int = 2):
    """``frames`` frames (frames, H, W, 3) with ``faces`` astronaut faces each, and their landmarks."""
    src = astronaut()[0].permute(2, 0, 1)[None]
    lm = landmarks_of("skimage.data.astronaut")[0]
    frame = torch.full((height, width, 3), 0.4)
    marks = []
    for k in range(faces):
        side = 150
        x0, y0 = 20 + k * (width - side - 40) // max(1, faces - 1), 40 + 30 * k
        frame[y0:y0 + side, x0:x0 + side] = F.interpolate(src, size=(side, side), mode="bilinear",
                                                          antialias=True)[0].permute(1, 2, 0)
        marks.append(lm * side / 512 + np.array([x0, y0], np.float32))
    return frame[None].repeat(frames, 1, 1, 1).contiguous(), [np.stack(marks)] * frames


def test_no_full_frame_working_copies():
    """Issue 16: faces are pasted straight into the output; the only full-size tensors created are
    the output images and masks, whatever the number of frames."""
    images, marks = video(6, 720, 1280)
    b, h, w, c = images.shape
    r = gpen.FaceRestorer(identity, size=128)
    with Allocations() as alloc:
        res = r.restore(images, marks, keep_crops="none", frames_per_chunk=4)
    assert len(res.faces) == 12
    frame_bytes = h * w * 4  # one frame's mask; an RGB frame is 3x that
    big = sorted(s for s in alloc.sizes if s >= frame_bytes)
    assert big == sorted([b * h * w * c * 4, b * h * w * 4]), [s / frame_bytes for s in big]
    # and the result is the same as pasting every face into a copy at once
    ref = r.restore(images, marks, keep_crops="none", frames_per_chunk=64)
    assert torch.equal(res.images, ref.images) and torch.equal(res.masks, ref.masks)


def test_input_check_is_bounded(monkeypatch):
    """The NaN/inf check of the input looks at a bounded slice at a time (+4.9 GiB for 120 1080p frames before)."""
    images, _ = video(3, 1080, 1920, faces=1)  # 18.7 M values, over the 16.8 M of one slice
    r = gpen.FaceRestorer(identity, size=64)
    with Allocations() as alloc:
        res = r.restore(images, [None] * 3, keep_crops="none")
    assert res.faces == []
    assert max(alloc.sizes) == images.numel() * 4  # the output copy; no full-batch temporary beside it
    assert sorted(alloc.sizes)[-2] <= images.numel() * 4 // 3  # masks; the check itself allocates next to nothing
    bad = images.clone()
    bad[2, 1000, 1900, 1] = float("nan")
    with pytest.raises(gpen.InvalidInputError, match="NaN"):
        r.restore(bad, [None] * 3)
    bad[2, 1000, 1900, 1] = float("inf")
    with pytest.raises(gpen.InvalidInputError, match="NaN or infinite"):
        r.restore_aligned(bad)
    huge = torch.full((1, 64, 64, 3), 3e38)  # finite, but its sum overflows: the exact test decides
    from gpen.pipeline.frames import all_finite

    assert all_finite(huge)


@needs_solvay
@pytest.mark.parametrize("upscale", [1, 2])
def test_faces_per_step_are_bounded_and_results_equal(monkeypatch, upscale):
    """29 faces of one frame no longer go through in one step (faces x S^2 working memory); the
    frame split over steps comes out as in one step (also onto a 2x background)."""
    img = solvay()
    lms = [landmarks_of("solvay_conference_1927.png")]
    steps = []
    real_crop = gpen.FaceRestorer.crop_faces

    def spy(self, frames, faces, first_frame=0):
        steps.append(len(faces))
        return real_crop(self, frames, faces, first_frame)

    monkeypatch.setattr(gpen.FaceRestorer, "crop_faces", spy)
    r = gpen.FaceRestorer(lambda x: x * 0.5, size=512)  # darkens: overlaps matter
    res = r.restore(img, lms, chunk_size=2, upscale=upscale)
    assert sum(steps) == 29 and max(steps) < 29, steps
    assert max(steps) <= gpen.pipeline.memory.default_faces_per_chunk(512, 2)
    monkeypatch.setattr(gpen.pipeline.memory, "CROPS_PER_STEP_BYTES", 1 << 40)
    steps.clear()
    whole = r.restore(img, lms, chunk_size=2, upscale=upscale)
    assert steps == [29]
    assert torch.equal(res.images, whole.images) and torch.equal(res.masks, whole.masks)
    assert torch.equal(res.crops, whole.crops)


def test_aligned_mode_runs_in_bounded_chunks(monkeypatch):
    monkeypatch.setattr(gpen.pipeline.aligned, "default_frames_per_chunk", lambda h, w: 2)
    images = torch.rand(5, 100, 90, 3)
    r = gpen.FaceRestorer(lambda x: x.flip(-1), size=64)
    with Allocations() as alloc:
        res = r.restore_aligned(images, strength=0.5, keep_crops="none")
    frame = 100 * 90 * 3 * 4
    sizes = list(alloc.sizes)
    sizes.remove(5 * frame)  # the output
    sizes.remove(5 * 100 * 90 * 4)  # its masks
    assert max(sizes) == 2 * frame  # every working tensor holds at most one step of 2 frames
    assert res.crops.shape == (0, 64, 64, 3)
    whole = gpen.FaceRestorer(lambda x: x.flip(-1), size=64).restore_aligned(images, strength=0.5, chunk_size=64)
    monkeypatch.undo()
    assert torch.allclose(res.images, whole.images, atol=1e-6)


def test_aligned_mode_at_half_strength_is_the_mix():
    """Strength 0.5 in aligned mode is exactly halfway between the input and the restored frame."""
    net = gpen.load_model(seeded_state_dict(gpen.GPENConfig(size=64, style_dim=32, n_mlp=2, narrow=0.0625), seed=4))
    images = torch.rand(2, 100, 90, 3)
    r = gpen.FaceRestorer(net)
    half = r.restore_aligned(images, strength=0.5, chunk_size=2)  # one network call, as below
    x = F.interpolate(images.permute(0, 3, 1, 2), size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    with torch.inference_mode():
        restored = (net(x * 2 - 1).clamp(-1, 1) + 1) / 2
    back = F.interpolate(restored, size=(100, 90), mode="bilinear", align_corners=False).clamp(0, 1)
    expected = 0.5 * images + 0.5 * back.permute(0, 2, 3, 1)
    assert (half.images - expected).abs().max() <= 1e-5
    assert (half.images - images).abs().mean() > 0.05  # and it did change the frames
    assert torch.equal(half.crops, restored.permute(0, 2, 3, 1))


def test_colour_correction_ignores_the_padding_beyond_the_border():
    """A flat 0.6 face cut by the left border comes back at 0.6 (0.38 when the black padding counted)."""
    lm = landmarks_of("skimage.data.astronaut")[0].copy()
    lm[:, 0] -= lm[:, 0].min() - 5  # left eye and mouth corner 5 px from the left border
    img = torch.full((1, 400, 400, 3), 0.6)
    flat = lambda x: torch.full_like(x, 0.2)  # noqa: E731  a restorer that returns a flat 0.6 face
    res = gpen.FaceRestorer(flat, size=256).restore(img, [lm[None]], color_correction=True)
    (face,) = res.faces
    inside = res.masks[0] > 0.5
    assert inside.any() and bool((res.masks[0][:, 0] > 0.5).any())  # the face does reach the border
    assert (res.images[0][inside] - 0.6).abs().max() <= 1e-5


class Overflowing(torch.nn.Module):
    """Stand-in 16-bit network: infinite outputs in float16 (an fp16 overflow), exact in float32."""

    size = 64

    def __init__(self, nan_in_fp32: bool = False) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1, dtype=torch.float16), requires_grad=False)
        self.nan_in_fp32 = nan_in_fp32

    @property
    def dtype(self) -> torch.dtype:
        return self.w.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w.dtype == torch.float16:
            y = x.clone()
            y[:, 0, 0, 0] = float("inf")
            return y
        return x * float("nan") if self.nan_in_fp32 else x.clone()


def test_overflowing_chunks_are_restored_again_in_float32(caplog):
    images, marks = video(3, faces=1)
    net = Overflowing()
    with caplog.at_level(logging.WARNING, logger="gpen"):
        res = gpen.FaceRestorer(net).restore(images, marks, chunk_size=2)
    ref = gpen.FaceRestorer(identity, size=64).restore(images, marks, chunk_size=2)
    assert torch.equal(res.images, ref.images) and torch.isfinite(res.images).all()
    assert caplog.text.count("restored them again in float32") == 2  # once per chunk of 2 and 1 faces
    assert net.w.dtype == torch.float16  # the model itself is left as it was

    with pytest.raises(ModelLoadError, match="even in float32"):
        gpen.FaceRestorer(Overflowing(nan_in_fp32=True)).restore(images, marks)
    with pytest.raises(ModelLoadError, match="NaN or infinite"):
        gpen.FaceRestorer(lambda x: x * float("nan"), size=64).restore(images, marks)
    aligned = gpen.FaceRestorer(Overflowing()).restore_aligned(torch.rand(2, 64, 64, 3))  # aligned mode too
    assert torch.isfinite(aligned.images).all()


def test_helper_networks_are_shared_and_hold_no_model(monkeypatch):
    """Issue 19.7/19.11: restorers with different models share one detector; none keeps a model alive."""
    import gpen.faces.detect as detect
    from gpen.faces.networks import NetworkCache

    built = []

    class Detector:
        def __init__(self, name, device=None, extra_dirs=(), allow_download=True):
            built.append(name)

        def to(self, device):
            return self

        def detect(self, images, threshold=0.5):
            return [detect.Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                      np.zeros((0, 5, 2), np.float32)) for _ in range(images.shape[0])]

    monkeypatch.setattr(detect, "FaceDetector", Detector)
    networks = NetworkCache()
    img = astronaut()
    nets = [torch.nn.Identity(), torch.nn.Identity()]
    refs = [weakref.ref(n) for n in nets]
    for _ in range(2):
        for net in nets:
            gpen.FaceRestorer(net, size=64, networks=networks).restore(img)
    assert built == ["retinaface_resnet50"] and len(networks) == 1
    del nets, net
    gc.collect()
    assert all(r() is None for r in refs)  # the shared networks kept no restoration model alive


def test_the_group_photo_tests_run_on_a_fresh_clone():
    """The photo the group-photo tests need ships in assets/: they never skip for want of shared/."""
    import hashlib

    from conftest import REPO, SHARED_SOLVAY, SOLVAY

    assert SOLVAY.is_file() and SOLVAY.is_relative_to(REPO / "assets")
    if SHARED_SOLVAY.is_file():  # the landmark fixture was measured on the shared copy: same bytes
        digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
        assert digest(SOLVAY) == digest(SHARED_SOLVAY)
    assert solvay().shape == (1, 568, 1328, 3)


def test_upscaled_output_with_frames_without_faces():
    """With upscale, frames without faces get their resized background, and outside the faces every
    frame equals it: the steps skip those frames but the output does not."""
    from gpen.pipeline.frames import upscale_images

    images, marks = video(5, 240, 320, faces=1)
    images = images * torch.linspace(0.5, 1.0, 5)[:, None, None, None]  # frames differ
    given = [marks[0] if i in (1, 3) else None for i in range(5)]
    res = gpen.FaceRestorer(lambda x: x * 0.5, size=64).restore(images, given, upscale=2, frames_per_chunk=2,
                                                                     track_faces=False)
    background = upscale_images(images, 2)
    assert res.images.shape == (5, 480, 640, 3) and res.faces_per_image == [0, 1, 0, 1, 0]
    outside = res.masks == 0
    assert torch.equal(res.images[outside], background[outside])
    assert res.masks[1].max() > 0.99 and (res.images[1] - background[1]).abs().max() > 0.1
