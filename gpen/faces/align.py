"""Face alignment geometry: 5-point templates, similarity fit, affine inverse and a batched affine warp.

Conventions (the same as OpenCV's, so matrices can be exchanged with ``cv2.warpAffine``):
pixel centres sit at integer coordinates, (x, y) order, and a 2x3 matrix ``M`` maps a point of the
source image to the crop, ``[u, v] = M @ [x, y, 1]``. ``warp_affine`` samples crop pixel (u, v)
at ``M^-1 @ [u, v, 1]`` in the source, bilinearly, with zeros outside the source.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError

logger = logging.getLogger(__name__)

_TEMPLATE_FILE = Path(__file__).resolve().parents[1] / "data" / "templates.json"
_TEMPLATE_BASE_SIZE = 512
TEMPLATES = ("gpen", "ffhq")  # the alignment templates of data/templates.json, default first

__all__ = ["TEMPLATES", "template_points", "estimate_similarity", "invert_affine", "warp_affine", "inside_image",
           "supports_float64", "matrix_dtype"]


def supports_float64(device: torch.device | str) -> bool:
    """Whether ``device`` computes in float64 (Apple's MPS backend has no float64 tensors)."""
    return torch.device(device).type != "mps"


def matrix_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype affine matrices are computed in on ``device``: float64, float32 where float64 is missing."""
    return torch.float64 if supports_float64(device) else torch.float32


@lru_cache(maxsize=None)
def _templates() -> dict[str, np.ndarray]:
    with open(_TEMPLATE_FILE, encoding="utf-8") as f:
        raw = json.load(f)
    out = {}
    for name, pts in raw.items():
        if name == "note":
            continue
        arr = np.asarray(pts, dtype=np.float64)
        arr.setflags(write=False)
        out[name] = arr
    return out


def template_points(name: str = "gpen", size: int = 512) -> np.ndarray:
    """The 5 reference points (eyes, nose tip, mouth corners; x, y in pixels) for a ``size`` crop.

    ``name`` is ``"gpen"`` (the official GPEN inference template) or ``"ffhq"`` (facexlib's FFHQ
    template, used by GFPGAN/CodeFormer). The templates are defined for 512 px and scale linearly.
    Returns a new (5, 2) float64 array.
    """
    templates = _templates()
    if name not in templates:
        raise InvalidInputError(
            f"Unknown alignment template {name!r}; expected one of {sorted(templates)}."
        )
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise InvalidInputError(f"Template size must be a positive integer (pixels), got {size!r}.")
    return templates[name] * (float(size) / _TEMPLATE_BASE_SIZE)


def _as_points(arr, what: str) -> np.ndarray:
    try:
        pts = np.asarray(arr.detach().cpu() if isinstance(arr, torch.Tensor) else arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be numeric x, y points, got {type(arr).__name__}.") from exc
    if pts.ndim < 2 or pts.shape[-1] != 2:
        raise InvalidInputError(f"{what} must have shape (P, 2) or (K, P, 2), got {pts.shape}.")
    if not np.isfinite(pts).all():
        raise InvalidInputError(f"{what} contains NaN or infinite coordinates.")
    return pts


def estimate_similarity(landmarks, template) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) landmarks -> template.

    This is Umeyama's estimate with scale, as used by the official GPEN alignment, in its closed
    2-D form: with centred points as complex numbers, ``w = sum(conj(s) * t) / sum(|s|^2)``.

    landmarks: (P, 2) or (K, P, 2) points in the image (P = 5 for faces); template: (P, 2) crop points.
    Returns float64 (2, 3) for a single set, (K, 2, 3) for K sets; the matrices map image -> crop.
    """
    src = _as_points(landmarks, "landmarks")
    dst = _as_points(template, "template")
    if dst.ndim != 2:
        raise InvalidInputError(f"template must have shape (P, 2), got {dst.shape}.")
    single = src.ndim == 2
    if single:
        src = src[None]
    if src.ndim != 3 or src.shape[1] != dst.shape[0]:
        raise InvalidInputError(
            f"landmarks must have shape ({dst.shape[0]}, 2) or (K, {dst.shape[0]}, 2) to match the "
            f"template, got {np.shape(landmarks)}."
        )
    if dst.shape[0] < 2:
        raise InvalidInputError("A similarity needs at least 2 point pairs.")
    mu_s = src.mean(axis=1, keepdims=True)  # (K,1,2)
    mu_d = dst.mean(axis=0)  # (2,)
    s = src - mu_s
    t = dst - mu_d
    var = (s**2).sum(axis=(1, 2))  # (K,)
    spread = np.sqrt(var / src.shape[1])
    if (spread <= 1e-9 * (1.0 + np.abs(mu_s).max(axis=(1, 2)))).any():
        bad = np.flatnonzero(spread <= 1e-9 * (1.0 + np.abs(mu_s).max(axis=(1, 2))))
        raise InvalidInputError(
            f"Landmark set(s) {bad.tolist()} have all points at the same place; cannot fit a similarity."
        )
    # conj(s) * t summed: real part = s.t, imaginary part = s x t
    a = (s[..., 0] * t[..., 0] + s[..., 1] * t[..., 1]).sum(axis=1) / var
    b = (s[..., 0] * t[..., 1] - s[..., 1] * t[..., 0]).sum(axis=1) / var
    m = np.empty((src.shape[0], 2, 3), dtype=np.float64)
    m[:, 0, 0] = a
    m[:, 0, 1] = -b
    m[:, 1, 0] = b
    m[:, 1, 1] = a
    mx, my = mu_s[:, 0, 0], mu_s[:, 0, 1]
    m[:, 0, 2] = mu_d[0] - (a * mx - b * my)
    m[:, 1, 2] = mu_d[1] - (b * mx + a * my)
    return m[0] if single else m


def invert_affine(m):
    """Inverse of 2x3 affine matrices, (2, 3) or (..., 2, 3); numpy in, numpy out; torch in, torch out.

    For torch input the result keeps the device and dtype (computed in float64 where the device
    supports it). Singular matrices raise InvalidInputError.
    """
    if isinstance(m, torch.Tensor):
        if m.shape[-2:] != (2, 3):
            raise InvalidInputError(f"Affine matrices must have shape (..., 2, 3), got {tuple(m.shape)}.")
        work = m.to(matrix_dtype(m.device))
        a, b, c = work[..., 0, 0], work[..., 0, 1], work[..., 0, 2]
        d, e, f = work[..., 1, 0], work[..., 1, 1], work[..., 1, 2]
        det = a * e - b * d
        if not bool(torch.isfinite(det).all()) or bool((det.abs() < 1e-12).any()):
            raise InvalidInputError("Affine matrix is singular or not finite; it cannot be inverted.")
        inv = torch.stack(
            [
                torch.stack([e / det, -b / det, (b * f - c * e) / det], dim=-1),
                torch.stack([-d / det, a / det, (c * d - a * f) / det], dim=-1),
            ],
            dim=-2,
        )
        return inv.to(m.dtype)
    arr = np.asarray(m, dtype=np.float64)
    if arr.shape[-2:] != (2, 3):
        raise InvalidInputError(f"Affine matrices must have shape (..., 2, 3), got {arr.shape}.")
    a, b, c = arr[..., 0, 0], arr[..., 0, 1], arr[..., 0, 2]
    d, e, f = arr[..., 1, 0], arr[..., 1, 1], arr[..., 1, 2]
    det = a * e - b * d
    if not np.isfinite(det).all() or (np.abs(det) < 1e-12).any():
        raise InvalidInputError("Affine matrix is singular or not finite; it cannot be inverted.")
    inv = np.empty_like(arr)
    inv[..., 0, 0] = e / det
    inv[..., 0, 1] = -b / det
    inv[..., 0, 2] = (b * f - c * e) / det
    inv[..., 1, 0] = -d / det
    inv[..., 1, 1] = a / det
    inv[..., 1, 2] = (c * d - a * f) / det
    return inv


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, Sequence) and len(size) == 2:
        h, w = (int(v) for v in size)
    else:
        raise InvalidInputError(f"Crop size must be an int or (height, width), got {size!r}.")
    if h <= 0 or w <= 0:
        raise InvalidInputError(f"Crop size must be positive, got {size!r}.")
    return h, w


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Floating dtype used for sampling arithmetic: float64 stays float64, everything else float32.

    float16/bfloat16 cannot hold pixel coordinates of large images exactly enough (a bf16 grid
    is off by whole pixels), so reduced-precision inputs are sampled in float32 and cast back.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def affine_grid(matrices: torch.Tensor, out_hw: tuple[int, int], src_hw: tuple[int, int]) -> torch.Tensor:
    """Sampling grid for ``F.grid_sample(..., align_corners=False)`` from pixel-centre matrices.

    ``matrices`` (N, 2, 3) map OUTPUT pixel centres to SOURCE pixel centres (the inverse of an
    OpenCV warp matrix). Returns (N, h, w, 2) normalised coordinates in the matrices' dtype.
    """
    h, w = out_hw
    sh, sw = src_hw
    dev, dt = matrices.device, matrices.dtype
    # Fold the normalisation x_n = (2 x + 1) / W - 1 into the matrix: one small (N, 2, 3) product.
    scale = torch.tensor([2.0 / sw, 2.0 / sh], device=dev, dtype=dt)
    offset = torch.tensor([1.0 / sw - 1.0, 1.0 / sh - 1.0], device=dev, dtype=dt)
    mn = matrices * scale[None, :, None]
    xs = torch.arange(w, device=dev, dtype=dt)
    ys = torch.arange(h, device=dev, dtype=dt)
    # grid[n, y, x, k] = (mn[n,k,0] x + mn[n,k,2] + offset[k]) + mn[n,k,1] y: one full-size add
    gx = mn[:, None, None, :, 0] * xs[None, None, :, None] + (mn[:, :, 2] + offset)[:, None, None, :]
    gy = mn[:, None, None, :, 1] * ys[None, :, None, None]
    return gx + gy


