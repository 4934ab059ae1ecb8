"""Which faces to restore: size and mask filters, numbering order and the user's pick.

Pure functions on the per-image detections ``(boxes (K, 4), scores (K,), landmarks (K, 5, 2))``;
they return indices into those arrays, so the caller keeps every face's data where it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from .align import invert_affine

SORT_ORDERS = ("left-to-right", "largest-first", "score")
# The face region of a GPEN-aligned crop, in crop fractions: used to give a box to faces that
# come with landmarks only (for sorting, size limits and reports).
FACE_BOX_IN_CROP = np.array([[0.22, 0.2], [0.78, 0.2], [0.78, 0.86], [0.22, 0.86]])

Found = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (K, 4), scores (K,), landmarks (K, 5, 2)


def parse_selection(selection: str | Sequence[int] | None) -> str | list[int]:
    """'all', 'largest', or face indices ('0,2' / [0, 2]) into a canonical form."""
    if selection is None:
        return "all"
    if isinstance(selection, str):
        text = selection.strip().lower()
        if text in ("", "all"):
            return "all"
        if text == "largest":
            return "largest"
        try:
            return [int(p) for p in text.replace(" ", "").split(",") if p != ""]
        except ValueError:
            raise InvalidInputError(f"face selection must be 'all', 'largest' or indices like '0,2', "
                                    f"got {selection!r}.") from None
    return [int(i) for i in selection]


def check_sort(sort: str) -> str:
    """``sort`` if it is one of :data:`SORT_ORDERS`, else ``InvalidInputError``."""
    if sort not in SORT_ORDERS:
        raise InvalidInputError(f"sort must be one of {', '.join(SORT_ORDERS)}, got {sort!r}.")
    return sort


def boxes_from_affine(affine: np.ndarray, size: int) -> np.ndarray:
    """Axis-aligned image boxes of the face region of aligned crops (K, 2, 3) -> (K, 4)."""
    inv = invert_affine(affine)
    pts = FACE_BOX_IN_CROP * size
    img = np.einsum("kij,pj->kpi", inv[:, :, :2], pts) + inv[:, None, :, 2]
    return np.concatenate([img.min(axis=1), img.max(axis=1)], axis=1).astype(np.float32)


def select_faces(found: Sequence[Found], *, selection="all", sort: str = "left-to-right",
                 min_face_size: float = 0, mask: torch.Tensor | None = None) -> list[np.ndarray]:
    """Indices of the faces to restore per image, in restore order.

    Faces smaller than ``min_face_size`` pixels (shorter box side) and faces whose landmark centre
    lies outside ``mask`` (B or 1, H, W) > 0.5 are dropped; the rest are ordered by ``sort`` and
    picked by ``selection`` ("all", "largest", or indices in that order; out-of-range ones are ignored).
    """
    check_sort(sort)
    selection = parse_selection(selection)
    chosen = []
    for i, (boxes, scores, lms) in enumerate(found):
        keep = np.arange(len(boxes))
        if len(keep) and min_face_size > 0:
            side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            keep = keep[side[keep] >= min_face_size]
        if len(keep) and mask is not None:
            m = mask[min(i, mask.shape[0] - 1)]
            centre = lms[keep].mean(axis=1)
            x = np.clip(np.round(centre[:, 0]).astype(int), 0, m.shape[1] - 1)
            y = np.clip(np.round(centre[:, 1]).astype(int), 0, m.shape[0] - 1)
            inside = (m[torch.from_numpy(y), torch.from_numpy(x)] > 0.5).cpu().numpy()
            keep = keep[inside]
        if len(keep):
            area = (boxes[keep, 2] - boxes[keep, 0]) * (boxes[keep, 3] - boxes[keep, 1])
            if sort == "left-to-right":
                order = np.argsort((boxes[keep, 0] + boxes[keep, 2]) / 2, kind="stable")
            elif sort == "largest-first":
                order = np.argsort(-area, kind="stable")
            else:
                order = np.argsort(-scores[keep], kind="stable")
            keep = keep[order]
            if selection == "largest":
                keep = keep[[int(np.argmax(area[order]))]]
            elif isinstance(selection, list):
                keep = keep[[j for j in selection if -len(keep) <= j < len(keep)]]
        chosen.append(keep)
    return chosen
