"""Colour matching: exact statistics identities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpen.faces.color import match_color
from gpen.errors import InvalidInputError

# BT.601 full-range luma/chroma, written out independently of the module
_YCC = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.299 / 1.772, -0.587 / 1.772, 0.5], [0.5, -0.587 / 1.402, -0.114 / 1.402]],
    dtype=torch.float64,
)


def weighted_stats(x: torch.Tensor, w: torch.Tensor | None):
    x = x.double().flatten(2)
    w = torch.ones_like(x[:, :1]) if w is None else w.double().flatten(1)[:, None]
    mean = (x * w).sum(-1) / w.sum(-1)
    std = (((x - mean[..., None]) ** 2 * w).sum(-1) / w.sum(-1)).sqrt()
    return mean, std


def ycc(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("kc,nchw->nkhw", _YCC, x.double())


def smooth_faces(seed: int, n: int = 3, size: int = 32, gain=1.0, bias=0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * gain + bias).float()


def test_matching_a_crop_to_itself_is_identity():
    x = smooth_faces(0)
    mask = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    for space in ("ycbcr", "rgb"):
        torch.testing.assert_close(match_color(x, x, mask, space=space), x, rtol=0, atol=2e-6)
        torch.testing.assert_close(match_color(x, x, None, space=space), x, rtol=0, atol=2e-6)


@pytest.mark.parametrize("use_mask", [False, True])
def test_matched_statistics_equal_the_reference_in_ycbcr(use_mask):
    restored = smooth_faces(2, gain=0.5, bias=0.1)  # low contrast, dark
    reference = smooth_faces(3, gain=0.7, bias=0.2) * torch.tensor([1.0, 0.8, 0.6])[:, None, None]  # warm cast
    mask = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4)) if use_mask else None
    snapshot = restored.clone(), reference.clone()
    out = match_color(restored, reference, mask, clamp=False)
    assert torch.equal(restored, snapshot[0]) and torch.equal(reference, snapshot[1])
    got_mean, got_std = weighted_stats(ycc(out), mask)
    ref_mean, ref_std = weighted_stats(ycc(reference), mask)
    torch.testing.assert_close(got_mean, ref_mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_std, ref_std, rtol=1e-4, atol=1e-6)
    before_mean, _ = weighted_stats(ycc(restored), mask)
    assert float((before_mean - ref_mean).abs().max()) > 0.05  # there was something to correct


def test_rgb_space_matches_each_channel():
    restored, reference = smooth_faces(5, gain=0.3), smooth_faces(6, gain=0.9)
    out = match_color(restored, reference, None, space="rgb", clamp=False)
    got, ref = weighted_stats(out, None), weighted_stats(reference, None)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-4, atol=1e-6)
    # 'rgb' works for any channel count, e.g. a single grey channel
    grey = match_color(restored[:, :1], reference[:, :1], None, space="rgb", clamp=False)
    torch.testing.assert_close(weighted_stats(grey, None)[0], ref[0][:, :1], rtol=0, atol=1e-5)


def test_pixels_outside_the_mask_do_not_count():
    restored, reference = smooth_faces(7), smooth_faces(8)
    mask = torch.zeros(3, 32, 32)
    mask[:, 8:24, 8:24] = 1.0
    out = match_color(restored, reference, mask)
    wild = reference.clone()
    wild[:, :, :4] = torch.rand(3, 3, 4, 32)  # change the reference only where the mask is 0
    torch.testing.assert_close(match_color(restored, wild, mask), out, rtol=0, atol=1e-6)
    assert float((match_color(restored, wild, None) - out).abs().max()) > 1e-3


def test_luma_false_keeps_brightness():
    restored, reference = smooth_faces(9, gain=0.5), smooth_faces(10, gain=0.9, bias=0.05)
    out = match_color(restored, reference, None, luma=False, clamp=False)
    torch.testing.assert_close(ycc(out)[:, 0], ycc(restored)[:, 0], rtol=0, atol=1e-6)
    got, ref = weighted_stats(ycc(out), None), weighted_stats(ycc(reference), None)
    torch.testing.assert_close(got[0][:, 1:], ref[0][:, 1:], rtol=0, atol=1e-5)


def test_faces_are_independent_and_empty_masks_leave_a_face_alone():
    restored, reference = smooth_faces(11), smooth_faces(12)
    mask = torch.ones(3, 32, 32)
    mask[1] = 0
    out = match_color(restored, reference, mask)
    assert torch.equal(out[1], restored[1])
    torch.testing.assert_close(out[2:], match_color(restored[2:], reference[2:], mask[2:]), rtol=0, atol=1e-6)


def test_flat_channel_is_only_shifted_and_clamp_keeps_range():
    restored = torch.full((1, 3, 8, 8), 0.5)
    reference = smooth_faces(13, n=1, size=8)
    out = match_color(restored, reference, None, clamp=False)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(ycc(out).flatten(2).mean(-1), ycc(reference).flatten(2).mean(-1), rtol=0, atol=1e-5)
    bright = match_color(smooth_faces(14, n=1, size=8), torch.ones(1, 3, 8, 8) * 0.99 + reference * 0.2, None)
    assert float(bright.max()) <= 1.0 and float(bright.min()) >= 0.0


def test_dtype_is_kept():
    x, r = smooth_faces(15).half(), smooth_faces(16).half()
    out = match_color(x, r, None)
    assert out.dtype == torch.float16
    ref = match_color(x.float(), r.float(), None)
    assert float((out.float() - ref).abs().max()) < 2e-3


def test_bad_inputs():
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(InvalidInputError):
        match_color(x, torch.zeros(2, 3, 8, 4))
    with pytest.raises(InvalidInputError):
        match_color(x, x, torch.zeros(2, 8, 4))
    with pytest.raises(InvalidInputError):
        match_color(torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8))  # ycbcr needs RGB
    with pytest.raises(InvalidInputError):
        match_color(x, x, space="lab")
    with pytest.raises(InvalidInputError):
        match_color(x, x, space="rgb", luma=False)
    with pytest.raises(InvalidInputError):
        match_color(np.zeros((2, 3, 8, 8)), x)
