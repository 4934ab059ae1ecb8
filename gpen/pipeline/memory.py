"""How much work goes to the device at once: the working-memory model of the network and chunk sizes.

Faces go through the network in chunks (faces per call) and frames move to the work device in
chunks (frames per step, and at most so many faces per step), so that long video batches run in
bounded memory on any device.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..cpuinfo import AMD, INTEL, cpu_vendor
from ..faces.detect import detection_memory_bytes

log = logging.getLogger(__name__)

MPS_FALLBACK_BUDGET = 4 * 2 ** 30
"""Bytes of working memory assumed free on Apple's MPS when torch cannot tell (torch.mps has no
``recommended_max_memory`` before torch 2.3)."""

CPU_FACES_PER_CALL = {
    INTEL: {256: 8, 512: 1, 1024: 1, 2048: 1},
    AMD: {256: 4, 512: 2, 1024: 1, 2048: 1},
}
"""Faces per network call on the CPU in float32, by the processor's vendor: the batch with the least
time per face in ``python -m bench network --sizes 256 512 --batches 1 2 4 8 --malloc default
--rounds 2`` on a 2-core CPU of each vendor. Intel Xeon (``bench/results/cpu_network_batches.json``):
256 px 84 ms/face at 8 against 114 at 1; 512 px 1080 ms at 1 against 1160-1241 at 2-8;
``cpu_network_batches_1024_2048.json``: 1024 and 2048 px no gain at 2. AMD EPYC
(``cpu_network_batches_epyc.json``; ``cpu_network_batches_epyc_512_1024.json``, batches 1 and 2 over
3 rounds): 256 px 53 ms at 4
against 61 at 1 and 58 at 8; 512 px 608-619 ms at 2 against 646-686 at 1; 1024 px 902 against 916
(no gain worth the memory). Other vendors take Intel's row; sizes not listed run one face per call;
``--chunk-size`` / ``face_batch_size`` set it."""


CPU_BF16_FACES_PER_CALL = {AMD: {256: 2, 512: 2}}
"""The same in bfloat16 (``--dtypes bf16 --batches 1 2 4``): AMD EPYC, Zen 4
(``bench/results/cpu_network_batches_bf16_epyc_zen4.json``): 256 px 75 ms/face at 2 against 100 at 1 and
78 at 4; 512 px 766 at 2 against 866 at 1 and 813 at 4. Intel's AMX was not measured: one face there."""


def cpu_faces_per_call(size: int, dtype: torch.dtype | None = None) -> int:
    """The measured best batch at ``size`` in ``dtype`` (None: float32) for this CPU's vendor
    (:data:`CPU_FACES_PER_CALL`, :data:`CPU_BF16_FACES_PER_CALL`); 1 where not measured."""
    if dtype in (None, torch.float32):
        table = CPU_FACES_PER_CALL.get(cpu_vendor(), CPU_FACES_PER_CALL[INTEL])
    else:
        table = CPU_BF16_FACES_PER_CALL.get(cpu_vendor(), {}) if dtype == torch.bfloat16 else {}
    return table.get(size, 1)


CPU_MEMORY_SHARE = 0.25
"""At most this share of the available memory goes to one CPU call's faces (:func:`cpu_face_memory_bytes`)."""

CPU_FACE_MIB = {torch.float32: {256: 102, 512: 771, 1024: 1408, 2048: 2524}, torch.bfloat16: {256: 50, 512: 344}}
"""Peak memory each face adds to a CPU network call, MiB: the largest ``(peak(b) - peak(1)) / (b - 1)``
of the measured batches (``bench/results/cpu_network_batches*.json``, default allocator, both vendors), 1.5-1.8x the
plain path's traced figure (:data:`PLAIN_PATH_MIB`; the CPU path keeps its buffers and transformed
weights)."""


def cpu_face_memory_bytes(size: int, dtype: torch.dtype | None = None) -> int:
    """Memory each face adds to a CPU network call: :data:`CPU_FACE_MIB`, elsewhere twice
    :func:`face_memory_bytes`."""
    row = CPU_FACE_MIB.get(dtype or torch.float32, {})
    return int(row[size] * 2 ** 20) if size in row else 2 * face_memory_bytes(size, dtype)

CROPS_PER_STEP_BYTES = 32 * 2 ** 20
"""Aligned face crops (float32) held per step of the frame loop, beyond one network chunk: 10 faces
at 512 px, 2 at 1024 px, 1 at 2048 px. Each step also holds the restored crops and the paste-back's small
per-face temporaries, about three times this in all."""


