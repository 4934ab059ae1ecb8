"""How much work goes to the device at once: the working-memory model of the network and chunk sizes.

Faces go through the network in chunks (faces per call) and frames move to the work device in
chunks (frames per step), so that long video batches run in bounded memory on any device.
"""

from __future__ import annotations

import math
import os

import torch

# Faces per network call on the CPU, float32: the batch with the least time per face in
# ``python -m bench network --batches 1 2 4 8 --malloc default`` on the 2-core test CPU
# (bench/results/cpu_network_batches.json); sizes not listed run one face per call.
CPU_FACES_PER_CALL = {256: 1, 512: 1, 1024: 1, 2048: 1}
CPU_MEMORY_SHARE = 0.25  # at most this share of the available memory goes to one call's faces


def face_memory_bytes(size: int, dtype: torch.dtype | None = None) -> int:
    """Working memory of one face through the network (peak minus weights), fitted to measurements
    of float32 peak memory at 512 px (460 MiB per extra face) and 2048 px (1.9 GiB per extra face);
    half for 16-bit dtypes."""
    per_face = 366 * size * size + 364 * 2 ** 20
    return per_face // 2 if dtype in (torch.float16, torch.bfloat16) else per_face


def available_memory_bytes() -> int | None:
    """Memory the system can still give this process (Linux ``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_chunk_size(device: torch.device, size: int, dtype: torch.dtype | None = None) -> int:
    """Faces per network call: from free memory on CUDA; on the CPU the measured best batch
    (``CPU_FACES_PER_CALL``) as far as ``CPU_MEMORY_SHARE`` of the available memory holds it."""
    if device.type != "cuda":
        best = CPU_FACES_PER_CALL.get(size, 1) if dtype in (None, torch.float32) else 1
        if best <= 1:
            return 1
        available = available_memory_bytes()
        if available is None:
            return 1
        return int(max(1, min(best, available * CPU_MEMORY_SHARE // face_memory_bytes(size, dtype))))
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(64, free * 0.6 // face_memory_bytes(size, dtype))))


def default_frames_per_chunk(height: int, width: int) -> int:
    """Frames moved to the work device at once: about 32 MPixel (15 frames of 1080p), which bounds
    the working memory of long video batches to a few copies of that chunk."""
    return int(max(1, min(64, math.floor(32e6 / max(1, height * width)))))
