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
    "AuthenticAMD": ("cpu_network_batches_epyc.json", "cpu_network_batches_epyc_512_1024.json"),
}


def fastest_batches(files: tuple[str, ...], tolerance: float = 0.02) -> dict[int, int]:
    """Size -> the smallest measured float32 batch within ``tolerance`` of the least time per face."""
    import json
    from pathlib import Path

    best: dict[int, dict[int, float]] = {}
    for name in files:
        rows = json.loads((Path(__file__).resolve().parents[1] / "bench" / "results" / name).read_text())["rows"]
        for r in rows:
            if r["impl"] == "ours" and r["dtype"] == "fp32":
                per_size = best.setdefault(r["size"], {})
                per_size[r["batch"]] = min(per_size.get(r["batch"], float("inf")), r["ms_per_face"])
    return {size: min(b for b, ms in t.items() if ms <= (1 + tolerance) * min(t.values())) for size, t in best.items()}


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
    monkeypatch.setattr(memory, "cpu_vendor", lambda: "GenuineIntel")
    assert memory.default_chunk_size(cpu, 256, torch.bfloat16) == 1  # measured for float32 only
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
