"""ONNX GPEN files: onnxruntime running the graph vs ``gpen.load_model`` of the same file (our network).

    python -m bench onnx --size 512                          # a seeded export made like the files in circulation
    python -m bench onnx --file GPEN-BFR-512.onnx --batches 1 8 --dtypes fp32 fp16

Without ``--file`` the released layout of the size (seeded weights) is exported with the legacy
TorchScript exporter, opset 11, batch 1, in the official per-sample-weight formulation
(``tests/onnx_reference.py``), which is how the ``GPEN-BFR-*.onnx`` files of ReActor and FaceFusion
were made. ``ours`` is what a user gets from ``gpen.load_model(file)`` (the file's weights mapped
onto the PyTorch network), called as ``net(x)``; onnxruntime gets a CPU session with every graph
optimisation (``ORT_ENABLE_ALL``) and as many intra-op threads as torch uses. Each block of
``--repeat`` calls runs in a fresh plain process (``python -m bench _onnx_one``: nothing else loaded,
so neither engine's idle threads spin against the other's), the blocks alternate over ``--rounds``
rounds so that a change of machine load hits both, and each row gives the best and the median
call. The glibc allocator is left as it is (``--malloc tuned`` applies
``gpen.runtime.tune_cpu_allocator`` first). The graphs have a fixed batch of 1, so onnxruntime runs
one face per call; the onnxruntime path computes in float32 (fp16 rows are ours only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import REPO, SIZE_TO_MODEL, cpu_capabilities, device_name, image_psnr, measure
from gpen.model.precision import NAMES


def add_parser(sub) -> None:
    p = sub.add_parser("onnx", help="time an ONNX GPEN file: onnxruntime vs gpen.load_model")
    p.add_argument("--size", type=int, default=512, choices=[256, 512, 1024, 2048])
    p.add_argument("--file", help="a GPEN .onnx file to time (default: a seeded export of --size)")
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "fp16", "bf16", "auto"],
                   help="our network's precisions (auto: what gpen.load_model(dtype='auto') picks here)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeat", type=int, default=2, help="timed calls per path and round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (onnxruntime, ours, onnxruntime, ...)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--malloc", default="default", choices=["default", "tuned"],
                   help="glibc allocator: default as a host process has it, tuned = gpen.runtime.tune_cpu_allocator")
    p.add_argument("--json", help="write the rows to this JSON file")
    one = sub.add_parser("_onnx_one")
    for a, kw in (("--path", {}), ("--impl", {}), ("--dtype", {}), ("--batch", {"type": int}), ("--device", {}),
                  ("--threads", {"type": int}), ("--repeat", {"type": int}), ("--warmup", {"type": int}),
                  ("--malloc", {}), ("--out", {})):
        one.add_argument(a, **kw)


def export_seeded(size: int, folder: Path) -> Path:
    """The released layout of ``size`` with seeded weights, exported like the files in circulation."""
    sys.path.insert(0, str(REPO / "tests"))
    from onnx_reference import CheckpointModule, export  # noqa: PLC0415  (test helper, not shipped)

    from gpen.model.layouts import seeded_state_dict

    module = CheckpointModule(seeded_state_dict(SIZE_TO_MODEL[size], seed=0))
    return export(module, folder / f"GPEN-BFR-{size}-seeded.onnx", batch=1, size=size, dynamo=False, opset=11)


def onnxruntime_session(path: Path, threads: int):
    """A CPU session of ``path``: every graph optimisation, ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _stats(times: list[float], batch: int) -> dict:
    return {"ms_per_face": min(times) / batch * 1e3, "median_ms_per_face": statistics.median(times) / batch * 1e3,
            "seconds_all": times}


def run_one(args: argparse.Namespace) -> dict:
    """One block of timed calls of one path in this (fresh) process; saves its output of the fixed input."""
    import numpy as np

    if args.malloc == "tuned":
        from gpen.runtime import tune_cpu_allocator

        tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    path, device = Path(args.path), torch.device(args.device)
    t = time.perf_counter()
    if args.impl == "onnxruntime":
        session = onnxruntime_session(path, args.threads)
        inp, outp = session.get_inputs()[0].name, session.get_outputs()[0].name
        size = session.get_inputs()[0].shape[2]
        x = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
        xn = x.numpy()
        fn = lambda: session.run([outp], {inp: xn})[0]  # noqa: E731
        providers, resolved = session.get_providers(), "fp32"
    else:
        import gpen
        from gpen.model.network import GPEN

        net = gpen.load_model(path, device=device, dtype=args.dtype)
        resolved = NAMES[net.dtype]
        if not isinstance(net, GPEN):
            raise SystemExit(f"{path.name}: gpen.load_model did not map it onto the network (see the log)")
        x = (torch.rand(args.batch, 3, net.size, net.size, generator=torch.Generator().manual_seed(0)) * 2 - 1)
        fn = lambda: net(x)  # noqa: E731
        providers = None
    load = time.perf_counter() - t
    with torch.inference_mode():
        out = fn()
        times = measure(fn, device if args.impl == "ours" else torch.device("cpu"), warmup=max(0, args.warmup - 1),
                        repeat=args.repeat)
    out = torch.as_tensor(np.asarray(out[:1]) if args.impl == "onnxruntime" else out[:1].float().cpu().numpy())
    np.save(args.out, out.numpy())
    return {"times": times, "load_s": load, "providers": providers, "resolved_dtype": resolved}


