"""Checks of the image batches the face pipeline is given (its options: :mod:`gpen.options`).

Each raises :class:`gpen.errors.InvalidInputError` with what was expected. The NaN/inf check looks
at a bounded slice of the batch at a time, so checking a long video batch allocates next to nothing.
"""

from __future__ import annotations

import torch

from .errors import InvalidInputError

_FINITE_CHECK_ELEMENTS = 1 << 24  # values checked per step: a 16 MiB temporary at most, whatever the batch


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """``images`` must be a float (B, H, W, C) tensor, C = 1, 3 or 4, without NaN or infinity."""
    if not isinstance(images, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch tensor (B, H, W, C), got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise InvalidInputError(f"{name} must have shape (B, H, W, C) with C = 1, 3 or 4 (grey, RGB, RGBA), "
                                f"got {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise InvalidInputError(f"{name} must be float 0..1, got {images.dtype}.")
    check_finite(images, name)


def check_finite(images: torch.Tensor, name: str = "images") -> None:
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
            raise InvalidInputError(f"{name} contain NaN or infinite values; fix the node or file that produced them.")


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite: one summing pass (NaN and inf reach the sum), and the
    exact element test only when the sum is not finite (large finite values can overflow it)."""
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())
