"""Which faces to restore: size and mask filters, numbering order and the user's pick.

Pure functions on the per-image detections ``(boxes (K, 4), scores (K,), landmarks (K, 5, 2))``;
they return indices into those arrays, so the caller keeps every face's data where it was.
:func:`select_faces` picks in every image on its own; :func:`select_tracks` picks tracks (the same
person through a video batch, see :mod:`gpen.faces.tracking`). Faces given as landmarks get their
boxes here too (:func:`faces_from_landmarks`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from .align import estimate_similarity, invert_affine, template_points
from .detect import Detections

SORT_ORDERS = ("left-to-right", "largest-first", "score")
# The face region of a GPEN-aligned crop, in crop fractions: used to give a box to faces that
# come with landmarks only (for sorting, size limits and reports).
FACE_BOX_IN_CROP = np.array([[0.22, 0.2], [0.78, 0.2], [0.78, 0.86], [0.22, 0.86]])

log = logging.getLogger(__name__)

Found = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (K, 4), scores (K,), landmarks (K, 5, 2)


def parse_indices(text: str | Sequence[int]) -> list[int]:
    """Face numbers ('0,2' or [0, 2]; negative ones count from the end) as a list without repeats.

    An empty list is refused: picking faces "by index" with no index would restore nothing (or,
    read as "all", every face), and neither is what the user asked for.
    """
    if isinstance(text, str):
        parts = [p for p in text.replace(" ", "").split(",") if p != ""]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise InvalidInputError(f"face indices must be whole numbers like '0,2', got {text!r}.") from None
    else:
        try:
            values = [int(i) for i in text]
        except (TypeError, ValueError):
            raise InvalidInputError(f"face indices must be whole numbers like [0, 2], got {text!r}.") from None
    if not values:
        raise InvalidInputError("the list of face indices is empty: give face numbers like '0,2' "
                                "(0 = the first face in sort order), or select 'all' or 'largest'.")
    return list(dict.fromkeys(values))


def parse_selection(selection: str | Sequence[int] | None) -> str | list[int]:
    """'all' (also None), 'largest', or face indices ('0,2' / [0, 2], see :func:`parse_indices`).

    A blank string is refused like an empty index list (it used to mean "all", which restored every
    face when the user meant to pick some)."""
    if selection is None:
        return "all"
    if isinstance(selection, str):
        text = selection.strip().lower()
        if text == "all":
            return "all"
        if text == "largest":
            return "largest"
        if text.strip(", ") and not any(c.isdigit() for c in text):
            raise InvalidInputError(f"face selection must be 'all', 'largest' or indices like '0,2', "
                                    f"got {selection!r}.")
        return parse_indices(text)
    return parse_indices(selection)


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


def empty_faces() -> Found:
    """The detections of an image without faces."""
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)


def check_landmarks(landmarks, b: int) -> list:
    """``landmarks`` as a list of one entry per image (an array (K, 5, 2), or None for no faces)."""
    if isinstance(landmarks, (str, bytes)) or not hasattr(landmarks, "__len__") or len(landmarks) != b:
        got = len(landmarks) if hasattr(landmarks, "__len__") else type(landmarks).__name__
        raise InvalidInputError(f"landmarks must list one array (K, 5, 2) per image: got {got} for {b} images.")
    return list(landmarks)


def warn_landmarks_outside(landmarks: Sequence, h: int, w: int) -> None:
    """Log a warning for given faces whose landmark centre lies outside the (``h``, ``w``) image:
    landmarks of another image, or in another scale, restore a face that is not there."""
    outside = []
    for i, lm in enumerate(landmarks):
        pts = getattr(lm, "landmarks", lm)
        if pts is None:
            continue
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 5, 2)
        centre = pts.mean(axis=1)
        bad = (centre[:, 0] < 0) | (centre[:, 0] > w) | (centre[:, 1] < 0) | (centre[:, 1] > h)
        outside += [(i, k) for k in np.flatnonzero(bad)]
    if outside:
        i, k = outside[0]
        log.warning("%d given face(s) lie outside the %dx%d image (first: image %d, face %d); are the landmarks "
                    "those of another image, or in another scale? Landmarks are pixels of the image as given.",
                    len(outside), w, h, i, k)


def faces_from_landmarks(landmarks, b: int, size: int) -> list[Found]:
    """Detections for faces that come as landmarks (per image (K, 5, 2) or None): score 1, and the box
    of the face region of the GPEN-aligned crop of ``size`` pixels (:func:`boxes_from_affine`).

    An entry may also be a :class:`gpen.faces.detect.Detections` (faces another detector found,
    e.g. :func:`gpen.faces.mesh.faces_from_landmarks`): its boxes and scores are kept.
    """
    found = []
    for i, lm in enumerate(check_landmarks(landmarks, b)):
        if isinstance(lm, Detections):
            if not (np.isfinite(lm.landmarks).all() and np.isfinite(lm.boxes).all()):
                raise InvalidInputError(f"the faces given for image {i} contain NaN or infinite coordinates.")
            found.append((lm.boxes, lm.scores, lm.landmarks))
            continue
        lm = np.zeros((0, 5, 2), np.float32) if lm is None else np.asarray(lm, dtype=np.float32)
        if lm.size == 0:
            lm = lm.reshape(0, 5, 2)
        if lm.ndim == 2 and lm.shape == (5, 2):
            lm = lm[None]
        if lm.ndim != 3 or lm.shape[1:] != (5, 2) or not np.isfinite(lm).all():
            raise InvalidInputError(f"landmarks of image {i} must be finite numbers of shape (K, 5, 2), "
                                    f"got {lm.shape}.")
        if not len(lm):
            found.append(empty_faces())
            continue
        affine = estimate_similarity(lm, template_points("gpen", size))
        found.append((boxes_from_affine(affine, size), np.ones(len(lm), np.float32), lm))
    return found


def eligible_faces(found: Sequence[Found], *, min_face_size: float = 0, mask: torch.Tensor | None = None
                   ) -> list[np.ndarray]:
    """Per image a bool array: the faces that pass the filters.

    Faces smaller than ``min_face_size`` pixels (shorter box side) and faces whose landmark centre
    lies outside ``mask`` (B or 1, H, W) > 0.5 are dropped.
    """
    out = []
    for i, (boxes, _, lms) in enumerate(found):
        keep = np.ones(len(boxes), dtype=bool)
        if len(boxes) and min_face_size > 0:
            keep &= np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= min_face_size
        if len(boxes) and mask is not None:
            m = mask[min(i, mask.shape[0] - 1)]
            centre = lms.mean(axis=1)
            x = np.clip(np.round(centre[:, 0]).astype(int), 0, m.shape[1] - 1)
            y = np.clip(np.round(centre[:, 1]).astype(int), 0, m.shape[0] - 1)
            keep &= (m[torch.from_numpy(y), torch.from_numpy(x)] > 0.5).cpu().numpy()
        out.append(keep)
    return out


def sort_faces(boxes: np.ndarray, scores: np.ndarray, idx: np.ndarray, sort: str) -> np.ndarray:
    """``idx`` (face indices of one image) in ``sort`` order: by box centre x, by area (largest first)
    or by score (highest first); ties keep the input order."""
    if not len(idx):
        return idx
    if sort == "left-to-right":
        key = (boxes[idx, 0] + boxes[idx, 2]) / 2
    elif sort == "largest-first":
        key = -_areas(boxes[idx])
    else:
        key = -scores[idx]
    return idx[np.argsort(key, kind="stable")]


def _areas(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)  # float32 overflows for the wild boxes of untrained detectors
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _pick(count: int, selection: list[int]) -> list[int]:
    """Positions named by ``selection`` among ``count`` items, in the user's order (negative: from the end)."""
    return list(dict.fromkeys(j % count for j in selection if -count <= j < count))


