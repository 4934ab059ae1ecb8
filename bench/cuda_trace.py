"""The network's CUDA forward traced without a GPU: fake CUDA tensors, every op recorded.

    python -m bench cuda-trace --json bench/results/cuda_trace_memory.json

Under ``torch._subclasses.fake_tensor.FakeTensorMode`` tensors made with ``device="cuda"`` carry
shapes, dtypes and devices but no data, so the real forward (``GPEN.forward`` with its plain path)
runs on any machine in seconds. A ``TorchDispatchMode`` stacked on top sees every op: it records
ops that touch a non-CUDA tensor, ops that wait for the device (``.item()``, ``nonzero``...), and the
live bytes of every storage the ops create (freed when its last tensor goes), whose maximum is the
peak memory the CUDA caching allocator would have to hand out (before its rounding to blocks).
The weights are made before the trace; the weight-derived tensors the first call makes are in it.
"""

from __future__ import annotations

import argparse
import warnings
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

SYNC_OPS = ("_local_scalar_dense", "nonzero", "is_nonzero", "item", "equal", "masked_select", "unique",
            "_unique", "_unique2", "allclose", "_assert_async", "repeat_interleave")
"""aten ops whose result needs the device's data on the host (a synchronisation)."""


class Tracer(TorchDispatchMode):
    """Records, for the ops run under it: non-CUDA tensors, host syncs, and live/peak storage bytes."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, list[int]] = {}  # storage id -> [bytes, tensors that use it]
        self.current = self.peak = self.ops = 0
        self.not_cuda: list[str] = []
        self.syncs: list[str] = []

    def _count(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._live[key]
        entry[1] -= 1
        if not entry[1]:
            self.current -= entry[0]
            del self._live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        name = func.overloadpacket.__name__
        if name in SYNC_OPS:
            self.syncs.append(str(func))
        if any(isinstance(t, torch.Tensor) and t.device.type != "cuda" for t in tree_leaves((args, kwargs))):
            self.not_cuda.append(str(func))  # before the call: the fake mode refuses most mixes itself
        out = func(*args, **kwargs)
        if any(isinstance(t, torch.Tensor) and t.device.type != "cuda" for t in tree_leaves(out)):
            self.not_cuda.append(str(func))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._count(t)
        return out


def fake_network(config, dtype: torch.dtype):
    """A GPEN of ``config`` whose weights are fake CUDA tensors (call under a FakeTensorMode) with the
    dtypes ``gpen.load_model(..., dtype=dtype)`` gives: for bfloat16 the mixed network of
    :func:`gpen.model.precision.cast` (its float32 parameters and buffers)."""
    from gpen.model import precision
    from gpen.model.network import GPEN

    with torch.device("cuda"):
        net = GPEN(config).eval()
    params = dict(net.named_parameters())
    mixed = dtype == torch.bfloat16 and precision.MIXED_BFLOAT16

    def dtype_of(key: str) -> torch.dtype:
        if mixed and (key not in params or precision.keeps_float32(key, config.size)):
            return torch.float32
        return dtype

    state = {k: torch.empty(v.shape, device="cuda", dtype=dtype_of(k)) for k, v in net.state_dict().items()}
    net.load_state_dict(state, assign=True)
    return net


def trace(size: int, dtype: torch.dtype, batches: tuple[int, ...] = (1,), model: str | None = None) -> list[dict]:
    """Trace the first forward of a fresh network of the released ``GPEN-BFR-<size>`` layout (or
    ``model``) on fake CUDA tensors, at each batch (a new network each: its derived weights are made
    in the traced call, as in a user's first call).

    Each row: ``batch``, ``peak_bytes`` (live bytes at the peak, input excluded, derived weights
    made in that call included), ``derived_bytes`` (all derived weights after it), ``weight_bytes``,
    ``ops``, ``not_cuda`` and ``syncs`` (op names), ``out_device``.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    from gpen.model.derived import derived_bytes
    from gpen.model.layouts import released_layout

    config = released_layout(model or f"GPEN-BFR-{size}")["config"]
    rows = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*data pointer of FakeTensor.*")
        with FakeTensorMode(allow_non_fake_inputs=False):
            for batch in batches:
                net = fake_network(config, dtype)
                weights = sum(t.numel() * t.element_size() for t in net.state_dict().values())
                x = torch.empty(batch, 3, config.size, config.size, device="cuda", dtype=dtype)
                tracer = Tracer()
                with tracer:
                    y = net(x)
                rows.append({"size": config.size, "dtype": str(dtype).removeprefix("torch."), "batch": batch,
                             "peak_bytes": tracer.peak, "derived_bytes": derived_bytes(net), "weight_bytes": weights,
                             "ops": tracer.ops, "not_cuda": sorted(set(tracer.not_cuda)),
                             "syncs": sorted(set(tracer.syncs)), "out_device": str(y.device),
                             "out_shape": list(y.shape)})
                del y, x
    return rows


def add_parser(sub) -> None:
    p = sub.add_parser("cuda-trace", help="peak memory, host syncs and devices of the CUDA forward, traced on fake tensors")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--dtypes", nargs="+", default=["fp16", "bf16", "fp32"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--json", help="write the rows to this JSON file")


def run(args: argparse.Namespace) -> list[dict]:
    """Rows of :func:`trace` for every size and dtype, with the per-face slope and the fixed part."""
    from gpen.model.checkpoint import resolve_dtype

    rows = []
    for size in args.sizes:
        for dt in args.dtypes:
            traced = trace(size, resolve_dtype(dt), tuple(args.batches))
            lo, hi = traced[0], traced[-1]  # the model's line goes through the first and last batch
            per_face = (hi["peak_bytes"] - lo["peak_bytes"]) / max(1, hi["batch"] - lo["batch"])
            for r in traced:
                r["per_face_bytes"] = per_face
                r["fixed_bytes"] = lo["peak_bytes"] - lo["batch"] * per_face
                print(f"{size} {dt} b{r['batch']}: peak {r['peak_bytes'] / 2 ** 20:.1f} MiB, derived "
                      f"{r['derived_bytes'] / 2 ** 20:.1f} MiB, {r['ops']} ops, syncs {r['syncs']}", flush=True)
            rows += traced
    return rows