def run(args: argparse.Namespace) -> list[dict]:
    import json
    import subprocess

    import numpy as np
    import onnxruntime as ort

    device = torch.device(args.device)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        if args.file:
            path = Path(args.file)
        else:
            t = time.perf_counter()
            path = export_seeded(args.size, Path(tmp))
            print(f"exported {path.name} ({path.stat().st_size / 2 ** 20:.0f} MiB) in {time.perf_counter() - t:.1f} s")
        size = args.size if not args.file else onnxruntime_session(path, 1).get_inputs()[0].shape[2]
        # The graphs in circulation have a fixed batch of 1: onnxruntime runs one face per call.
        configs = [("onnxruntime", "fp32", 1)] + [("ours", d, b) for d in args.dtypes for b in args.batches]
        times: dict[tuple, list[float]] = {c: [] for c in configs}
        info: dict[tuple, dict] = {}
        outputs: dict[tuple, np.ndarray] = {}
        load_before = os.getloadavg()
        for r in range(args.rounds):  # alternating fresh processes: a plain process each, load shifts hit all
            for impl, dtype, batch in configs:
                out_file = Path(tmp) / f"out_{impl}_{dtype}_{batch}.npy"
                cmd = [sys.executable, "-m", "bench", "_onnx_one", "--path", str(path), "--impl", impl,
                       "--dtype", dtype, "--batch", str(batch), "--device", args.device if impl == "ours" else "cpu",
                       "--threads", str(threads), "--repeat", str(args.repeat), "--warmup", str(args.warmup),
                       "--malloc", args.malloc, "--out", str(out_file)]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if proc.returncode != 0:
                    raise SystemExit(proc.stderr[-3000:])
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                times[(impl, dtype, batch)] += res["times"]
                info[(impl, dtype, batch)] = res
                outputs[(impl, dtype, batch)] = np.load(out_file)
                print(f"round {r}: {impl} {dtype} batch {batch}: " + ", ".join(f"{t:.2f}" for t in res["times"]) + " s",
                      flush=True)
    ref = torch.from_numpy(outputs[("onnxruntime", "fp32", 1)])
    common = {"device": device_name(device), "size": size, "file": path.name, "threads": threads,
              "malloc": args.malloc, "torch": torch.__version__, "onnxruntime": ort.__version__,
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "rounds": args.rounds,
              "calls_per_round": args.repeat, "cpu": cpu_capabilities() if device.type == "cpu" else None}
    base_ts = times[("onnxruntime", "fp32", 1)]
    base, base_median = min(base_ts), statistics.median(base_ts)
    rows = []
    print(f"{'device':40s} | path        | dtype     | size | batch | best ms/face | median | x onnxruntime (best, median)"
          " | dB vs onnxruntime")
    for (impl, dtype, batch), ts in times.items():
        is_ort = impl == "onnxruntime"
        diff = None if is_ort else ((torch.from_numpy(outputs[(impl, dtype, batch)]) - ref).abs().max() / ref.std()).item()
        out = torch.from_numpy(outputs[(impl, dtype, batch)])
        row = {**common, "path": impl, "dtype": dtype, "resolved_dtype": info[(impl, dtype, batch)]["resolved_dtype"],
               "batch": batch, **_stats(ts, batch),
               "psnr_db_vs_onnxruntime_fp32": None if is_ort else image_psnr(out, ref),
               "load_s": info[(impl, dtype, batch)]["load_s"],
               "onnxruntime_options": {"graph_optimization_level": "ORT_ENABLE_ALL", "intra_op_num_threads": threads,
                                       "providers": info[(impl, dtype, batch)]["providers"]} if is_ort else None,
               "max_abs_diff_vs_onnxruntime_over_std": diff,
               "speedup_vs_onnxruntime": base / (min(ts) / batch),
               "speedup_vs_onnxruntime_median": base_median / (statistics.median(ts) / batch)}
        rows.append(row)
        shown = f"auto={row['resolved_dtype']}" if dtype == "auto" else dtype
        db = row["psnr_db_vs_onnxruntime_fp32"]
        print(f"{row['device'][:40]:40s} | {impl:11s} | {shown:9s} | {size:4d} | {batch:5d} | {row['ms_per_face']:12.0f} | "
              f"{row['median_ms_per_face']:6.0f} | {row['speedup_vs_onnxruntime']:.2f}, "
              f"{row['speedup_vs_onnxruntime_median']:.2f} | {'-' if db is None else f'{db:.1f}'}", flush=True)
    return rows