def warp_affine(
    images: torch.Tensor,
    matrices: torch.Tensor,
    image_index: torch.Tensor | None,
    size,
) -> torch.Tensor:
    """Batched ``cv2.warpAffine(img, M, (w, h), INTER_LINEAR, BORDER_CONSTANT, 0)`` for many faces.

    images: (B, C, H, W) float tensor (float32/16/bf16/64); matrices: (N, 2, 3) forward maps
    image -> crop (OpenCV convention); image_index: (N,) long, which image each face comes from
    (None: face n uses image n, or image 0 when B == 1); size: int or (h, w).
    Returns (N, C, h, w) on the images' device and dtype. Sampling uses exact sub-pixel positions
    (OpenCV rounds them to 1/32 px), arithmetic in float32 (float64 for float64 input).
    One ``grid_sample`` per source image that has faces; no per-face Python work.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise InvalidInputError(
            f"images must be a float tensor of shape (B, C, H, W), got "
            f"{getattr(images, 'shape', type(images).__name__)} {getattr(images, 'dtype', '')}."
        )
    out_h, out_w = _size_hw(size)
    b, c, h, w = images.shape
    matrices = torch.as_tensor(matrices)
    if matrices.ndim != 3 or matrices.shape[1:] != (2, 3):
        raise InvalidInputError(f"matrices must have shape (N, 2, 3), got {tuple(matrices.shape)}.")
    n = matrices.shape[0]
    image_index = check_image_index(image_index, n, b, images.device)
    if n == 0:
        return images.new_zeros((0, c, out_h, out_w))
    cdt = compute_dtype(images.dtype)
    # cast on the host first: a float64 tensor cannot even be created on MPS
    inv = invert_affine(matrices.to(matrix_dtype(images.device)).to(images.device)).to(cdt)  # crop -> image
    if b == 1:
        groups = [(0, None)]
    else:
        idx_list = image_index.tolist()
        groups = [(i, torch.nonzero(image_index == i).flatten()) for i in sorted(set(idx_list))]
    out = None if b == 1 else images.new_empty((n, c, out_h, out_w))
    for img_i, sel in groups:
        # the sampling grid of one image's faces at a time: (k, h, w, 2), not one for every face at once
        g = affine_grid(inv if sel is None else inv.index_select(0, sel), (out_h, out_w), (h, w))
        k = g.shape[0]
        src = images[img_i : img_i + 1].to(cdt)
        # all faces of one image in one call: stack their grids along the height axis
        res = F.grid_sample(
            src,
            g.reshape(1, k * out_h, out_w, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # (1, C, k*h, w)
        del g
        res = res.reshape(c, k, out_h, out_w).transpose(0, 1).to(images.dtype)
        if sel is None:
            out = res.contiguous()
        else:
            out.index_copy_(0, sel, res)
    return out


def inside_image(matrices, image_hw: tuple[int, int], size: int) -> torch.Tensor:
    """(N, S, S) float32 1/0: whether each crop pixel's bilinear sample lies wholly inside the image.

    ``matrices`` (N, 2, 3) map image -> crop (as for :func:`warp_affine`); ``image_hw`` is the
    source (height, width). Crop pixels that are 0 here got some or all of their value from the
    zero padding outside the image (e.g. a face at the image border), so statistics of a crop
    should leave them out. Computed from the geometry alone, on the CPU.
    """
    inv = torch.as_tensor(invert_affine(np.asarray(matrices, dtype=np.float64)))  # crop -> image
    h, w = image_hw
    u = torch.arange(size, dtype=torch.float64)
    xs = inv[:, 0, 0, None, None] * u[None, None, :] + inv[:, 0, 1, None, None] * u[None, :, None] + inv[:, 0, 2, None, None]
    ys = inv[:, 1, 0, None, None] * u[None, None, :] + inv[:, 1, 1, None, None] * u[None, :, None] + inv[:, 1, 2, None, None]
    eps = 1e-6  # bilinear taps at exactly the last row/column carry no weight beyond it
    inside = (xs >= -eps) & (xs <= w - 1 + eps) & (ys >= -eps) & (ys <= h - 1 + eps)
    return inside.to(torch.float32)


def check_image_index(image_index, n: int, b: int, device) -> torch.Tensor:
    """Validate/complete the (N,) face -> image mapping."""
    if image_index is None:
        if b == 1:
            return torch.zeros(n, dtype=torch.long, device=device)
        if b == n:
            return torch.arange(n, device=device)
        raise InvalidInputError(
            f"image_index is required when there are {b} images and {n} faces (which image is each face from?)."
        )
    idx = torch.as_tensor(image_index)
    if idx.ndim != 1 or idx.shape[0] != n:
        raise InvalidInputError(f"image_index must have shape ({n},), got {tuple(idx.shape)}.")
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise InvalidInputError(f"image_index must hold integers, got {idx.dtype}.")
    idx = idx.to(device=device, dtype=torch.long)
    if n and (int(idx.min()) < 0 or int(idx.max()) >= b):
        raise InvalidInputError(f"image_index values must lie in [0, {b - 1}] for {b} image(s).")
    return idx
