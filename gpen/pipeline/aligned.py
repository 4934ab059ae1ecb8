"""Restoring frames that already are aligned face crops (a detailer's crops, a face-only video):
no detection, no paste-back; each frame goes through the network and back at its own size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from ..faces.paste import luma
from .frames import check_images, check_scale, rgb_view, upscale_images
from .memory import default_faces_per_chunk, default_frames_per_chunk
from .options import check_options
from .results import RestoreResult


class AlignedRestorer(Protocol):
    """What this needs of :class:`gpen.FaceRestorer`."""

    size: int

    def work_device(self, images: torch.Tensor) -> torch.device: ...

    def default_chunk_size(self, device: torch.device) -> int: ...

    def run_network(self, crops: torch.Tensor, chunk_size: int | None = None, progress=None, check_interrupt=None,
                    done: int = 0, total: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor: ...


def restore_aligned(restorer: AlignedRestorer, images: torch.Tensor, *, strength: float = 1.0, chunk_size: int | None = None,
                    progress: Callable[[int, int], None] | None = None, check_interrupt: Callable[[], None] | None = None,
                    upscale: int = 1, keep_crops: str = "restored") -> RestoreResult:
    """Restore frames that already are aligned face crops (B, H, W, C), e.g. from a detailer, with
    ``restorer``'s network (:meth:`gpen.FaceRestorer.restore_aligned`).

    Each frame is resized to the network size (antialiased bilinear), restored, resized to
    ``upscale`` times the frame size and mixed with the (resized) input by ``strength``. At
    strength 1 with S x S frames and ``upscale`` 1 the result is exactly the network output
    mapped to 0..1. Frames go to the work device a step at a time. ``keep_crops``: "restored"
    (the network outputs, S x S), "aligned" (its inputs) or "none".
    """
    check_images(images)
    check_options(strength=strength, keep_crops=keep_crops)
    upscale = check_scale(upscale)
    b, h0, w0, c = images.shape
    h, w = h0 * upscale, w0 * upscale
    dev = restorer.work_device(images)
    net_chunk = max(1, int(chunk_size or restorer.default_chunk_size(dev)))
    step = max(1, min(default_frames_per_chunk(h, w), default_faces_per_chunk(restorer.size, net_chunk)))
    out = images.new_empty((b, h, w, c))
    kept = []
    for start in range(0, b, step):
        src = images[start:start + step].to(dev)
        x = rgb_view(src).permute(0, 3, 1, 2).float().clamp(0, 1)  # a new tensor: clamp copies
        if (h0, w0) != (restorer.size, restorer.size):
            x = F.interpolate(x, size=(restorer.size, restorer.size), mode="bilinear", align_corners=False,
                              antialias=max(h0, w0) > restorer.size)
        if keep_crops == "aligned":
            kept.append(x.permute(0, 2, 3, 1).to(images.device))
        restored = restorer.run_network(x, net_chunk, progress, check_interrupt, start, b,
                                    out=None if keep_crops == "aligned" else x)
        if keep_crops == "restored":
            kept.append(restored.permute(0, 2, 3, 1).to(images.device))
        back = restored
        if (h, w) != (restorer.size, restorer.size):
            back = F.interpolate(restored, size=(h, w), mode="bilinear", align_corners=False,
                                 antialias=restorer.size > max(h, w)).clamp(0, 1)
        back = back.permute(0, 2, 3, 1)
        src = src.float()
        if upscale > 1 and (strength < 1.0 or c == 4):
            src = upscale_images(src, upscale)
        rgb = src[..., :3] if c >= 3 else src.expand(-1, -1, -1, 3)
        mixed = back if strength == 1.0 else rgb + float(strength) * (back - rgb)
        if c == 1:
            mixed = luma(mixed)
        elif c == 4:
            mixed = torch.cat([mixed, src[..., 3:]], dim=-1)
        out[start:start + step] = mixed.to(images.dtype)
        del src, x, restored, back, rgb, mixed
    masks = torch.ones((b, h, w), dtype=torch.float32, device=images.device)
    crops = torch.cat(kept) if kept else torch.zeros((0, restorer.size, restorer.size, 3), device=images.device)
    return RestoreResult(out, masks, crops, [], [1] * b, f"{b} aligned face crop(s) restored", upscale)
