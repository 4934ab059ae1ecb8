"""Checks of what the face pipeline is given: image batches, masks, strength and options.

Each raises :class:`gpen.errors.InvalidInputError` with what was expected. The image check looks at
a bounded slice of the batch at a time, so checking a long video batch allocates next to nothing.
"""

from __future__ import annotations

import torch

from .errors import InvalidInputError

KEEP_CROPS = ("restored", "aligned", "none")
"""What :meth:`gpen.FaceRestorer.restore` may keep as ``crops``: the restored or aligned crops, or none."""


def check_images(images: torch.Tensor) -> None:
    """``images`` must be a float (B, H, W, C) tensor, C = 1, 3 or 4, without NaN or infinity."""
    if not isinstance(images, torch.Tensor):
        raise InvalidInputError(f"images must be a torch tensor (B, H, W, C), got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise InvalidInputError(f"images must have shape (B, H, W, C) with C = 1, 3 or 4 (grey, RGB, RGBA), "
                                f"got {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise InvalidInputError(f"images must be float 0..1, got {images.dtype}.")
    check_finite(images)


_FINITE_CHECK_ELEMENTS = 1 << 24  # values checked per step: a 16 MiB temporary, whatever the batch


def check_finite(images: torch.Tensor) -> None:
    """Refuse NaN/inf pixels, checking a few frames (or rows of one huge frame) at a time."""
    if not images.numel():
        return
    b, h = images.shape[:2]
    per_row = max(1, images.shape[2] * images.shape[3])
    rows = max(1, _FINITE_CHECK_ELEMENTS // per_row)
    frames = max(1, rows // h)
    pieces = ((images[i:i + frames] for i in range(0, b, frames)) if rows >= h else
              (images[i, r:r + rows] for i in range(b) for r in range(0, h, rows)))
    for piece in pieces:
        if not all_finite(piece):
            raise InvalidInputError("images contain NaN or infinite values; fix the node or file that produced them.")


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite: one summing pass (NaN and inf reach the sum), and the
    exact element test only when the sum is not finite (large finite values can overflow it)."""
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def check_strength(strength: float) -> None:
    """``strength`` must lie in 0..1."""
    if not 0.0 <= float(strength) <= 1.0:
        raise InvalidInputError(f"strength must be within 0..1, got {strength}.")


def check_mask(mask: torch.Tensor | None, b: int, h: int, w: int) -> None:
    """``mask`` must be None or (B or 1, H, W) like the images."""
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.ndim != 3 or mask.shape[1:] != (h, w)
                             or mask.shape[0] not in (1, b)):
        raise InvalidInputError(f"mask must have shape ({b} or 1, {h}, {w}) to match the images, got "
                                f"{tuple(getattr(mask, 'shape', ()))}.")


def check_keep_crops(keep_crops: str) -> None:
    """``keep_crops`` must be one of :data:`KEEP_CROPS`."""
    if keep_crops not in KEEP_CROPS:
        raise InvalidInputError(f"keep_crops must be 'restored', 'aligned' or 'none', got {keep_crops!r}.")
