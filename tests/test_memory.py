"""Chunk sizes: faces per network call from the device's free memory, faces per step of the frame loop."""

from __future__ import annotations

import types

import pytest
import torch

import gpen.pipeline.memory as memory


def test_mps_uses_the_memory_torch_reports(monkeypatch):
    """On Apple's MPS the faces per call come from what torch.mps reports (one face per call before):
    more free memory gives more faces, none left gives one, and the count is capped."""
    fake = types.SimpleNamespace(recommended_max_memory=lambda: 24 * 2 ** 30,
                                 driver_allocated_memory=lambda: 4 * 2 ** 30)
    monkeypatch.setattr(torch, "mps", fake, raising=False)
    mps = torch.device("mps")
    roomy = memory.default_chunk_size(mps, 512, torch.float16)
    assert roomy > 1  # the largest batch whose modelled memory fits 60% of the 20 GiB left
    assert memory.network_memory_bytes(512, torch.float16, roomy) <= 0.6 * 20 * 2 ** 30 \
        < memory.network_memory_bytes(512, torch.float16, roomy + 1)
    fake.driver_allocated_memory = lambda: 20 * 2 ** 30  # 4 GiB left instead of 20
    tight = memory.default_chunk_size(mps, 512, torch.float16)
    assert roomy > tight > 1
    assert memory.default_chunk_size(mps, 512, torch.float32) < tight  # a 32-bit face needs more room
    fake.driver_allocated_memory = lambda: 24 * 2 ** 30  # nothing left: still one face
    assert memory.default_chunk_size(mps, 512, torch.float16) == 1
    fake.recommended_max_memory = lambda: 2 ** 50  # any amount: at most 64 faces per call
    fake.driver_allocated_memory = lambda: 0
    assert memory.default_chunk_size(mps, 256, torch.float16) == 64


def test_mps_without_memory_queries_uses_the_documented_budget(monkeypatch):
    monkeypatch.setattr(torch, "mps", types.SimpleNamespace(), raising=False)  # torch < 2.3
    n = memory.default_chunk_size(torch.device("mps"), 256)
    assert n > 1
    assert memory.network_memory_bytes(256, None, n) <= 0.6 * memory.MPS_FALLBACK_BUDGET \
        < memory.network_memory_bytes(256, None, n + 1)


MEASURED_BATCHES = {  # vendor -> the bench files of ``python -m bench network --batches ...`` on its 2-core CPU
    "GenuineIntel": ("cpu_network_batches.json", "cpu_network_batches_1024_2048.json"),
    "AuthenticAMD": ("cpu_network_batches_epyc.json", "cpu_network_batches_epyc_512_1024.json",
                     "cpu_network_batches_bf16_epyc_zen4.json"),
}


def measured_rows(files: tuple[str, ...], dtype: str) -> list[dict]:
    import json
    from pathlib import Path

    rows = []
    for name in files:
        rows += json.loads((Path(__file__).resolve().parents[1] / "bench" / "results" / name).read_text())["rows"]
    return [r for r in rows if r["impl"] == "ours" and r["dtype"] == dtype]


def fastest_batches(files: tuple[str, ...], tolerance: float = 0.02, dtype: str = "fp32") -> dict[int, int]:
    """Size -> the smallest measured batch in ``dtype`` within ``tolerance`` of the least time per face."""
    best: dict[int, dict[int, float]] = {}
    for r in measured_rows(files, dtype):
        per_size = best.setdefault(r["size"], {})
        per_size[r["batch"]] = min(per_size.get(r["batch"], float("inf")), r["ms_per_face"])
    return {size: min(b for b, ms in t.items() if ms <= (1 + tolerance) * min(t.values())) for size, t in best.items()}


