"""The network's CUDA path without a GPU: the real forward traced on fake CUDA tensors (devices, host
syncs, peak memory against the model that chooses the batch), and the plain path's math run on the
CPU (official outputs, float16 headroom), the overflow fallback, ``all_finite``, and the CUDA-graph
cache's keying (a graph itself can only be captured on a GPU: ``bench/device_check.py`` does)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import gpen
from gpen.model.cuda_graphs import GraphCache
from gpen.model.layouts import seeded_state_dict
from gpen.model.network import GPENConfig
from gpen.pipeline import memory

from conftest import load_reference_fixture

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.cuda_trace import trace  # noqa: E402


@pytest.mark.parametrize("size", [512, 2048])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_forward_stays_on_the_device_and_fits_the_memory_model(size, dtype):
    """The real forward on fake CUDA tensors (released layouts, batch 1 and 4, first call: derived
    weights made in it): every op on CUDA tensors only, no op that waits for the device, the
    output on CUDA, and the traced peak within 10% of ``network_memory_bytes`` (what chooses the batch)."""
    for row in trace(size, dtype, (1, 4)):
        assert row["not_cuda"] == [] and row["syncs"] == []
        assert row["out_device"].startswith("cuda") and row["out_shape"] == [row["batch"], 3, size, size]
        model = memory.network_memory_bytes(size, dtype, row["batch"])
        assert abs(row["peak_bytes"] / model - 1) <= 0.10, (row["batch"], row["peak_bytes"] / 2 ** 20, model / 2 ** 20)


def test_memory_model_predicts_an_untraced_batch():
    """Batch 3 was not among the batches the table was fitted on (1 and 4): still within 10%."""
    (row,) = trace(1024, torch.float16, (3,))
    assert abs(row["peak_bytes"] / memory.network_memory_bytes(1024, torch.float16, 3) - 1) <= 0.10


def test_tracer_sees_host_syncs_and_cpu_tensors():
    """The checks above can fail: ``.item()`` and a CPU operand are caught."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from bench.cuda_trace import Tracer

    with FakeTensorMode(allow_non_fake_inputs=False):
        x = torch.empty(1024, device="cuda")
        with Tracer() as t:
            y = x * torch.tensor(2.0)  # a 0-dim CPU tensor: the fake mode lets it through, the tracer does not
            with pytest.raises(Exception):  # the fake mode cannot even run it (its size needs the data)
                (y > 0).nonzero()
            peak_with_y = t.peak
            del y
    assert any("mul" in op for op in t.not_cuda) and any("nonzero" in op for op in t.syncs)
    assert peak_with_y >= 1024 * 4 + 4 and t.current < peak_with_y  # y counted while alive, released after


def _image_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = (a.float().clamp(-1, 1) + 1) / 2, (b.float().clamp(-1, 1) + 1) / 2
    mse = ((a.double() - b.double()) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


def _plain(net, x: torch.Tensor) -> torch.Tensor:
    """The forward as CUDA runs it (no CPU workspace), here on the CPU."""
    with torch.inference_mode():
        return net._restore(x.to(net.dtype).contiguous(memory_format=torch.channels_last), None)


@pytest.mark.parametrize("tag", ["s256", "s512"])
def test_plain_path_matches_official_outputs(tag):
    """The CUDA path's arrangement (per-image folded weights at high resolution, normalised styles
    elsewhere) computes the official outputs (measured 3.5e-6 and 3.7e-6 of the output's std)."""
    f = load_reference_fixture(tag)
    out = _plain(gpen.load_model(f["checkpoint"]), f["input"])
    k = f["meta"]["subsample_step"]
    assert ((out[:, :, ::k, ::k] - f["expected"]).abs().max() / f["expected"].std()).item() <= 1e-5


def _extreme_styles(net, factor: float):
    """Every styled convolution's style times ``factor`` (the RGB layers' compensated, so the image
    stays in range): the demodulation cancels it in exact arithmetic."""
    net.generator.style.register_forward_hook(lambda m, i, o: o * factor)
    for rgb in [net.generator.to_rgb1, *net.generator.to_rgbs]:
        rgb.conv.modulation.register_forward_hook(lambda m, i, o: o / factor)
    return net


def test_float16_cannot_overflow_on_extreme_styles():
    """Styles x1e5 on a small seeded network: float16 stays finite and close to float32 (measured
    65.6 dB; before the styles were normalised, the unnormalised ``x * s`` overflowed to NaN)."""
    state = seeded_state_dict(GPENConfig(size=64, channel_multiplier=1, narrow=0.25), seed=3)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ref = _plain(_extreme_styles(gpen.load_model(state), 1e5), x)
    half = _plain(_extreme_styles(gpen.load_model(state, dtype=torch.float16), 1e5), x)
    assert torch.isfinite(half).all()
    assert _image_psnr(half, ref) >= 60.0


def test_float32_fallback_is_made_once_per_restorer(monkeypatch):
    """A 16-bit network that overflows on every call is copied to float32 once, not per frame step."""
    from gpen.pipeline import batching

    class Overflowing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1, dtype=torch.float16))

        def forward(self, x):
            return x * float("inf") if self.w.dtype == torch.float16 else x * self.w

    copies = []
    deepcopy = batching.copy.deepcopy
    monkeypatch.setattr(batching.copy, "deepcopy", lambda obj, *a: copies.append(obj) or deepcopy(obj, *a))
    net = Overflowing()
    crops = torch.rand(2, 3, 8, 8)
    for _ in range(3):  # three frame steps
        out = batching.restore_in_chunks(net, crops, 1)
        assert torch.allclose(out, crops, atol=1e-6)
    assert len(copies) == 1
    with torch.no_grad():
        net.w.mul_(1)  # an in-place edit of the weights: the copy is made again
    batching.restore_in_chunks(net, crops, 1)
    assert len(copies) == 2


