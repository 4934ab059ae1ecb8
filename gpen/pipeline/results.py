"""What a restore returns: one :class:`Face` per restored face and the :class:`RestoreResult`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class Face:
    """One restored face: which image, where (box x1,y1,x2,y2 and 5 landmarks in image pixels),
    the detector's score (1.0 for given landmarks) and the 2x3 image->crop alignment matrix.

    With face tracking, ``track`` is the number of the face's track (the number "by index"
    selection uses; None without tracking) and ``interpolated`` is True for a face filled in
    between the frames where its track was detected.
    """

    image_index: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    affine: np.ndarray
    track: int | None = None
    interpolated: bool = False


@dataclass
class RestoreResult:
    """Output of :meth:`FaceRestorer.restore`.

    ``images`` (B, scale*H, scale*W, C) like the input; ``masks`` (B, scale*H, scale*W) float 0..1,
    where restored pixels were blended in; ``crops`` (N, S, S, 3) the restored aligned faces (or the
    aligned input crops, or empty, see ``keep_crops``), at the model size whatever the scale;
    ``faces`` one :class:`Face` per restored face, in crop order, in input-image pixels (multiply
    by ``scale`` for output pixels); ``faces_per_image`` counts; ``info`` a one-line human summary;
    ``scale`` the output scale; ``shots`` the batch's shots as frame ranges (start, stop)
    (:func:`gpen.faces.shots.find_shots`): faces are tracked, filled and smoothed inside a shot only.
    """

    images: torch.Tensor
    masks: torch.Tensor
    crops: torch.Tensor
    faces: list[Face] = field(default_factory=list)
    faces_per_image: list[int] = field(default_factory=list)
    info: str = ""
    scale: int = 1
    shots: list[tuple[int, int]] = field(default_factory=list)


__all__ = ["Face", "RestoreResult"]
