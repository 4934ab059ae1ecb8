"""ONNX GPEN files: onnxruntime running the graph vs the fast path (weights mapped onto our network).

    python -m bench onnx --size 512                          # a seeded export made like the files in circulation
    python -m bench onnx --file GPEN-BFR-512.onnx --batches 1 8 --dtypes fp32 fp16

Without ``--file`` the released layout of the size (seeded weights) is exported with the legacy
TorchScript exporter, opset 11, batch 1, in the official per-sample-weight formulation
(``tests/onnx_reference.py``), which is how the ``GPEN-BFR-*.onnx`` files of ReActor and FaceFusion
were made. Both paths time the same file on the same device; ms/face and load time are printed.
The onnxruntime path computes in float32 (fp16 rows are fast-path only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import REPO, SIZE_TO_MODEL, device_name, measure


def add_parser(sub) -> None:
    p = sub.add_parser("onnx", help="time an ONNX GPEN file: onnxruntime vs the fast path")
    p.add_argument("--size", type=int, default=512, choices=[256, 512, 1024, 2048])
    p.add_argument("--file", help="a GPEN .onnx file to time (default: a seeded export of --size)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "fp16", "bf16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", help="write the rows to this JSON file")


def export_seeded(size: int, folder: Path) -> Path:
    """The released layout of ``size`` with seeded weights, exported like the files in circulation."""
    sys.path.insert(0, str(REPO / "tests"))
    from onnx_reference import CheckpointModule, export  # noqa: PLC0415  (test helper, not shipped)

    from gpen.model.layouts import seeded_state_dict

    module = CheckpointModule(seeded_state_dict(SIZE_TO_MODEL[size], seed=0))
    return export(module, folder / f"GPEN-BFR-{size}-seeded.onnx", batch=1, size=size, dynamo=False, opset=11)


def _time(net, x: torch.Tensor, device: torch.device, warmup: int, repeat: int) -> float:
    """Best of ``repeat`` calls after ``warmup`` (:func:`bench.common.measure`), output checked finite."""
    with torch.inference_mode():
        best = min(measure(lambda: net(x), device, warmup=warmup, repeat=repeat))
        assert torch.isfinite(net(x)).all(), "non-finite output"
    return best


def run(args: argparse.Namespace) -> list[dict]:
    from gpen.model.onnx_loading import load_onnx_model
    from gpen.model.onnx_runtime import OnnxGPEN

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        if args.file:
            path = Path(args.file)
        else:
            t = time.perf_counter()
            path = export_seeded(args.size, Path(tmp))
            print(f"exported {path.name} ({path.stat().st_size / 2 ** 20:.0f} MiB) in {time.perf_counter() - t:.1f} s")
        rows = []
        t = time.perf_counter()
        ort = load_onnx_model(path, device=device, fast_path=False)
        ort_load = time.perf_counter() - t
        paths = [("onnxruntime", "fp32", ort, ort_load)]
        for dtype in args.dtypes:
            t = time.perf_counter()
            net = load_onnx_model(path, device=device, dtype=dtype)
            load = time.perf_counter() - t
            if isinstance(net, OnnxGPEN):
                print(f"{path.name}: the fast path was refused (see the log); nothing to compare")
                break
            paths.append(("fast path", dtype, net, load))
        size = ort.size
        print(f"{'device':40s} | {'path':11s} | dtype | size | batch | ms/face | faces/s | load s | x onnxruntime")
        base = {}
        for batch in args.batches:
            x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
            for name, dtype, net, load in paths:
                seconds = _time(net, x, device, args.warmup, args.repeat)
                ms = seconds / batch * 1e3
                if name == "onnxruntime":
                    base[batch] = ms
                row = {"device": device_name(device), "path": name, "dtype": dtype, "size": size, "batch": batch,
                       "ms_per_face": ms, "faces_per_s": batch / seconds, "load_s": load,
                       "providers": ort.providers if name == "onnxruntime" else None,
                       "speedup_vs_onnxruntime": base[batch] / ms, "file": path.name}
                rows.append(row)
                print(f"{row['device'][:40]:40s} | {name:11s} | {dtype:5s} | {size:4d} | {batch:5d} | {ms:7.0f} | "
                      f"{row['faces_per_s']:7.2f} | {load:6.1f} | {row['speedup_vs_onnxruntime']:.2f}", flush=True)
    return rows
