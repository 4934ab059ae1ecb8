"""Video in segments that overlap: the plan, the reading window, and the restoring of one segment.

A clip of any length is restored segment by segment, so memory stays bounded. Each segment
restores its own frames ``start .. stop - 1`` and reads ``overlap`` frames more on either side as
context: temporal smoothing and face tracking see the frames across the border, so they go on
continuously, while the context frames themselves are never restored (each frame is restored in
exactly one segment). This is the one implementation behind both the command line's chunked
video and the Ray runner's video segments, so the two give the same frames.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError
from ..pipeline.memory import default_frames_per_chunk

DEFAULT_OVERLAP = 4  # frames of context each side: the smoothing window's reach (2) and a tracking gap of 3


@dataclass(frozen=True)
class Segment:
    """Frames ``start .. stop - 1`` are restored; ``context_start .. context_stop - 1`` are read."""

    index: int
    start: int
    stop: int
    context_start: int
    context_stop: int

    @property
    def core(self) -> tuple[int, int]:
        """The restored frames as indices into the frames read."""
        return self.start - self.context_start, self.stop - self.context_start


def default_frames_per_segment(height: int, width: int) -> int:
    """Frames restored per segment: the frame chunk of :func:`gpen.pipeline.memory.default_frames_per_chunk`,
    at least 16 so that the context frames stay a small share of what is read."""
    return max(16, default_frames_per_chunk(height, width))


def plan_segments(frames: int, length: int, overlap: int) -> list[Segment]:
    """Segments of ``length`` restored frames covering ``frames`` frames, with ``overlap`` context frames."""
    if frames < 0 or length < 1 or overlap < 0:
        raise InvalidInputError(f"cannot split {frames} frames into segments of {length} with overlap {overlap}.")
    return [Segment(k, s, min(frames, s + length), max(0, s - overlap), min(frames, s + length + overlap))
            for k, s in enumerate(range(0, frames, length))]


class SegmentWindows:
    """Cut one sequential stream of ``(frame, pts)`` into the frames each segment reads, in order,
    decoding every frame once (the overlap is kept from the previous window)."""

    def __init__(self, frames: Iterable[tuple[np.ndarray, int]]) -> None:
        self._source: Iterator = iter(frames)
        self._buffer: deque = deque()
        self._next = 0  # index of the next frame the source yields

    def take(self, segment: Segment) -> tuple[np.ndarray, list[int]]:
        """(frames (T, H, W, 3) uint8, their pts) for ``context_start .. context_stop - 1``; fewer where the
        stream ends early."""
        first = self._next - len(self._buffer)
        if segment.context_start < first:
            raise InvalidInputError(f"segment {segment.index} starts before frames already dropped.")
        for _ in range(segment.context_start - first):
            self._buffer.popleft()
        while self._next < segment.context_stop:
            try:
                self._buffer.append(next(self._source))
            except StopIteration:
                break
            self._next += 1
        window = list(self._buffer)[: segment.context_stop - segment.context_start]
        if not window:
            return np.zeros((0, 0, 0, 3), np.uint8), []
        return np.stack([f for f, _ in window]), [int(p) for _, p in window]


def window_landmarks(landmarks: list | None, segment: Segment, count: int) -> list | None:
    """The per-frame landmarks of the frames a segment reads (frames past the list have none)."""
    if landmarks is None:
        return None
    empty = np.zeros((0, 5, 2), np.float32)
    return [landmarks[i] if i < len(landmarks) else empty
            for i in range(segment.context_start, segment.context_start + count)]


def restore_segment(restorer, images: torch.Tensor, segment: Segment, landmarks: list | None = None, *,
                    aligned: bool = False, strength: float = 1.0, chunk_size: int | None = None,
                    reference: torch.Tensor | None = None, keep_crops: str = "none", restore_kwargs: dict | None = None,
                    progress: Callable[[int], None] | None = None):
    """Restore the frames of ``segment`` from the frames it reads, ``images`` (T, H, W, C) float 0..1.

    ``restorer`` is a :class:`gpen.pipeline.restorer.FaceRestorer`; ``landmarks`` per frame read (or None
    to detect); ``reference`` the frames read of the picture before a face swap (T or 1 frames);
    ``restore_kwargs`` further options of :meth:`~gpen.pipeline.restorer.FaceRestorer.restore`.
    ``aligned``: every frame is an aligned face crop (:meth:`~gpen.pipeline.restorer.FaceRestorer.restore_aligned`).
    ``progress(frames_done)`` is called as the segment's faces get restored. Returns (restored frames
    (N, H, W, C), the :class:`~gpen.pipeline.restorer.RestoreResult`, faces per restored frame).
    """
    a, b = segment.core
    b = min(b, images.shape[0])
    n = max(0, b - a)

    def faces_done(done: int, total: int) -> None:
        if progress is not None and total:
            progress(math.floor(n * done / total))

    if aligned:
        upscale = (restore_kwargs or {}).get("upscale", 1)
        result = restorer.restore_aligned(images[a:b], strength=strength, chunk_size=chunk_size,
                                          progress=faces_done, upscale=upscale, keep_crops="none")
        out, counts = result.images, [1] * n
    else:
        if reference is not None and reference.shape[0] > 1:
            reference = reference[: images.shape[0]]
        result = restorer.restore(images, landmarks, strength=strength, chunk_size=chunk_size, keep_crops=keep_crops,
                                  reference=reference, restore_range=(a, b), progress=faces_done,
                                  **(restore_kwargs or {}))
        out, counts = result.images[a:b], list(result.faces_per_image[a:b])
    if progress is not None:
        progress(n)
    return out, result, counts
