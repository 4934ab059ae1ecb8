"""Frame-level helpers of the pipeline: input checks, colour views, resizing, the output scale.

Frames are ComfyUI IMAGE batches (B, H, W, C) float 0..1 with C = 1 (grey), 3 (RGB) or 4 (RGBA).

Output scale: :func:`resize_images` is the built-in filter: separable bicubic with PIL's kernel
(a = -0.5), antialiased when shrinking (``torch.nn.functional.interpolate(..., mode="bicubic",
antialias=True)``), computed in float32 and clamped to 0..1. :func:`upscale_images` uses it, or a
caller's ``upscaler`` (e.g. an ESRGAN-type model through the host) followed by an exact resize
when the model's own factor differs from ``scale``. The faces themselves are not resized: the
restorer warps them from the original image and pastes them at the output resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..faces.paste import luma

MAX_SCALE = 4
Upscaler = Callable[[torch.Tensor], torch.Tensor]


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Refuse anything but a finite float (B, H, W, C) batch with C = 1, 3 or 4 (``name``: for messages)."""
    if not isinstance(images, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch tensor (B, H, W, C), got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise InvalidInputError(f"{name} must have shape (B, H, W, C) with C = 1, 3 or 4 (grey, RGB, RGBA), "
                                f"got {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise InvalidInputError(f"{name} must be float 0..1, got {images.dtype}.")
    check_finite(images, name, max_value=FLOAT_RANGE_LIMIT)


FLOAT_RANGE_LIMIT = 2.0
"""Float pixels above this are taken for 0..255 values. Resampling 0..1 images rings past 1.0 by
less: at most 1.45 measured (a one-pixel checkerboard upscaled 4x with OpenCV's Lanczos-4; real
photographs up to 1.12), ``bench/results/float_range_overshoot.json`` (``python -m bench float-range``)."""


_FINITE_CHECK_ELEMENTS = 1 << 24  # values checked per step: a 16 MiB temporary at most, whatever the batch


def check_finite(images: torch.Tensor, name: str = "images", max_value: float | None = None) -> None:
    """Refuse NaN/inf pixels (and, with ``max_value``, values above it: 0..255 given as float),
    checking a few frames (or rows of one huge frame) at a time: checking a long video batch
    allocates next to nothing (the whole batch at once took 4x its size)."""
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
        if max_value is not None and float(piece.amax()) > max_value:
            raise InvalidInputError(f"{name} hold values up to {float(images.amax()):g}: they look like 0..255; give "
                                    f"float 0..1 (divide by 255).")


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite: one summing pass accumulated in float32 or wider (NaN
    and inf reach the sum; a 16-bit sum of large finite values would overflow), and the exact
    element test only when the sum is not finite (finite values beyond float32's range)."""
    total = t.sum(dtype=torch.float32) if t.is_floating_point() and t.element_size() < 4 else t.sum()
    if bool(torch.isfinite(total)):
        return True
    return bool(torch.isfinite(t).all())


def rgb_view(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) RGB view of grey (C=1), RGB or RGBA images."""
    c = images.shape[-1]
    if c == 1:
        return images.expand(-1, -1, -1, 3)
    return images[..., :3]



def check_scale(scale) -> int:
    """``scale`` as an int in 1..:data:`MAX_SCALE`, else :class:`InvalidInputError`."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale != int(scale) \
            or not 1 <= int(scale) <= MAX_SCALE:
        raise InvalidInputError(f"upscale must be a whole number from 1 to {MAX_SCALE}, got {scale!r}.")
    return int(scale)


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) float 0..1 -> (B, h, w, C) with antialiased bicubic, clamped; same dtype."""
    h, w = int(size[0]), int(size[1])
    if tuple(images.shape[1:3]) == (h, w):
        return images.clone()
    x = images.permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    return y.clamp_(0, 1).permute(0, 2, 3, 1).to(images.dtype)


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) masks -> (B, h, w) float32 with bilinear interpolation (0 stays 0 where all
    neighbours are 0), clamped to 0..1."""
    if tuple(masks.shape[1:]) == tuple(size):
        return masks.float()
    return F.interpolate(masks.float()[:, None], size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=size[0] < masks.shape[1])[:, 0].clamp(0, 1)


def upscale_images(images: torch.Tensor, scale: int, upscaler: Upscaler | None = None) -> torch.Tensor:
    """(B, H, W, C) 0..1 -> (B, scale*H, scale*W, C) in the images' dtype and device.

    Without ``upscaler``: :func:`resize_images` (``scale`` 1 returns a copy). With one: it gets the
    RGB frames (B, H, W, 3) (grey is expanded to RGB and comes back as luma; an alpha channel is
    resized with the built-in filter) and may return any size, which is then resized to exactly
    ``scale`` times the input.
    """
    scale = check_scale(scale)
    b, h, w, c = images.shape
    size = (h * scale, w * scale)
    if upscaler is None:
        return resize_images(images, size)
    rgb = rgb_view(images)
    up = upscaler(rgb)
    if not isinstance(up, torch.Tensor) or up.ndim != 4 or up.shape[0] != b or up.shape[-1] != 3:
        got = tuple(up.shape) if isinstance(up, torch.Tensor) else type(up).__name__
        raise InvalidInputError(f"the upscale model returned {got} for frames {tuple(rgb.shape)}; expected "
                                f"({b}, H, W, 3) images.")
    up = resize_images(up.to(images.device, images.dtype).clamp(0, 1), size)
    if c == 1:
        return luma(up)
    if c == 4:
        return torch.cat([up, resize_images(images[..., 3:], size)], dim=-1)
    return up


__all__ = ["MAX_SCALE", "all_finite", "check_finite", "check_images", "check_scale", "resize_images", "resize_masks", "rgb_view",
           "upscale_images"]
