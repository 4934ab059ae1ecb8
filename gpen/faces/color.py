"""Optional colour correction of restored face crops towards their source crops.

Each restored crop gets the per-channel (mask-weighted) mean and standard deviation of its
aligned input crop. The default space is YCbCr (BT.601, full range): it separates brightness from
colour about as well as CIE Lab does for natural images, so matching channel by channel does not
tint faces the way per-RGB-channel matching can, yet it is a plain linear map of RGB: exactly
invertible, one 3x3 matrix product per pixel, no gamma or cube roots, and the matched statistics
hold exactly (before clipping). ``luma=False`` fixes only a colour cast and keeps the restored
brightness and contrast.
"""

from __future__ import annotations

import logging

import torch

from ..errors import InvalidInputError

logger = logging.getLogger(__name__)

__all__ = ["match_color"]

# RGB -> YCbCr (BT.601 full range, without the constant 0.5 chroma offset, which cancels out here)
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168735891647856, -0.331264108352144, 0.5),
    (0.5, -0.418687589158345, -0.081312410841655),
)


def _weighted_stats(x: torch.Tensor, w: torch.Tensor, wsum: torch.Tensor):
    """Per-(N, C) weighted mean and standard deviation of x (N, C, P) with weights w (N, 1, P)."""
    mean = (x * w).sum(-1, keepdim=True) / wsum
    var = (((x - mean) ** 2) * w).sum(-1, keepdim=True) / wsum
    return mean, var.clamp_min(0).sqrt()


def match_color(
    restored: torch.Tensor,
    reference: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    space: str = "ycbcr",
    luma: bool = True,
    clamp: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Give each restored crop the per-channel mean/std of its reference crop.

    restored, reference: (N, C, S, S) float 0..1 (RGB for ``space="ycbcr"``, which needs C == 3;
    ``space="rgb"`` works channel by channel for any C). mask: (N, S, S) weights >= 0 (e.g. the
    paste-back or parsing mask), None for uniform; a face whose mask is all zero is returned unchanged.
    luma: also match brightness (Y); with False only Cb/Cr are matched (ycbcr only).
    clamp: clip the result to 0..1 (the statistics then hold only where nothing was clipped).
    A channel without variation in ``restored`` (std <= eps) is only shifted.
    Returns a new tensor in ``restored``'s dtype and device; computed in float32 (float64 stays).
    """
    for name, t in (("restored", restored), ("reference", reference)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or not t.is_floating_point():
            raise InvalidInputError(
                f"{name} must be a float tensor of shape (N, C, S, S), got "
                f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}."
            )
    if reference.shape != restored.shape:
        raise InvalidInputError(
            f"reference {tuple(reference.shape)} must have the same shape as restored {tuple(restored.shape)}."
        )
    if space not in ("ycbcr", "rgb"):
        raise InvalidInputError(f"Unknown colour space {space!r}; expected 'ycbcr' or 'rgb'.")
    n, c, h, w = restored.shape
    if space == "ycbcr" and c != 3:
        raise InvalidInputError(f"space='ycbcr' needs RGB crops (3 channels), got {c}; use space='rgb'.")
    if not luma and space != "ycbcr":
        raise InvalidInputError("luma=False (match colour only) needs space='ycbcr'.")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (n, h, w):
            raise InvalidInputError(
                f"mask must be a tensor of shape ({n}, {h}, {w}), got "
                f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}."
            )
    if n == 0:
        return restored.clone()

    dt = torch.float64 if restored.dtype == torch.float64 else torch.float32
    dev = restored.device
    x = restored.to(dt).reshape(n, c, h * w)
    r = reference.to(device=dev, dtype=dt).reshape(n, c, h * w)
    if space == "ycbcr":
        to_y = torch.tensor(_RGB_TO_YCBCR, dtype=dt, device=dev)
        x = torch.einsum("kc,ncp->nkp", to_y, x)
        r = torch.einsum("kc,ncp->nkp", to_y, r)
    if mask is None:
        wts = torch.ones((n, 1, h * w), dtype=dt, device=dev)
    else:
        wts = mask.to(device=dev, dtype=dt).clamp_min(0).reshape(n, 1, h * w)
    wsum = wts.sum(-1, keepdim=True)  # (N, 1, 1)
    valid = wsum > 0
    wsum = torch.where(valid, wsum, torch.ones_like(wsum))
    mu_x, sd_x = _weighted_stats(x, wts, wsum)
    mu_r, sd_r = _weighted_stats(r, wts, wsum)
    scale = torch.where(sd_x > eps, sd_r / sd_x.clamp_min(eps), torch.ones_like(sd_x))
    matched = (x - mu_x) * scale + mu_r
    if not luma:
        matched = torch.cat([x[:, :1], matched[:, 1:]], dim=1)
    if space == "ycbcr":
        matched = torch.einsum("kc,ncp->nkp", torch.linalg.inv(to_y), matched)
    out = matched.reshape(n, c, h, w)
    if clamp:
        out = out.clamp(0.0, 1.0)
    out = out.to(restored.dtype)
    # faces without any mask weight come back untouched (bitwise)
    return torch.where(valid.reshape(n, 1, 1, 1), out, restored)
