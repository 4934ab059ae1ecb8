"""How much work goes to the device at once: the working-memory model of the network and chunk sizes.

Faces go through the network in chunks (faces per call) and frames move to the work device in
chunks (frames per step), so that long video batches run in bounded memory on any device.
"""

from __future__ import annotations

import math

import torch


def face_memory_bytes(size: int, dtype: torch.dtype | None = None) -> int:
    """Working memory of one face through the network (peak minus weights), fitted to measurements
    of float32 peak memory at 512 px (460 MiB per extra face) and 2048 px (1.9 GiB per extra face);
    half for 16-bit dtypes."""
    per_face = 366 * size * size + 364 * 2 ** 20
    return per_face // 2 if dtype in (torch.float16, torch.bfloat16) else per_face


def default_chunk_size(device: torch.device, size: int, dtype: torch.dtype | None = None) -> int:
    """Faces per network call: from free memory on CUDA; on CPU one (batching gains nothing there:
    ``python -m bench network --batches 1 8``)."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(64, free * 0.6 // face_memory_bytes(size, dtype))))


def default_frames_per_chunk(height: int, width: int) -> int:
    """Frames moved to the work device at once: about 32 MPixel (15 frames of 1080p), which bounds
    the working memory of long video batches to a few copies of that chunk."""
    return int(max(1, min(64, math.floor(32e6 / max(1, height * width)))))
