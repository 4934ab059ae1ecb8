"""Checks of :meth:`gpen.FaceRestorer.restore`'s options, all made before any detection runs.

Every check raises :class:`gpen.errors.InvalidInputError` naming the option and what it takes, so a
bad value fails at once instead of after minutes of detection.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..faces.align import TEMPLATES
from ..faces.reference import REFERENCE_THRESHOLD
from ..faces.selection import check_sort, parse_selection
from .frames import check_images

log = logging.getLogger(__name__)

KEEP_CROPS = ("restored", "aligned", "none")


def check_strength(strength: float) -> None:
    """``strength`` must lie within 0..1."""
    if not 0.0 <= float(strength) <= 1.0:
        raise InvalidInputError(f"strength must be within 0..1, got {strength}.")


def check_number(name: str, value, low: float, high: float = float("inf"), whole: bool = False) -> None:
    """``value`` must be a number (a whole one with ``whole``) within ``low``..``high``."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok or not low <= float(value) <= high or (whole and float(value) != int(value)):
        kind = "a whole number" if whole else "a number"
        span = f">= {low:g}" if high == float("inf") else f"within {low:g}..{high:g}"
        raise InvalidInputError(f"{name} must be {kind} {span}, got {value!r}.")


def check_options(*, template: str = "gpen", strength: float = 1.0, keep_crops: str = "restored",
                  face_selection="all", sort: str = "left-to-right", detection_threshold: float = 0.5,
                  min_face_size: float = 0, temporal_smoothing: float = 0.0,
                  reference_threshold: float = REFERENCE_THRESHOLD, track_faces: bool | None = None,
                  max_gap: int = 3, min_track: int = 2, chunk_size: int | None = None,
                  temporal_consistency: float = 0.0) -> None:
    """Check the options of :meth:`gpen.FaceRestorer.restore` (same names and meanings)."""
    if template not in TEMPLATES:
        raise InvalidInputError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}.")
    check_strength(strength)
    if keep_crops not in KEEP_CROPS:
        raise InvalidInputError(f"keep_crops must be 'restored', 'aligned' or 'none', got {keep_crops!r}.")
    check_sort(sort)
    parse_selection(face_selection)
    check_number("detection_threshold", detection_threshold, 0.0, 1.0)
    check_number("min_face_size", min_face_size, 0.0)
    check_number("temporal_smoothing", temporal_smoothing, 0.0, 1.0)
    check_number("reference_threshold", reference_threshold, 0.0, 1.0)
    if track_faces is not None and not isinstance(track_faces, (bool, np.bool_)):
        raise InvalidInputError(f"track_faces must be True, False or None (automatic), got {track_faces!r}.")
    check_number("max_gap", max_gap, 0, whole=True)
    check_number("min_track", min_track, 1, whole=True)
    if chunk_size is not None:
        check_number("chunk_size (faces per network call)", chunk_size, 1, whole=True)
    check_number("temporal_consistency", temporal_consistency, 0.0, 1.0)
    if temporal_consistency and track_faces is False:
        raise InvalidInputError("temporal_consistency blends each face with the same face in the frames around it, "
                                "along its face track: leave face tracking on (track_faces).")


def prepare_mask(mask: torch.Tensor | None, b: int, h: int, w: int) -> torch.Tensor | None:
    """The user's mask as (B or 1, H, W) float on the images' size.

    A mask (N, h, w), (h, w) or (N, h, w, 1) of another size is resized to (H, W) (bilinear, as
    ComfyUI nodes resize masks); its batch must be 1 (one mask for every image) or B. Values are used as given
    (selection: > 0.5; blending: clamped to 0..1). The input is not modified.
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or not (mask.ndim in (2, 3) or mask.ndim == 4 and mask.shape[-1] == 1):
        raise InvalidInputError(f"mask must be a tensor (B, H, W), (H, W) or (B, H, W, 1), got "
                                f"{tuple(getattr(mask, 'shape', ())) or type(mask).__name__}.")
    if mask.ndim == 4:  # (B, H, W, 1), as some nodes hand masks on
        mask = mask[..., 0]
    if mask.ndim == 2:
        mask = mask[None]
    if mask.shape[0] not in (1, b):
        raise InvalidInputError(f"mask has {mask.shape[0]} frames for {b} images: give one mask for all "
                                f"images or one per image.")
    if mask.shape[1] < 1 or mask.shape[2] < 1:
        raise InvalidInputError(f"mask is empty: shape {tuple(mask.shape)}.")
    if mask.dtype == torch.bool:
        mask = mask.float()
    if not mask.is_floating_point():
        raise InvalidInputError(f"mask must be float 0..1 (or bool), got {mask.dtype}.")
    if mask.shape[1:] != (h, w):
        log.info("resizing the mask from %dx%d to the images' %dx%d", mask.shape[2], mask.shape[1], w, h)
        mask = F.interpolate(mask[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return mask


def check_restore_range(restore_range: tuple[int, int] | None, b: int) -> tuple[int, int]:
    """(start, stop) of the frames to restore in a batch of ``b`` (all of them for None)."""
    if restore_range is None:
        return 0, b
    try:
        first, stop = (int(v) for v in restore_range)
    except (TypeError, ValueError):
        raise InvalidInputError(f"restore_range must be (start, stop) frame indices, got {restore_range!r}.") from None
    if not 0 <= first <= stop <= b:
        raise InvalidInputError(f"restore_range {restore_range!r} must lie within the {b} frames of the batch.")
    return first, stop


def check_reference(reference: torch.Tensor | None, b: int, h: int, w: int) -> None:
    """A ``reference`` picture (before a face swap) must be images of the batch's size, 1 or ``b`` of them."""
    if reference is None:
        return
    check_images(reference, "reference")
    if reference.shape[0] not in (1, b) or reference.shape[1:3] != (h, w):
        raise InvalidInputError(f"reference must be the picture before the face swap, (1 or {b}, {h}, {w}, C) like "
                                f"the images, got {tuple(reference.shape)}.")