def test_cpu_memory_per_face_is_the_largest_measured_step():
    """CPU_FACE_MIB holds, per dtype and size, the largest peak memory added per face over the first
    measured batch of a run (both vendors' files)."""
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        steps: dict[int, float] = {}
        for files in MEASURED_BATCHES.values():
            for name_ in files:
                rows = measured_rows((name_,), name)
                for size in {r["size"] for r in rows}:
                    peaks = sorted((r["batch"], r["peak_mib"]) for r in rows if r["size"] == size)
                    for (b0, p0), (b1, p1) in zip(peaks[:1] * len(peaks), peaks[1:]):
                        steps[size] = max(steps.get(size, 0.0), (p1 - p0) / (b1 - b0))
        assert steps and {s: round(v) for s, v in steps.items()} == memory.CPU_FACE_MIB[dtype], dtype
        for size, mib in memory.CPU_FACE_MIB[dtype].items():  # above the plain (GPU) path's traced figure
            assert mib * 2 ** 20 > memory.face_memory_bytes(size, dtype)


def test_cpu_faces_per_call_are_the_measured_fastest_within_the_memory_bound(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 64 * 2 ** 30)
    for vendor, row in (("GenuineIntel", "GenuineIntel"), ("AuthenticAMD", "AuthenticAMD"), ("", "GenuineIntel"),
                        ("HygonGenuine", "GenuineIntel")):  # unmeasured vendors take Intel's row
        monkeypatch.setattr(memory, "cpu_vendor", lambda v=vendor: v)
        measured = fastest_batches(MEASURED_BATCHES[row])
        assert {256, 512, 1024} <= set(measured)
        for size, best in measured.items():
            assert memory.default_chunk_size(cpu, size) == best, (vendor, size)
    monkeypatch.setattr(memory, "cpu_vendor", lambda: "AuthenticAMD")
    measured = fastest_batches(MEASURED_BATCHES["AuthenticAMD"], dtype="bf16")
    assert {256, 512} <= set(measured)
    for size, best in measured.items():
        assert memory.default_chunk_size(cpu, size, torch.bfloat16) == best, size
    assert memory.default_chunk_size(cpu, 256, torch.float16) == 1  # not measured
    monkeypatch.setattr(memory, "cpu_vendor", lambda: "GenuineIntel")
    assert memory.default_chunk_size(cpu, 256, torch.bfloat16) == 1  # AMX not measured in batches
    assert memory.default_chunk_size(cpu, 128) == 1  # not measured: one face
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 2 ** 30)  # 1 GiB: less than the measured batch
    assert 1 <= memory.default_chunk_size(cpu, 256) < fastest_batches(MEASURED_BATCHES["GenuineIntel"])[256]
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1)
    assert memory.default_chunk_size(cpu, 256) == 1
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: None)  # unknown: one face
    assert memory.default_chunk_size(cpu, 256) == 1


def test_cpu_vendor_without_proc_cpuinfo_comes_from_the_processor_string(monkeypatch):
    import builtins
    import platform

    from gpen import cpuinfo

    def no_file(*a, **k):
        raise OSError("no /proc here")

    monkeypatch.setattr(builtins, "open", no_file)
    monkeypatch.setattr(platform, "processor", lambda: "AMD64 Family 26 Model 2 Stepping 1, AuthenticAMD")
    assert cpuinfo.cpu_facts.__wrapped__().vendor == "AuthenticAMD"
    monkeypatch.setattr(platform, "processor", lambda: "Intel64 Family 6 Model 143 Stepping 8, GenuineIntel")
    assert cpuinfo.cpu_facts.__wrapped__().vendor == "GenuineIntel"
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert cpuinfo.cpu_facts.__wrapped__().vendor == ""


@pytest.mark.parametrize("size, chunk, expected", [(512, 1, 10), (2048, 1, 1), (1024, 1, 2), (2048, 8, 8)])
def test_faces_per_step(size, chunk, expected):
    assert memory.default_faces_per_chunk(size, chunk) == expected


# The memory plan of a restore run (what the restore node asks ComfyUI to make room for)

HD = (1080, 1920)