PLAIN_PATH_MIB = {
    256: ((28.2, 19.8), (28.3, 57.6), (56.3, 65.7)),
    512: ((223.3, 108.3), (223.7, 197.4), (446.6, 255.2)),
    1024: ((452.8, 140.2), (453.2, 230.1), (905.7, 319.8)),
    2048: ((923.3, 204.2), (923.6, 294.5), (1846.6, 448.2)),
}
"""MiB of working memory of the network's plain (CUDA) path per released size: ``(per face, fixed)``
in float16, in bfloat16 (the mixed network of ``gpen.model.precision``: its float32 layers' derived
weights make the fixed part larger) and in float32; the fixed part holds the weight-derived tensors
the first call makes. Traced on fake CUDA tensors (``python -m bench cuda-trace``,
``bench/results/cuda_trace_memory.json``): the peak of a first call is ``fixed + batch * per face``
to 0.1% at batches 1, 2 and 4 (the line goes through 1 and 4)."""


def _plain_path_mib(size: int, dtype: torch.dtype | None) -> tuple[float, float] | None:
    row = PLAIN_PATH_MIB.get(size)
    if row is None:
        return None
    return row[{torch.float16: 0, torch.bfloat16: 1}.get(dtype, 2)]


def face_memory_bytes(size: int, dtype: torch.dtype | None = None) -> int:
    """Working memory of each face in a network call: :data:`PLAIN_PATH_MIB` for the released
    sizes; for others a fit of float32 peak memory at 512 px (460 MiB per extra face) and 2048 px
    (1.9 GiB per extra face), half for 16-bit dtypes."""
    traced = _plain_path_mib(size, dtype)
    if traced is not None:
        return int(traced[0] * 2 ** 20)
    per_face = 366 * size * size + 364 * 2 ** 20
    return per_face // 2 if dtype in (torch.float16, torch.bfloat16) else per_face


def network_fixed_bytes(size: int, dtype: torch.dtype | None = None) -> int:
    """Working memory of a network call whatever its batch (weight-derived tensors included):
    :data:`PLAIN_PATH_MIB`; sizes not traced take the 2048 px value."""
    traced = _plain_path_mib(size, dtype) or _plain_path_mib(2048, dtype)
    return int(traced[1] * 2 ** 20)


def network_memory_bytes(size: int, dtype: torch.dtype | None, batch: int) -> int:
    """Peak working memory (weights excluded) of one call of ``batch`` faces: the model that chooses
    the batch on CUDA and MPS (:func:`default_chunk_size`)."""
    return network_fixed_bytes(size, dtype) + batch * face_memory_bytes(size, dtype)


