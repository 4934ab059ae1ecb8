"""Chunk sizes: faces per network call from the device's free memory, faces per step of the frame loop."""

from __future__ import annotations

import types

import pytest
import torch

import gpen.pipeline.memory as memory


def test_mps_uses_the_memory_torch_reports(monkeypatch):
    """On Apple's MPS the faces per call come from torch.mps (one face per call before)."""
    fake = types.SimpleNamespace(recommended_max_memory=lambda: 24 * 2 ** 30,
                                 driver_allocated_memory=lambda: 4 * 2 ** 30)
    monkeypatch.setattr(torch, "mps", fake, raising=False)
    mps = torch.device("mps")
    n = memory.default_chunk_size(mps, 512, torch.float16)
    assert n > 1  # the largest batch whose modelled memory fits 60% of the 20 GiB left
    assert memory.network_memory_bytes(512, torch.float16, n) <= 0.6 * 20 * 2 ** 30 \
        < memory.network_memory_bytes(512, torch.float16, n + 1)
    fake.driver_allocated_memory = lambda: 24 * 2 ** 30  # nothing left: still one face
    assert memory.default_chunk_size(mps, 512, torch.float16) == 1


def test_mps_without_memory_queries_uses_the_documented_budget(monkeypatch):
    monkeypatch.setattr(torch, "mps", types.SimpleNamespace(), raising=False)  # torch < 2.3
    n = memory.default_chunk_size(torch.device("mps"), 256)
    assert n > 1
    assert memory.network_memory_bytes(256, None, n) <= 0.6 * memory.MPS_FALLBACK_BUDGET \
        < memory.network_memory_bytes(256, None, n + 1)


def test_cpu_faces_per_call_follow_the_measured_table_within_the_memory_bound(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 64 * 2 ** 30)
    for vendor, row in (("GenuineIntel", "GenuineIntel"), ("AuthenticAMD", "AuthenticAMD"), ("", "GenuineIntel"),
                        ("HygonGenuine", "GenuineIntel")):  # unmeasured vendors take Intel's row
        monkeypatch.setattr(memory, "cpu_vendor", lambda v=vendor: v)
        for size, best in memory.CPU_FACES_PER_CALL[row].items():
            assert memory.default_chunk_size(cpu, size) == best
    monkeypatch.setattr(memory, "cpu_vendor", lambda: "GenuineIntel")
    assert memory.default_chunk_size(cpu, 256, torch.bfloat16) == 1  # measured for float32 only
    assert memory.default_chunk_size(cpu, 128) == 1  # not measured: one face
    # a quarter of the available memory bounds the batch: room for 3 faces at 256 px gives 3
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 4 * 3 * memory.face_memory_bytes(256) + 1)
    assert memory.default_chunk_size(cpu, 256) == 3
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