def test_all_finite_does_not_overflow_on_large_float16_values():
    """Large finite float16 values: one summing pass (accumulated in float32), no element-wise
    pass over the whole tensor (a float16 sum overflowed and always sent it there)."""
    from gpen.pipeline.frames import all_finite

    t = torch.full((64, 1024), 30000.0, dtype=torch.float16)
    big = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.numel() == t.numel():
                big.append(str(func))
            return out

    with Spy():
        assert all_finite(t)
    assert big == []
    t[3, 5] = float("inf")
    assert not all_finite(t)
    t[3, 5] = float("nan")
    assert not all_finite(t)


def test_cuda_graph_cache_keys_on_shape_dtype_and_weights():
    """The graph cache's bookkeeping, with a stand-in for the capture (a real capture needs a GPU):
    one capture per (batch, size, dtype), reused; new weights capture anew; at most ``max_graphs``."""
    net = gpen.load_model(seeded_state_dict(GPENConfig(size=16, narrow=0.0625), seed=1))
    captured = []

    def capture(forward, example):
        captured.append(tuple(example.shape))
        return forward

    cache = GraphCache(net, lambda x: net._restore(x, None), capture=capture, max_graphs=2)
    a, b = torch.rand(1, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.inference_mode():
        expected = net(a)
        assert torch.allclose(cache(a), expected, atol=1e-5) and torch.allclose(cache(a.clone()), expected, atol=1e-5)
        cache(b)
        cache(a)
        assert captured == [(1, 3, 16, 16), (2, 3, 16, 16)]
        cache(a.double())  # a third key: the least recently used (batch 2) goes
        assert len(cache.graphs) == 2 and captured[-1] == (1, 3, 16, 16)
        cache(b)
        assert len(captured) == 4
    with torch.no_grad():
        net.ecd0[0][0].weight.mul_(1.0)  # edited in place: a graph would read stale derived weights
    with torch.inference_mode():
        cache(b)
    assert len(captured) == 5 and len(cache.graphs) == 1
    # the network's switch: on the CPU the graphs are never used
    assert net.enable_cuda_graphs()._graphs is not None and net.enable_cuda_graphs(False)._graphs is None


def test_cuda_free_memory_counts_the_allocators_cache(monkeypatch):
    """Free memory on CUDA as ComfyUI counts it: the driver's free bytes plus what torch's caching
    allocator reserved but does not use."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (3 * 2 ** 30, 8 * 2 ** 30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: 2 * 2 ** 30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 2 ** 30 // 2)
    assert memory.free_device_memory(torch.device("cuda")) == 3 * 2 ** 30 + 2 ** 30 * 3 // 2
    # an 8 GB card with 7.0 GiB free picks the batch the model fits in 60% of it
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (7 * 2 ** 30, 8 * 2 ** 30))
    n = memory.default_chunk_size(torch.device("cuda"), 2048, torch.float16)
    assert memory.network_memory_bytes(2048, torch.float16, n) <= 0.6 * 7 * 2 ** 30
    assert memory.network_memory_bytes(2048, torch.float16, n + 1) > 0.6 * 7 * 2 ** 30
