"""Output scale: a larger picture out than in, faces restored from the original and pasted at the
output resolution (gpen.pipeline.frames, FaceRestorer(upscale=...))."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gpen
from gpen.errors import InvalidInputError
from gpen.faces.align import template_points
from gpen.faces.paste import scale_inverse
from gpen.pipeline.frames import check_scale, resize_images, resize_masks, upscale_images

from conftest import astronaut, landmarks_of, psnr


def identity(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


def darken(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 - 0.5


def _bilinear(img: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(img.permute(0, 3, 1, 2), scale_factor=scale, mode="bilinear",
                         align_corners=False).permute(0, 2, 3, 1)


def _box(face, scale: int) -> tuple[slice, slice]:
    x0, y0, x1, y1 = (int(round(scale * float(v))) for v in face.box)
    return slice(y0, y1), slice(x0, x1)


# ---------------------------------------------------------------- frames


def test_resize_filter_and_scale_checks():
    g = torch.Generator().manual_seed(0)
    img = F.interpolate(torch.rand(2, 3, 5, 6, generator=g), size=(20, 30), mode="bilinear").permute(0, 2, 3, 1)
    up = resize_images(img, (40, 60))
    assert up.shape == (2, 40, 60, 3) and up.dtype == img.dtype and 0 <= up.min() and up.max() <= 1
    # bicubic: a linear ramp stays a linear ramp away from the borders
    ramp = torch.linspace(0.1, 0.9, 32).view(1, 1, 32, 1).expand(1, 8, 32, 1)
    r2 = resize_images(ramp, (16, 64))[0, 8, 4:-4, 0]
    assert (r2[1:] - r2[:-1]).std() < 1e-4
    assert torch.equal(resize_images(img, (20, 30)), img)
    down = resize_images(up, (20, 30))
    assert psnr(down, img) > 35  # back down (antialiased): close to where it started
    for bad in (0, 5, 1.5, True, "2"):
        with pytest.raises(InvalidInputError, match="upscale"):
            check_scale(bad)
    m = torch.zeros(1, 10, 10)
    m[:, :, 5:] = 1
    rm = resize_masks(m, (20, 20))
    assert rm.shape == (1, 20, 20) and torch.all(rm[:, :, :9] == 0) and torch.all(rm[:, :, 11:] == 1)


def test_upscaler_output_is_resized_to_exactly_the_scale():
    calls = []

    def four_x(frames):  # an ESRGAN-like 4x model stand-in: nearest 4x
        calls.append(tuple(frames.shape))
        return frames.repeat_interleave(4, 1).repeat_interleave(4, 2)

    g = torch.Generator().manual_seed(1)
    rgba = torch.rand(2, 12, 10, 4, generator=g)
    out = upscale_images(rgba, 2, four_x)
    assert out.shape == (2, 24, 20, 4) and calls == [(2, 12, 10, 3)]
    torch.testing.assert_close(out[..., :3], resize_images(four_x(rgba[..., :3]), (24, 20)), rtol=0, atol=0)
    torch.testing.assert_close(out[..., 3:], resize_images(rgba[..., 3:], (24, 20)), rtol=0, atol=0)
    grey = upscale_images(rgba[..., :1], 3, four_x)
    assert grey.shape == (2, 36, 30, 1)
    with pytest.raises(InvalidInputError, match="upscale model returned"):
        upscale_images(rgba, 2, lambda f: f[0])


def test_scaled_paste_matrix_keeps_pixel_centres():
    inv = np.array([[[0.5, 0.1, 10.0], [-0.1, 0.5, 20.0]]])
    s2 = scale_inverse(inv, 2)
    pt = np.array([7.0, 3.0, 1.0])
    x, y = inv[0] @ pt
    assert np.allclose(s2[0] @ pt, [2 * x + 0.5, 2 * y + 0.5])  # (x + 0.5) * 2 - 0.5
    assert np.array_equal(scale_inverse(inv, 1), inv)


# ---------------------------------------------------------------- the pipeline


def test_identity_restorer_upscale_2_matches_the_resized_input():
    img = astronaut()
    lms = [landmarks_of("skimage.data.astronaut")]
    r = gpen.FaceRestorer(identity, size=512)
    one = r.restore(img, lms, keep_crops="aligned")
    two = r.restore(img, lms, upscale=2, keep_crops="aligned")
    assert two.images.shape == (1, 1024, 1024, 3) and two.masks.shape == (1, 1024, 1024) and two.scale == 2
    resized = resize_images(img, (1024, 1024))
    assert psnr(two.images, resized) >= 35.0
    face = _box(two.faces[0], 2)
    assert psnr(two.images[0][face], resized[0][face]) >= 35.0  # "everywhere": the face too (42 dB here)
    outside = two.masks[0] == 0
    assert torch.equal(two.images[0][outside], resized[0][outside])  # the background is the resized input
    # the faces come from the full-resolution warp: same alignment and crops as without upscaling,
    # and the face region is the original warped twice (crop, then back at 2x) = bilinear 2x (66 dB)
    assert len(two.faces) == 1 and np.array_equal(two.faces[0].affine, one.faces[0].affine)
    assert np.array_equal(two.faces[0].box, one.faces[0].box)
    assert torch.equal(two.crops, one.crops) and two.crops.shape == (1, 512, 512, 3)
    assert psnr(two.images[0][face], _bilinear(img, 2)[0][face]) >= 55.0
    # the blend mask is the same footprint at twice the size
    assert (resize_masks(one.masks, (1024, 1024)) - two.masks).abs().mean() < 2e-3
    assert "output x2" in two.info


def test_bigger_model_crop_keeps_its_detail_at_the_output_size():
    """A 1024 crop pasted at 2x: the face is the original through the crop, not a 1x paste resized."""
    img = astronaut()
    lms = [landmarks_of("skimage.data.astronaut")]
    two = gpen.FaceRestorer(identity, size=1024).restore(img, lms, upscale=2)
    face = _box(two.faces[0], 2)
    one_then_resized = resize_images(gpen.FaceRestorer(identity, size=1024).restore(img, lms).images, (1024, 1024))
    direct = _bilinear(img, 2)[0][face]
    assert psnr(two.images[0][face], direct) >= 60.0
    assert psnr(two.images[0][face], direct) > psnr(one_then_resized[0][face], direct) + 10


def test_darkened_face_lands_at_twice_its_position():
    img = astronaut()
    lms = [landmarks_of("skimage.data.astronaut")]
    two = gpen.FaceRestorer(darken, size=256).restore(img, lms, upscale=2)
    resized = resize_images(img, (1024, 1024))
    pts = lms[0][0]  # (5, 2) of the one face
    cx, cy = (2 * pts[:, 0].mean() + 0.5, 2 * pts[:, 1].mean() + 0.5)
    centre = (slice(int(cy) - 20, int(cy) + 20), slice(int(cx) - 20, int(cx) + 20))
    assert psnr(two.images[0][centre], resized[0][centre] / 2) > 35.0
    assert two.masks[0][centre].min() > 0.99


def test_video_chunks_no_face_frames_masks_and_upscaler_calls():
    g = torch.Generator().manual_seed(2)
    frames = torch.rand(5, 64, 80, 3, generator=g)
    lm = (template_points("gpen", 64) * 0.5 + np.array([30.0, 10.0])).astype(np.float32)  # centre x ~ 46
    landmarks = [lm[None], None, lm[None], None, None]
    calls = []

    def upscaler(x):
        calls.append(x.shape[0])
        return resize_images(x, (x.shape[1] * 3, x.shape[2] * 3))

    mask = torch.ones(1, 64, 80)
    mask[:, :, :40] = 0  # left half: keep the original
    res = gpen.FaceRestorer(darken, size=64).restore(frames, landmarks, upscale=2, frames_per_chunk=2,
                                                     upscaler=upscaler, mask=mask, track_faces=False)
    assert res.images.shape == (5, 128, 160, 3) and res.masks.shape == (5, 128, 160)
    assert sum(calls) == 5 and max(calls) <= 2  # bounded: the background is made chunk by chunk
    background = upscale_images(frames, 2, upscaler)
    for i in (1, 3, 4):  # no face: the upscaled background itself
        assert torch.equal(res.images[i], background[i]) and res.masks[i].abs().sum() == 0
    for i in (0, 2):
        assert res.masks[i].sum() > 0 and torch.all(res.masks[i][:, :78] == 0)
        assert torch.equal(res.images[i][:, :78], background[i][:, :78])  # the user mask bounds the blend
    assert res.faces_per_image == [1, 0, 1, 0, 0]


def test_grey_rgba_and_aligned_mode():
    img = astronaut()
    lms = [landmarks_of("skimage.data.astronaut")]
    r = gpen.FaceRestorer(identity, size=256)
    grey = img.mean(-1, keepdim=True)
    out = r.restore(grey, lms, upscale=2)
    assert out.images.shape == (1, 1024, 1024, 1)
    assert psnr(out.images, resize_images(grey, (1024, 1024))) >= 35.0
    rgba = torch.cat([img, torch.full_like(img[..., :1], 0.25)], -1)
    out = r.restore(rgba, lms, upscale=3)
    assert out.images.shape == (1, 1536, 1536, 4) and torch.allclose(out.images[..., 3], torch.tensor(0.25))
    crops = torch.rand(2, 128, 128, 3)
    aligned = r.restore_aligned(crops, upscale=2)  # 128 -> network 256 -> 256 = the network output
    assert aligned.images.shape == (2, 256, 256, 3) and aligned.masks.shape == (2, 256, 256)
    torch.testing.assert_close(aligned.images, aligned.crops, rtol=0, atol=0)
    assert psnr(r.restore_aligned(crops, upscale=2, strength=0.0).images, resize_images(crops, (256, 256))) > 60
    with pytest.raises(InvalidInputError, match="upscale"):
        r.restore(img, lms, upscale=5)
