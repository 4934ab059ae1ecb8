"""Reading and writing image files for the command line (the only place that deals with BGR).

Images become float32 tensors (H, W, C) in 0..1, RGB(A) or grey (C = 1), whatever the file's bit
depth, turned upright as their EXIF orientation says (phone photos are stored sideways with an
orientation tag); writing goes back to 8 or 16 bits per channel, atomically (a file of the final
name is always complete).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import InvalidInputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                  ".wmv", ".flv")
EXIF_ORIENTATION_TAG = 0x0112


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation (1..8, 1 = upright) of an image file; 1 when it has none or cannot say."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            value = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - no readable EXIF block means no rotation
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an (H, W, ...) array stored with EXIF ``orientation`` upright (as a viewer shows it)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def read_image(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """(H, W, C) float32 0..1 RGB/RGBA/grey, upright, and the file's bits per channel (8 or 16)."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise InvalidInputError(f"{path}: cannot read the file ({e.strerror or e}).") from None
    check_image_header(path)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as e:
        raise InvalidInputError(f"{path}: OpenCV cannot decode it ({' '.join(str(e).split())[-160:]}).") from None
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
    img = apply_orientation(img, exif_orientation(path))  # IMREAD_UNCHANGED ignores the EXIF tag
    arr = np.ascontiguousarray(img, dtype=np.float32) / np.float32(scale)
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{path}: the image contains NaN or infinite values.")
    return torch.from_numpy(arr), bits


def opencv_pixel_limit() -> int:
    """The most pixels OpenCV decodes in one image (``OPENCV_IO_MAX_IMAGE_PIXELS``, default 2^30)."""
    try:
        return int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "")) or 1 << 30
    except ValueError:
        return 1 << 30


def check_image_header(path: str | os.PathLike) -> None:
    """Raise ``InvalidInputError`` when the file's header claims more pixels than OpenCV decodes (a
    damaged file, or a decompression bomb); reads the header only. Unreadable headers pass (the
    decoder says what is wrong with them)."""
    from PIL import Image

    limit, pil_limit = opencv_pixel_limit(), Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # the size is what we want to know: no bomb check while reading it
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - not an image PIL knows: OpenCV decides below
        return
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    if w * h > limit:
        raise InvalidInputError(f"{path}: its header says {w}x{h} pixels, more than OpenCV decodes ({limit:,}); "
                                f"a damaged file? (OPENCV_IO_MAX_IMAGE_PIXELS raises the limit)")


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Float 0..1 tensor -> uint8 numpy array of the same shape (rounded half to even, clamped).

    A batch (N, ...) is converted one item at a time, so the float temporaries are one item's, not
    the batch's (an upscaled video segment's output is gigabytes)."""
    image = image.detach()
    if image.ndim == 4 and image.shape[0] > 1:
        out = np.empty(tuple(image.shape), np.uint8)
        for k in range(image.shape[0]):
            out[k] = to_uint8(image[k])
        return out
    t = image.float().clamp(0, 1)  # a new tensor: scaled in place below
    return t.mul_(255.0).round_().to(torch.uint8).cpu().numpy()


def encode_image(image: torch.Tensor, bits: int = 8, suffix: str = ".png") -> bytes:
    """The file bytes of (H, W, C) float 0..1 (C = 1, 3, 4) in the format of ``suffix``, ``bits`` deep."""
    if bits == 16 and suffix.lower() in (".png", ".tif", ".tiff"):
        arr = np.round(image.detach().float().clamp(0, 1).cpu().numpy() * 65535.0).astype(np.uint16)
    else:
        arr = to_uint8(image)
    if arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(suffix or ".png", arr)
    if not ok:
        raise InvalidInputError(f"cannot encode an image as {suffix}.")
    return buf.tobytes()


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is complete (hidden, same folder, per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.part")


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True where it cannot be told)."""
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        try:
            import psutil
        except ImportError:
            return True
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, run by someone else
        return True
    return True


def remove_stale_parts(path: Path) -> list[Path]:
    """Remove the partial files of ``path`` (:func:`partial_path`) left by processes that no longer run
    (a run killed before it could clean up); returns what was removed. Parts of running processes stay."""
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        pid = p.name[len(prefix):-len(".part")] if p.name.startswith(prefix) and p.name.endswith(".part") else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            try:
                p.unlink()
            except OSError:
                continue
            log.info("removed %s, left by an earlier run that was stopped", p)
            removed.append(p)
    return removed


def write_file_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a file of that name is never incomplete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    tmp = partial_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_image(path: str | os.PathLike, image: torch.Tensor, bits: int = 8) -> Path:
    """Write (H, W, C) float 0..1 (C = 1, 3, 4) as a PNG (or the suffix's format) of ``bits`` depth."""
    path = Path(path)
    try:
        data = encode_image(image, bits, path.suffix or ".png")
    except InvalidInputError:
        raise InvalidInputError(f"{path}: cannot encode an image in this format.") from None
    return write_file_atomic(path, data)


def is_video(path: str | os.PathLike) -> bool:
    """Whether the file name says video (by suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def natural_key(path: Path) -> tuple:
    """Sort key of a file name in natural order: runs of digits compare as numbers (``2.png`` before
    ``10.png``, ``frame_9`` before ``frame_10``), the rest case-insensitively, ties by the exact name."""
    parts = re.split(r"(\d+)", path.name)
    return tuple((0, int(p), p) if p.isdigit() else (1, p.lower(), p) for p in parts if p) + (path.name,)


def list_inputs(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (not recursive) into image and video files, per folder in natural
    order (:func:`natural_key`: ``2.png`` before ``10.png``, the frame order of an image sequence)."""
    files: list[Path] = []
    known = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted((f for f in p.iterdir() if f.suffix.lower() in known and f.is_file()
                            and not f.name.startswith(".")), key=natural_key)
            if not found:
                raise InvalidInputError(f"{p}: folder holds no images or videos ({', '.join(known)}).")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise InvalidInputError(f"{p}: no such file or folder.")
    return files
