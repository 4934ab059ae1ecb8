"""Paste restored face crops back into their images: feathered masks, inverse warp, blending.

The semantics follow the official GPEN paste-back (described in shared/README.md): each face is
mixed with its aligned input by ``strength``, warped back with the crop -> image matrix together with
its mask, overlapping faces resolve per pixel to the face with the larger mask value (the total mask
is the per-pixel maximum), and the image becomes ``img * (1 - m) + face * m``.

All work on the image happens inside each face's bounding box, so small faces in huge images are cheap,
and :func:`paste_into` writes straight into an output batch: no full-image working copies.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .align import affine_grid, check_image_index, compute_dtype, invert_affine
from ..errors import InvalidInputError

logger = logging.getLogger(__name__)

_LUMA = (0.299, 0.587, 0.114)

def luma(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) RGB -> (..., 1) BT.601 luma, for grey images in, grey images out."""
    return (rgb * torch.tensor(_LUMA, device=rgb.device, dtype=rgb.dtype)).sum(-1, keepdim=True)

__all__ = ["feather_mask", "luma", "paste_back", "paste_into", "scale_inverse"]

_MASK_BASE = 512
# Upper bound on the elements of one batched sampling call (padded boxes x channels): 2**26 floats = 256 MiB.
_CHUNK_ELEMENTS = 1 << 26


@lru_cache(maxsize=8)
def _feather_mask_np(size: int) -> np.ndarray:
    base = np.zeros((_MASK_BASE, _MASK_BASE), np.float32)
    cv2.rectangle(base, (26, 26), (486, 486), (1, 1, 1), -1, cv2.LINE_AA)
    base = cv2.GaussianBlur(base, (101, 101), 4)
    base = cv2.GaussianBlur(base, (101, 101), 4)
    if size != _MASK_BASE:
        base = cv2.resize(base, (size, size), interpolation=cv2.INTER_LINEAR)
    base = np.clip(base, 0.0, 1.0)
    base.setflags(write=False)
    return base


