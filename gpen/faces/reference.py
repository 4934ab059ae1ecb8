"""Which faces a face swap changed: each face compared with the same face in the picture before the swap.

Both pictures are cut with the same alignment (the GPEN template at :data:`REFERENCE_CROP`
pixels, from the face's landmarks) and compared over the face region of that crop
(:data:`gpen.faces.selection.FACE_BOX_IN_CROP`: brows to chin, where swappers replace the face):
the mean absolute difference of the RGB values on the 0..1 scale. An untouched face gives 0 (or
the re-encoding noise of the pipeline); a swapped face gives far more.

:data:`REFERENCE_THRESHOLD` was chosen from measurements on real faces (``python -m bench
reference``, ``bench/results/cpu_reference_threshold.json``; the astronaut and the 29 Solvay
faces): JPEG re-encoding at quality 75-95 changes a face by at most 0.0115, another person's face
pasted onto the landmarks by at least 0.091 (0.046 when mixed half and half with the original).
0.025 is the geometric mean of 0.0115 and 0.046, rounded: 2.2x above the worst JPEG noise, 1.8x
below the weakest swap, 3.6x below full swaps.
"""

from __future__ import annotations

import numpy as np
import torch

from .align import estimate_similarity, inside_image, template_points, warp_affine
from .selection import FACE_BOX_IN_CROP

REFERENCE_THRESHOLD = 0.025
REFERENCE_CROP = 128  # side of the aligned crops the comparison is made on


def face_region(size: int = REFERENCE_CROP) -> tuple[slice, slice]:
    """(rows, columns) of the face region in a GPEN-aligned crop of ``size`` pixels."""
    (x0, y0), (x1, y1) = (np.round(FACE_BOX_IN_CROP.min(0) * size).astype(int),
                          np.round(FACE_BOX_IN_CROP.max(0) * size).astype(int))
    return slice(int(y0), int(y1)), slice(int(x0), int(x1))


def reference_differences(images: torch.Tensor, reference: torch.Tensor, landmarks: np.ndarray,
                          frame_of: np.ndarray, device: torch.device | None = None, frames_per_chunk: int = 8
                          ) -> np.ndarray:
    """Mean absolute difference (0..1) of each face between ``images`` and ``reference``.

    ``images``, ``reference``: (B, H, W, 3) RGB float 0..1 (views are fine; the reference may be
    an expanded single frame); ``landmarks`` (N, 5, 2) of the faces and ``frame_of`` (N,) their
    image index. Frames move to ``device`` ``frames_per_chunk`` at a time. The mean is over the
    part of the face region inside the frame (a face half out of the frame is compared by its
    visible half, not diluted by the padding beyond the border); 0 for a face wholly outside.
    """
    out = np.zeros(len(landmarks), dtype=np.float64)
    if not len(landmarks):
        return out
    device = device if device is not None else images.device
    rows, cols = face_region(REFERENCE_CROP)
    fwd = torch.from_numpy(estimate_similarity(np.asarray(landmarks, np.float64),
                                               template_points("gpen", REFERENCE_CROP)).astype(np.float32))
    frame_of = np.asarray(frame_of, dtype=np.int64)
    step = max(1, int(frames_per_chunk))
    for start in range(0, images.shape[0], step):
        stop = min(images.shape[0], start + step)
        sel = np.flatnonzero((frame_of >= start) & (frame_of < stop))
        if not len(sel):
            continue
        idx = torch.from_numpy(frame_of[sel] - start).to(device)
        mats = fwd[torch.from_numpy(sel)].to(device)
        crops = [warp_affine(x[start:stop].to(device).permute(0, 3, 1, 2).float(), mats, idx, REFERENCE_CROP)
                 for x in (images, reference)]
        inside = inside_image(fwd[torch.from_numpy(sel)].numpy(), tuple(images.shape[1:3]),
                              REFERENCE_CROP)[:, rows, cols].to(device)
        diff = ((crops[0] - crops[1])[:, :, rows, cols].abs().mean(dim=1) * inside).sum(dim=(1, 2))
        out[sel] = (diff / inside.sum(dim=(1, 2)).clamp_min(1)).double().cpu().numpy()
    return out
