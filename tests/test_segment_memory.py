"""Video segments are sized from the output (upscale included) and the memory available, so that a
clip of any size and length is restored within the documented bound (docs/performance.md: at most
2 GiB, and at most a quarter of the available memory, for a segment's frames)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gpen.runs.segments as segments
from gpen.runs.jobs import RestoreOptions

GIB = 2 ** 30
DOCUMENTED_BOUND = 2 * GIB


def held_bytes(frames: int, context: int, height: int, width: int, upscale: int) -> int:
    """What a segment holds, counted from the arrays of the run: every frame read as uint8 and float32
    RGB; every frame restored, at the output size, as float32 RGB, a float32 blend mask and uint8 RGB."""
    read = (frames + 2 * context) * height * width * (3 + 4 * 3)
    restored = frames * height * width * upscale ** 2 * (4 * 3 + 4 + 3)
    return read + restored


@pytest.mark.parametrize("height, width, upscale", [(270, 480, 4), (1080, 1920, 4), (1080, 1920, 1),
                                                    (2160, 3840, 1)])
def test_the_segment_plan_fits_the_bound_at_the_output_size(monkeypatch, height, width, upscale):
    monkeypatch.setattr(segments, "available_memory_bytes", lambda: 64 * GIB,
                        raising=False)  # a machine with room
    options = RestoreOptions(upscale=upscale)
    first = options.segments(10_000, height, width)[0]
    length, context = first.stop - first.start, options.context_frames()
    assert length >= 1
    assert held_bytes(length, context, height, width, upscale) <= DOCUMENTED_BOUND
    if held_bytes(1, context, height, width, upscale) <= DOCUMENTED_BOUND // 2:  # not needlessly small either
        assert held_bytes(length + 1, context, height, width, upscale) > DOCUMENTED_BOUND // 2 or length == 64


@pytest.mark.parametrize("available", [1 * GIB, 3 * GIB])
def test_segments_shrink_with_the_memory_available(monkeypatch, available):
    monkeypatch.setattr(segments, "available_memory_bytes", lambda: available, raising=False)
    options = RestoreOptions(upscale=4)
    first = options.segments(10_000, 270, 480)[0]
    assert held_bytes(first.stop - first.start, options.context_frames(), 270, 480, 4) <= available / 4


def test_a_segment_returns_its_own_frames_only_at_the_output_size():
    """The restorer hands back the restored frames of a segment, not its context frames too (they
    would take (2 x context) frames more of output memory)."""
    from gpen.pipeline.restorer import FaceRestorer

    restorer = FaceRestorer(lambda x: 1 - x, size=64)  # an inverting "network": pasted faces show
    images = torch.rand(9, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    face = np.array([[24, 20], [40, 20], [32, 28], [26, 36], [38, 36]], np.float32)[None]
    lms = [face if k in (3, 5) else np.zeros((0, 5, 2), np.float32) for k in range(9)]  # 3: context, 5: restored
    full = restorer.restore(images, lms, restore_range=(4, 6), upscale=2, track_faces=False)
    own = restorer.restore(images, lms, restore_range=(4, 6), upscale=2, track_faces=False, range_only=True)
    assert full.images.shape[0] == 9 and own.images.shape == (2, 96, 128, 3) and own.masks.shape == (2, 96, 128)
    assert own.masks[1].max() > 0.5 and own.masks[0].max() == 0  # the face of frame 5 pasted, frame 4 has none
    assert torch.equal(own.images, full.images[4:6]) and torch.equal(own.masks, full.masks[4:6])