def test_plan_parts_follow_the_per_part_models():
    from gpen.faces.detect import detection_memory_bytes

    plan = memory.plan_memory(3, *HD, size=512, faces_per_call=2, detector="retinaface_resnet50")
    assert plan.network == memory.network_memory_bytes(512, None, 2)
    assert plan.detector_weights == detection_memory_bytes("retinaface_resnet50", *HD, 0) > 0
    frames = 3 * HD[0] * HD[1] * 3 * 4  # the three float32 frames the detector sees
    assert plan.detecting == detection_memory_bytes("retinaface_resnet50", *HD, 3) - plan.detector_weights + frames
    assert plan.frames >= frames and plan.upscale == 0
    assert plan.work == plan.detector_weights + max(plan.network + plan.frames, plan.detecting)
    half = memory.plan_memory(3, *HD, size=512, dtype=torch.float16, faces_per_call=2)
    assert half.network == memory.network_memory_bytes(512, torch.float16, 2) < plan.network
    auto = memory.plan_memory(3, *HD, size=512)  # automatic batch: room for a few faces
    assert auto.network == memory.network_memory_bytes(512, None, memory.FACES_TO_PLAN_FOR)


def test_plan_network_part_matches_the_traced_peaks():
    """The network part against the peaks traced on fake CUDA tensors (every released size, 16 bits
    and float32, batches 1, 2 and 4; ``bench/results/cuda_trace_memory.json``): within 10%."""
    import json

    from conftest import REPO

    rows = json.loads((REPO / "bench" / "results" / "cuda_trace_memory.json").read_text())["rows"]
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    assert len(rows) >= 8
    for r in rows:
        plan = memory.plan_memory(1, 512, 512, size=r["size"], dtype=dtypes[r["dtype"]], faces_per_call=r["batch"])
        assert abs(plan.network / r["peak_bytes"] - 1) <= 0.10, r


@pytest.mark.parametrize("detector", ["retinaface_resnet50", "retinaface_mobile0.25"])
def test_plan_grows_with_frames_up_to_one_step(detector):
    plans = [memory.plan_memory(n, *HD, size=512, detector=detector) for n in (1, 2, 4, 8, 15, 16, 64, 1000)]
    for a, b in zip(plans, plans[1:]):
        assert a.frames <= b.frames and a.detecting <= b.detecting and a.work <= b.work
    assert plans[0].frames < plans[4].frames
    # a long batch goes through in steps: 1000 frames need what one step and one detector call need
    assert plans[-1] == plans[-2] == memory.plan_memory(16, *HD, size=512, detector=detector)
    assert plans[-1].frames == memory.default_frames_per_chunk(*HD) * HD[0] * HD[1] * 3 * 4 * memory.FRAME_COPIES


def test_plan_grows_with_upscale_and_stays_within_one_step():
    one = [memory.plan_memory(1, *HD, size=1024, upscale=u) for u in (1, 2, 3, 4)]
    assert one[0].upscale == 0
    for a, b in zip(one, one[1:]):
        assert a.upscale < b.upscale and a.restoring < b.restoring and a.network == b.network
    assert one[1].frames + one[1].upscale == 4 * one[0].frames  # twice the side: four times the pixels
    # many frames: the output size shortens the step (about 32 MPixel, at least one frame), so the
    # frames part stays bounded
    for u in (1, 2, 3, 4):
        many = memory.plan_memory(200, *HD, size=1024, upscale=u)
        step_pixels = max(32e6, HD[0] * u * HD[1] * u)
        assert 0 < many.frames + many.upscale <= step_pixels * 3 * 4 * memory.FRAME_COPIES


def test_plan_has_no_detector_part_when_faces_are_given():
    given = memory.plan_memory(8, *HD, size=512, upscale=2, detector=None)  # landmarks given, or aligned crops
    detected = memory.plan_memory(8, *HD, size=512, upscale=2, detector="retinaface_resnet50")
    assert given.detector_weights == given.detecting == 0
    assert (given.network, given.frames, given.upscale) == (detected.network, detected.frames, detected.upscale)
    assert given.work == given.restoring < detected.work
    empty = memory.plan_memory(0, *HD, size=512, detector="retinaface_resnet50")
    assert empty.detector_weights == empty.detecting == empty.frames == 0