def feather_mask(size: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The official GPEN paste-back mask for a ``size`` x ``size`` crop, values 0..1.

    Built at 512 px (rectangle (26,26)-(486,486) filled with 1, then two 101x101 Gaussian blurs with
    sigma 4) and resized bilinearly to ``size``; cached per size. Returns a new (size, size) tensor.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise InvalidInputError(f"Mask size must be a positive integer, got {size!r}.")
    return torch.tensor(_feather_mask_np(int(size)), dtype=dtype, device=device)


def scale_inverse(inverse: np.ndarray, scale: float) -> np.ndarray:
    """Crop -> image matrices (N, 2, 3) for an image resized ``scale`` times (pixel centres kept, as
    ``interpolate(..., align_corners=False)`` resizes): ``x' = scale * x + (scale - 1) / 2``."""
    out = np.array(inverse, dtype=np.float64, copy=True)
    if scale != 1:
        out *= scale
        out[..., 2] += (scale - 1) / 2.0
    return out


def _check_float(t, name: str, ndim: int, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.ndim != ndim or not t.is_floating_point():
        raise InvalidInputError(
            f"{name} must be a float tensor of shape {layout}, got "
            f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}"
            f"{' ' + str(t.dtype) if isinstance(t, torch.Tensor) else ''}."
        )
    return t


def _face_boxes(
    forward: np.ndarray, support: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Image-space boxes (x0, y0, x1, y1), end-exclusive and clipped, that hold every pixel whose
    bilinear sample touches the mask support ``(c0, r0, c1, r1)`` (inclusive, crop pixels)."""
    inv = invert_affine(forward)  # crop -> image
    c0, r0, c1, r1 = (support[:, k] for k in range(4))
    # a destination pixel samples with non-zero weight only if its crop position is within 1 px
    us = np.stack([c0 - 1, c1 + 1, c0 - 1, c1 + 1], axis=1)
    vs = np.stack([r0 - 1, r0 - 1, r1 + 1, r1 + 1], axis=1)
    xs = inv[:, 0, 0, None] * us + inv[:, 0, 1, None] * vs + inv[:, 0, 2, None]
    ys = inv[:, 1, 0, None] * us + inv[:, 1, 1, None] * vs + inv[:, 1, 2, None]
    boxes = np.stack(
        [np.floor(xs.min(1)), np.floor(ys.min(1)), np.ceil(xs.max(1)) + 1, np.ceil(ys.max(1)) + 1], axis=1
    )
    boxes = np.nan_to_num(boxes, nan=0.0, posinf=1e9, neginf=-1e9)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return boxes.astype(np.int64)


def chunk_faces(order: np.ndarray, hw: np.ndarray, channels: int) -> list[np.ndarray]:
    """Split faces, kept in order, into consecutive groups whose boxes (padded to the group's largest)
    cost at most twice their real pixel count and stay under the memory cap."""
    groups: list[list[int]] = []
    cur: list[int] = []
    max_h = max_w = 0
    real = 0
    for i in order:
        h, w = int(hw[i, 0]), int(hw[i, 1])
        nh, nw = max(max_h, h), max(max_w, w)
        padded = (len(cur) + 1) * nh * nw
        if cur and (padded > 2 * (real + h * w) or padded * channels > _CHUNK_ELEMENTS):
            groups.append(cur)
            cur, max_h, max_w, real = [], 0, 0, 0
            nh, nw = h, w
        cur.append(int(i))
        max_h, max_w, real = nh, nw, real + h * w
    if cur:
        groups.append(cur)
    return [np.asarray(g, dtype=np.int64) for g in groups]


def _mask_support(nz: torch.Tensor) -> torch.Tensor:
    """(N, S, S) bool -> (N, 5) long: first/last non-zero column and row (c0, r0, c1, r1) and any()."""
    s = nz.shape[-1]
    rows, cols = nz.any(dim=2), nz.any(dim=1)  # (N, S) each
    ar = torch.arange(s, device=nz.device)
    big = torch.full_like(ar, s)
    neg = torch.full_like(ar, -1)
    return torch.stack(
        [
            torch.where(cols, ar, big).amin(1),
            torch.where(rows, ar, big).amin(1),
            torch.where(cols, ar, neg).amax(1),
            torch.where(rows, ar, neg).amax(1),
            rows.any(1).long(),
        ],
        dim=1,
    )


def _sample(src: torch.Tensor, group: np.ndarray, grid: torch.Tensor, cdt: torch.dtype, channel: bool = False):
    """Bilinearly sample the faces ``group`` of ``src`` (N, C, S, S) (or (N, S, S) with ``channel``)
    on ``grid``; a contiguous run of faces is sliced, not copied, and only it is cast to ``cdt``."""
    first, last = int(group[0]), int(group[-1])
    if last - first + 1 == len(group):
        part = src[first : last + 1]
    else:
        part = src.index_select(0, torch.from_numpy(group).to(src.device))
    if channel:
        part = part[:, None]
    part = part.to(device=grid.device, dtype=cdt)
    return F.grid_sample(part, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def paste_back(
    images: torch.Tensor,
    crops: torch.Tensor,
    originals: torch.Tensor | None,
    inverse: torch.Tensor,
    image_index: torch.Tensor | None,
    face_masks: torch.Tensor | None = None,
    strength=1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend restored face crops into their images; returns new tensors (see :func:`paste_into`).

    images: (B, H, W, C) float 0..1 (ComfyUI layout). Returns (out_images (B, H, W, C) in the
    images' dtype, blend_masks (B, H, W) float32). Pixels whose combined mask is 0 are bitwise
    equal to the input. Inputs are not modified.
    """
    _check_float(images, "images", 4, "(B, H, W, C)")
    out = images.clone()
    full_mask = torch.zeros(images.shape[:3], dtype=torch.float32, device=images.device)
    paste_into(out, full_mask, images, crops, originals, inverse, image_index, face_masks, strength)
    return out, full_mask


def paste_into(
    out: torch.Tensor,
    out_mask: torch.Tensor,
    source: torch.Tensor,
    crops: torch.Tensor,
    originals: torch.Tensor | None,
    inverse: torch.Tensor,
    image_index: torch.Tensor | None,
    face_masks: torch.Tensor | None = None,
    strength=1.0,
    user_mask: torch.Tensor | None = None,
) -> None:
    """Blend restored face crops into ``out`` and ``out_mask`` in place, inside each face's box only.

    source: (B, H, W, C) float 0..1, the images before any face was pasted (never modified); the
    work happens on its device. out: (B, H, W, C) like ``source`` (same dtype and channels; may
    live on another device, e.g. the CPU output of a GPU run), holding ``source`` or the result of
    earlier calls; out_mask: (B, H, W) float32, zeros or the mask of earlier calls (it decides
    overlaps across calls, so the faces of one image may come in several calls).
    crops: (N, Cf, S, S) restored faces 0..1 with Cf <= C; only the first Cf image channels are
    blended, the others (e.g. alpha) pass through; grey images (C = 1) with RGB crops get the luma
    of the blend. originals: (N, Cf, S, S) aligned input crops for the strength mix; may be None
    when strength is 1. inverse: (N, 2, 3) crop -> image matrices (OpenCV convention).
    image_index: (N,) long (None: face n -> image n, or image 0 when B == 1).
    face_masks: (N, S, S) 0..1 (None: the official feather mask; values are clipped to 0..1 after
    resampling). strength: float or (N,) in 0..1; face = strength * restored + (1 - strength) * original.
    user_mask: (B or 1, H, W) 0..1 or None: also bounds the blend (0 keeps the source pixel
    exactly, soft values mix); ``out_mask`` stays the unscaled face mask, so multiply it by
    ``user_mask`` once every face of an image is in.
    Overlaps: per pixel the face with the larger warped mask wins (the earlier face on ties) and the
    blend mask is the maximum. One device -> host copy of N boxes; no full-image temporaries.
    """
    images = _check_float(source, "source", 4, "(B, H, W, C)")
    _check_float(out, "out", 4, "(B, H, W, C)")
    _check_float(crops, "crops", 4, "(N, C, S, S)")
    bsz, height, width, chans = images.shape
    if out.shape != images.shape or out.dtype != images.dtype:
        raise InvalidInputError(f"out must match the source images {tuple(images.shape)} {images.dtype}, got "
                                f"{tuple(out.shape)} {out.dtype}.")
    if not isinstance(out_mask, torch.Tensor) or out_mask.shape != (bsz, height, width) \
            or out_mask.dtype != torch.float32:
        raise InvalidInputError(f"out_mask must be a float32 tensor of shape ({bsz}, {height}, {width}).")
    n, cf, s, s2 = crops.shape
    if s != s2:
        raise InvalidInputError(f"crops must be square (N, C, S, S), got {tuple(crops.shape)}.")
    grey = chans == 1 and cf == 3
    if cf > chans and not grey:
        raise InvalidInputError(f"crops have {cf} channels but the images only {chans}.")
    if originals is not None:
        _check_float(originals, "originals", 4, "(N, C, S, S)")
        if originals.shape != crops.shape:
            raise InvalidInputError(
                f"originals must match crops {tuple(crops.shape)}, got {tuple(originals.shape)}."
            )
    inverse = torch.as_tensor(inverse)
    if inverse.shape != (n, 2, 3):
        raise InvalidInputError(f"inverse must have shape ({n}, 2, 3), got {tuple(inverse.shape)}.")
    if face_masks is not None:
        _check_float(face_masks, "face_masks", 3, "(N, S, S)")
        if face_masks.shape != (n, s, s):
            raise InvalidInputError(f"face_masks must have shape ({n}, {s}, {s}), got {tuple(face_masks.shape)}.")
    if user_mask is not None and (not isinstance(user_mask, torch.Tensor) or user_mask.ndim != 3
                                  or user_mask.shape[1:] != (height, width) or user_mask.shape[0] not in (1, bsz)):
        raise InvalidInputError(f"user_mask must have shape ({bsz} or 1, {height}, {width}), got "
                                f"{tuple(getattr(user_mask, 'shape', ()))}.")
    dev = images.device
    cdt = compute_dtype(images.dtype)
    idx = check_image_index(image_index, n, bsz, dev)
    strength_t = torch.as_tensor(strength, dtype=cdt, device=dev).reshape(-1)
    if strength_t.numel() not in (1, n) or not bool(((strength_t >= 0) & (strength_t <= 1)).all()):
        raise InvalidInputError(f"strength must be a number in [0, 1] or {n} such numbers, got {strength!r}.")
    if n == 0 or height == 0 or width == 0:
        return

    # where each mask is non-zero, in crop pixels: (c0, r0, c1, r1, any)
    if face_masks is None:
        shared_mask = feather_mask(s, device=dev, dtype=cdt)[None, None]  # (1, 1, S, S)
        support_t = _mask_support(shared_mask[0] > 0).expand(n, 5)
    else:
        shared_mask = None
        support_t = _mask_support(face_masks > 0)
    mix = not bool((strength_t == 1).all())
    if mix and originals is None:
        raise InvalidInputError("strength below 1 needs the aligned input crops (originals) to mix with.")
    # the only device -> host transfer: per-face boxes (N x 5 ints) and matrices (N x 6 floats)
    support = support_t.cpu().numpy()
    inv_np = inverse.detach().to("cpu", torch.float64).numpy()
    forward = invert_affine(inv_np)  # image -> crop
    boxes = _face_boxes(forward, support[:, :4].astype(np.float64), height, width)
    hw = np.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)
    live = (support[:, 4] > 0) & (hw[:, 0] > 0) & (hw[:, 1] > 0)
    if not live.any():
        return
    idx_list = idx.tolist()

    # forward matrices translated so the box origin is pixel (0, 0); cast on the host (MPS has no float64)
    shifted = forward.copy()
    shifted[:, :, 2] += forward[:, :, 0] * boxes[:, 0:1] + forward[:, :, 1] * boxes[:, 1:2]
    shifted_t = torch.from_numpy(shifted).to(cdt).to(dev)
    cw = 1 if grey else cf  # channels written

    # faces stay in their given order, so on equal mask values the earlier face wins, as in the official code
    for group in chunk_faces(np.flatnonzero(live), hw, 2 * cf + 1):
        gh, gw = int(hw[group, 0].max()), int(hw[group, 1].max())
        grid = affine_grid(shifted_t[torch.from_numpy(group).to(dev)], (gh, gw), (s, s))  # (g, gh, gw, 2)
        face = _sample(crops, group, grid, cdt)  # (g, Cf, gh, gw)
        if mix:
            orig = _sample(originals, group, grid, cdt)
            st = strength_t if strength_t.numel() == 1 else strength_t[torch.from_numpy(group).to(dev)]
            face = orig + st.reshape(-1, 1, 1, 1) * (face - orig)
        if shared_mask is None:
            mask = _sample(face_masks, group, grid, cdt, channel=True)[:, 0]
        else:
            g = len(group)
            mask = F.grid_sample(
                shared_mask, grid.reshape(1, g * gh, gw, 2), mode="bilinear", padding_mode="zeros", align_corners=False
            ).reshape(g, gh, gw)
        mask = mask.clamp(0.0, 1.0)
        for j, i in enumerate(group.tolist()):
            x0, y0, x1, y1 = (int(v) for v in boxes[i])
            b = idx_list[i]
            m = mask[j, : y1 - y0, : x1 - x0]
            f = face[j, :, : y1 - y0, : x1 - x0].permute(1, 2, 0)
            cur = out_mask[b, y0:y1, x0:x1].to(dev)
            win = m.float() > cur
            src = images[b, y0:y1, x0:x1]
            src_rgb = src.expand(-1, -1, 3) if grey else src[..., :cf]
            mm = m[..., None]
            blended = (src_rgb.to(cdt) * (1 - mm) + f * mm).to(images.dtype)
            if grey:
                blended = luma(blended)
            if user_mask is not None:
                u = user_mask[0 if user_mask.shape[0] == 1 else b, y0:y1, x0:x1].to(dev, torch.float32).clamp(0, 1)
                src_w = src[..., :cw]
                mixed = (src_w + u[..., None].to(images.dtype) * (blended - src_w)).to(images.dtype)
                blended = torch.where(u[..., None] > 0, mixed, src_w)
            region = out[b, y0:y1, x0:x1, :cw]
            region.copy_(torch.where(win[..., None], blended, region.to(dev)))
            out_mask[b, y0:y1, x0:x1] = torch.maximum(cur, m.float())