def warn_unmatched(selection: list[int], counts: Sequence[int], what: str = "face") -> None:
    """Log a warning for face numbers of ``selection`` that pick nothing where ``counts`` faces (or
    tracks) are eligible: the hint says how faces are numbered."""
    missing = [j for j in selection if not any(-n <= j < n for n in counts)]
    if not missing or not any(counts):
        return
    most = max(counts)
    span = f"{what}s 0..{most - 1} (or -{most}..-1 from the end)" if most else f"no {what}s"
    log.warning("face selection %s picks no %s: there are %s to pick from%s; faces are numbered from 0 in sort "
                "order", ",".join(map(str, missing)), what, span,
                f" in {len(counts)} images" if len(counts) > 1 else "")


def select_faces(found: Sequence[Found], *, selection="all", sort: str = "left-to-right",
                 min_face_size: float = 0, mask: torch.Tensor | None = None) -> list[np.ndarray]:
    """Indices of the faces to restore per image, in restore order, each image on its own.

    Faces that pass :func:`eligible_faces` are ordered by ``sort`` (:func:`sort_faces`) and picked
    by ``selection``: "all", "largest", or indices in that order (out-of-range ones are ignored).
    For video batches where the same person should be picked in every frame see
    :func:`select_tracks`.
    """
    check_sort(sort)
    selection = parse_selection(selection)
    chosen: list[np.ndarray] = []
    counts: list[int] = []
    for (boxes, scores, _), ok in zip(found, eligible_faces(found, min_face_size=min_face_size, mask=mask)):
        keep = sort_faces(boxes, scores, np.flatnonzero(ok), sort)
        if len(keep) and selection == "largest":
            keep = keep[[int(np.argmax(_areas(boxes[keep])))]]
        elif len(keep) and isinstance(selection, list):
            keep = keep[_pick(len(keep), selection)]
        chosen.append(keep)
        counts.append(int(ok.sum()))
    if isinstance(selection, list):
        warn_unmatched(selection, counts)
    return chosen