def free_device_memory(device: torch.device) -> int | None:
    """Bytes the network may still use on ``device``: on CUDA the driver's free memory plus what
    torch's caching allocator holds without using it (reserved minus allocated, as ComfyUI's
    ``model_management.get_free_memory`` counts); on MPS the recommended working set minus what the
    driver holds (or :data:`MPS_FALLBACK_BUDGET`); None on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free) + max(0, int(cached))
    if device.type == "mps":
        mps = getattr(torch, "mps", None)
        recommended = getattr(mps, "recommended_max_memory", None)
        allocated = getattr(mps, "driver_allocated_memory", None)
        if recommended is None or allocated is None:
            return MPS_FALLBACK_BUDGET
        try:
            return max(0, int(recommended()) - int(allocated()))
        except RuntimeError as e:  # MPS present in the build but not usable here
            log.debug("torch.mps memory query failed (%s); assuming %d bytes", e, MPS_FALLBACK_BUDGET)
            return MPS_FALLBACK_BUDGET
    return None


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
    """Faces per network call: on CUDA and MPS as many as :func:`network_memory_bytes` fits in
    :data:`DEVICE_MEMORY_SHARE` of the free memory (at most 64); on the CPU
    the measured best batch (:func:`cpu_faces_per_call`) as far as :data:`CPU_MEMORY_SHARE` of the
    available memory holds it (:func:`cpu_face_memory_bytes`).

    A face's result can differ in its last float bits with the faces that share its call (a
    multi-threaded matrix product splits its sums by the shape; the style path runs row by row
    so it never does); a chunk size of 1 makes every run bit for bit independent of batching.
    """
    free = free_device_memory(device)
    if free is None:
        best = cpu_faces_per_call(size, dtype)
        available = available_memory_bytes() if best > 1 else None
        if available is None:
            return 1
        return int(max(1, min(best, available * CPU_MEMORY_SHARE // cpu_face_memory_bytes(size, dtype))))
    room = free * DEVICE_MEMORY_SHARE - network_fixed_bytes(size, dtype)
    return int(max(1, min(64, room // face_memory_bytes(size, dtype))))


DEVICE_MEMORY_SHARE = 0.6
"""At most this share of a GPU's free memory goes to one call (:func:`network_memory_bytes`): the
rest is left to cuDNN's workspaces and the caching allocator's rounding (unmeasured yet)."""


def default_frames_per_chunk(height: int, width: int) -> int:
    """Frames moved to the work device at once: about 32 MPixel (15 frames of 1080p), which bounds
    the working memory of long video batches to a few copies of that chunk."""
    return int(max(1, min(64, math.floor(32e6 / max(1, height * width)))))


def default_faces_per_chunk(size: int, network_chunk: int = 1) -> int:
    """Faces cropped, restored and pasted per step of the frame loop: :data:`CROPS_PER_STEP_BYTES` of
    aligned float32 crops at ``size``, and never fewer than one network chunk (``network_chunk``)."""
    per_face = 3 * size * size * 4
    return int(max(1, network_chunk, CROPS_PER_STEP_BYTES // per_face))


def frame_steps(image_index: Sequence[int], frames_per_step: int, faces_per_step: int
                ) -> Iterator[tuple[int, int, int, int]]:
    """Steps of the frame loop over faces sorted by image: ``(first frame, end frame, first face,
    end face)``, at most ``frames_per_step`` consecutive frames and ``faces_per_step`` faces each
    (a frame with more faces spans several steps); frames without faces are skipped."""
    i, n = 0, len(image_index)
    while i < n:
        start = image_index[i]
        j = i
        while j < n and j - i < faces_per_step and image_index[j] < start + frames_per_step:
            j += 1
        yield start, image_index[j - 1] + 1, i, j
        i = j


DETECT_FRAMES = 8
"""Frames per detector call: the unit of detection progress, interrupts and out-of-memory back-off."""

FACES_TO_PLAN_FOR = 4
"""Faces per network call a plan counts when the batch size is automatic (chosen later, from what is free)."""

FRAME_COPIES = 4
"""Float32 copies of a step's frames on the device while they are restored: the frames and three
working copies (the output, the blend masks and paste-back's temporaries), at the output size."""


@dataclass(frozen=True)
class MemoryPlan:
    """Device memory (bytes) one restore run needs at once, by part; weights of GPEN itself excluded
    (its host counts them). ``detector_weights`` and ``detecting`` are 0 when nothing is detected
    (faces given as landmarks, or aligned crops)."""

    detector_weights: int
    """The face detector's weights, kept loaded through the run."""
    detecting: int
    """One detector call: its working memory and the frames it sees (float32)."""
    network: int
    """One network call's faces through GPEN (:func:`network_memory_bytes`)."""
    frames: int
    """One step of the frame loop at the input size: its frames and their working copies."""
    upscale: int
    """What the output size (``upscale`` times larger) adds to ``frames``."""

    @property
    def restoring(self) -> int:
        """Working memory while faces are restored and pasted."""
        return self.network + self.frames + self.upscale

    @property
    def work(self) -> int:
        """Memory to have free beside GPEN's weights: the detector's weights and the larger of the
        two phases' working memory (detection comes before restoration)."""
        return self.detector_weights + max(self.restoring, self.detecting)


def plan_memory(frames: int, height: int, width: int, *, size: int, dtype: torch.dtype | None = None,
                faces_per_call: int | None = None, upscale: int = 1, detector: str | None = None,
                channels: int = 3) -> MemoryPlan:
    """The device memory a restore run of ``frames`` frames of ``height`` x ``width`` (``channels``)
    with a ``size`` px GPEN in ``dtype`` needs at once, by part (:class:`MemoryPlan`).

    ``faces_per_call``: faces per network call (None: automatic, :data:`FACES_TO_PLAN_FOR` are
    counted). ``upscale``: the output is that many times larger. ``detector``: the detector model
    that finds the faces (:func:`gpen.faces.detect.detection_memory_bytes`), None when faces are
    given or the frames are aligned crops. Frames move to the device in steps of
    :func:`default_frames_per_chunk` at the output size, so a long batch needs no more than one step.
    """
    frames, upscale = max(0, int(frames)), max(1, int(upscale))
    frame_bytes = height * width * channels * 4  # float32
    step = min(frames, default_frames_per_chunk(height * upscale, width * upscale))
    at_input = step * frame_bytes * FRAME_COPIES
    network = network_memory_bytes(size, dtype, faces_per_call or FACES_TO_PLAN_FOR)
    weights = detecting = 0
    if detector is not None and frames > 0:
        seen = min(frames, DETECT_FRAMES)
        weights = detection_memory_bytes(detector, height, width, 0)
        detecting = detection_memory_bytes(detector, height, width, seen) - weights + seen * frame_bytes
    return MemoryPlan(detector_weights=weights, detecting=detecting, network=network, frames=at_input,
                      upscale=at_input * (upscale * upscale - 1))
