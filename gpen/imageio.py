"""Reading and writing image files for the command line (the only place that deals with BGR).

Images become float32 tensors (H, W, C) in 0..1, RGB(A) or grey (C = 1), whatever the file's bit
depth; writing goes back to 8 or 16 bits per channel.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import InvalidInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def read_image(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """(H, W, C) float32 0..1 RGB/RGBA/grey and the file's bits per channel (8 or 16)."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise InvalidInputError(f"{path}: cannot read the file ({e.strerror or e}).") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise InvalidInputError(f"{path}: not a readable image (expected {', '.join(IMAGE_SUFFIXES)}).")
    if img.dtype == np.uint8:
        bits, scale = 8, 255.0
    elif img.dtype == np.uint16:
        bits, scale = 16, 65535.0
    elif img.dtype in (np.float32, np.float64):
        bits, scale = 16, 1.0
    else:
        raise InvalidInputError(f"{path}: unsupported pixel type {img.dtype}.")
    if img.ndim == 2:
        img = img[:, :, None]
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    arr = np.ascontiguousarray(img, dtype=np.float32) / np.float32(scale)
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{path}: the image contains NaN or infinite values.")
    return torch.from_numpy(arr), bits


def write_image(path: str | os.PathLike, image: torch.Tensor, bits: int = 8) -> Path:
    """Write (H, W, C) float 0..1 (C = 1, 3, 4) as a PNG (or the suffix's format) of ``bits`` depth."""
    path = Path(path)
    arr = image.detach().float().clamp(0, 1).cpu().numpy()
    if bits == 16 and path.suffix.lower() in (".png", ".tif", ".tiff"):
        arr = np.round(arr * 65535.0).astype(np.uint16)
    else:
        arr = np.round(arr * 255.0).astype(np.uint8)
    if arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(path.suffix or ".png", arr)
    if not ok:
        raise InvalidInputError(f"{path}: cannot encode an image in this format.")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(path)
    return path


def list_images(inputs: list[str]) -> list[Path]:
    """Expand files and folders (not recursive) into image files, in name order per folder."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise InvalidInputError(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)}).")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise InvalidInputError(f"{p}: no such file or folder.")
    return files