def number_tracks(found: Sequence[Found], tracks: Sequence[np.ndarray], eligible: Sequence[np.ndarray],
                  sort: str = "left-to-right") -> dict[int, int]:
    """Track id -> the number the user picks it by: tracks are numbered in the order they first appear
    (first frame with an eligible face of the track), tracks that appear on the same frame in
    ``sort`` order on that frame. Tracks without an eligible face get no number."""
    numbers: dict[int, int] = {}
    for (boxes, scores, _), ids, ok in zip(found, tracks, eligible):
        idx = np.flatnonzero(ok & (ids >= 0))
        for k in sort_faces(boxes, scores, idx, sort):
            numbers.setdefault(int(ids[k]), len(numbers))
    return numbers


def select_tracks(found: Sequence[Found], tracks: Sequence[np.ndarray], *, selection="all",
                  sort: str = "left-to-right", min_face_size: float = 0, mask: torch.Tensor | None = None
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Like :func:`select_faces`, but face numbers and "largest" refer to tracks (the same person in every frame).

    ``tracks``: per image the track id of every face (-1: not a face to restore), e.g. from
    :func:`gpen.faces.tracking.link_tracks`. Tracks are numbered by :func:`number_tracks`;
    indices pick tracks by that number, "largest" picks the track with the largest mean box area
    over the frames where it is eligible. Every eligible face of a picked track is restored.
    Returns per image (indices of the faces to restore, their track numbers), ordered by
    selection order for indices and by track number otherwise.
    """
    check_sort(sort)
    selection = parse_selection(selection)
    eligible = eligible_faces(found, min_face_size=min_face_size, mask=mask)
    eligible = [ok & (np.asarray(ids) >= 0) for ok, ids in zip(eligible, tracks)]
    numbers = number_tracks(found, tracks, eligible, sort)
    rank: dict[int, int]  # track number -> restore order within a frame
    if selection == "all":
        rank = {n: n for n in numbers.values()}
    elif selection == "largest":
        area_sum = np.zeros(len(numbers))
        seen = np.zeros(len(numbers))
        for (boxes, _, _), ids, ok in zip(found, tracks, eligible):
            for k in np.flatnonzero(ok):
                area_sum[numbers[int(ids[k])]] += _areas(boxes[k:k + 1])[0]
                seen[numbers[int(ids[k])]] += 1
        rank = {int(np.argmax(area_sum / np.maximum(seen, 1))): 0} if len(numbers) else {}
    else:
        rank = {n: r for r, n in enumerate(_pick(len(numbers), selection))} if numbers else {}
        warn_unmatched(selection, [len(numbers)], "tracked face")
    chosen, chosen_numbers = [], []
    for ids, ok in zip(tracks, eligible):
        idx = [int(k) for k in np.flatnonzero(ok) if numbers[int(ids[k])] in rank]
        idx.sort(key=lambda k: rank[numbers[int(ids[k])]])
        chosen.append(np.asarray(idx, dtype=np.int64))
        chosen_numbers.append(np.asarray([numbers[int(ids[k])] for k in idx], dtype=np.int64))
    return chosen, chosen_numbers
