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
from ..pipeline.memory import available_memory_bytes, default_frames_per_chunk

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


SEGMENT_MAX_BYTES = 2 * 2 ** 30
"""At most this much memory for one segment's frames (and at most :data:`SEGMENT_MEMORY_SHARE` of the
memory available when the segment is planned)."""

SEGMENT_MEMORY_SHARE = 0.25

INPUT_BYTES_PER_PIXEL = 3 + 12
"""Each frame a segment reads (its own and the context frames): the decoded uint8 RGB and its float32 copy."""

OUTPUT_BYTES_PER_PIXEL = 12 + 4 + 3
"""Each frame a segment restores, per output pixel (``upscale`` squared per input pixel): float32 RGB
and the float32 blend mask the restorer returns, and the uint8 frame for the encoder."""


STEP_BYTES_PER_OUTPUT_PIXEL = 32
"""With ``upscale`` > 1, the working memory of one step of the restorer's frame loop (its resized
background and the resize's temporaries), per output pixel of the step's frames: measured 1022 MiB
beyond the frames at 1920x1080 x4, a step of one 7680x4320 frame (``bench/results/cpu_segment_memory.json``)."""


def segment_bytes(frames: int, context: int, height: int, width: int, upscale: int = 1) -> int:
    """The memory of a segment restoring ``frames`` frames of ``height`` x ``width`` with ``context``
    frames read each side, at ``upscale``: its frames (:data:`INPUT_BYTES_PER_PIXEL`,
    :data:`OUTPUT_BYTES_PER_PIXEL`) and, when upscaled, one step of the frame loop
    (:data:`STEP_BYTES_PER_OUTPUT_PIXEL`). Measured against the process's peak by ``python -m bench
    segment-memory`` (``bench/results/cpu_segment_memory.json``)."""
    pixels, out_pixels = height * width, height * width * upscale ** 2
    total = (frames + 2 * context) * pixels * INPUT_BYTES_PER_PIXEL + frames * out_pixels * OUTPUT_BYTES_PER_PIXEL
    if upscale > 1 and frames:
        step = min(frames, default_frames_per_chunk(height * upscale, width * upscale))
        total += step * out_pixels * STEP_BYTES_PER_OUTPUT_PIXEL
    return total


def segment_budget(available: int | None = None) -> int:
    """Bytes one segment's frames may take: :data:`SEGMENT_MAX_BYTES`, or less where
    :data:`SEGMENT_MEMORY_SHARE` of the available memory (``available``, default: now) is less."""
    available = available_memory_bytes() if available is None else available
    return int(SEGMENT_MAX_BYTES if available is None else min(SEGMENT_MAX_BYTES, available * SEGMENT_MEMORY_SHARE))


def default_frames_per_segment(height: int, width: int, upscale: int = 1, context: int = DEFAULT_OVERLAP,
                               available: int | None = None) -> int:
    """Frames restored per segment: as many as :func:`segment_budget` holds (:func:`segment_bytes`, the
    output size included), 1 to 64. A frame too large for the budget is restored one at a time."""
    budget = segment_budget(available)
    return next((n for n in range(64, 1, -1) if segment_bytes(n, context, height, width, upscale) <= budget), 1)


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
                                  reference=reference, restore_range=(a, b), progress=faces_done, range_only=True,
                                  **(restore_kwargs or {}))
        out, counts = result.images, list(result.faces_per_image[a:b])  # the images: frames a .. b - 1 only
    if progress is not None:
        progress(n)
    return out, result, counts
