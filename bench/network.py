"""Speed and memory of the GPEN network alone (and, with --official, of the official code side by side).

    python -m bench network --sizes 512 2048 --batches 1 8 --dtypes fp32
    python -m bench network --official /path/to/GPEN          # time the official FullGenerator too

Prints a table (device, implementation, dtype, size, batch, faces/s, ms/face, peak memory, GFLOP/s,
share of this machine's measured peak, ratio to the reference figures) and writes the rows as JSON
(``--json``). Each configuration runs in a fresh process (``python -m bench _one``) so that its
peak memory is its own. Random (seeded) weights: speed does not depend on the weight values.
``seconds`` is the best of ``--repeat`` timed calls after ``--warmup`` (``seconds_all`` lists them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

from bench.common import (REFERENCE_SECONDS_PER_FACE, REPO, aligned_face, build, cpu_capabilities, device_name,
                          flops_per_face, image_psnr, measure, measured_peak_gflops, peak_rss_mib)
from gpen.model.checkpoint import resolve_dtype
from gpen.model.precision import NAMES


def add_parser(sub) -> None:
    """The ``network`` and ``_one`` subcommands."""
    n = sub.add_parser("network", help="time the network alone")
    n.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    n.add_argument("--batches", type=int, nargs="+", default=[1])
    n.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "fp16", "bf16", "auto"],
                   help="auto: what gpen.load_model(dtype='auto') picks here (gpen.model.precision)")
    n.add_argument("--psnr", action="store_true",
                   help="rows not in fp32 also give the PSNR of their output against fp32 on a real aligned face")
    n.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    n.add_argument("--repeat", type=int, default=3)
    n.add_argument("--rounds", type=int, default=1,
                   help="run every configuration this many times, alternating (a fresh process each); the "
                        "row keeps the best call over all rounds and the median")
    n.add_argument("--warmup", type=int, default=1)
    n.add_argument("--official", help="path to a checkout of the official GPEN code, timed side by side")
    n.add_argument("--official-max-batch", type=int, default=1)
    n.add_argument("--malloc", nargs="+", default=["tuned"], choices=["tuned", "default"],
                   help="glibc allocator: tuned keeps large blocks (gpen/runtime.py), default as is")
    n.add_argument("--compile", action="store_true",
                   help="also time each configuration of ours through torch.compile (compile time excluded)")
    n.add_argument("--json", help="write the rows to this JSON file")
    n.add_argument("--markdown", help="write the table as Markdown to this file")
    one = sub.add_parser("_one")
    for a, kw in (("--impl", {}), ("--size", {"type": int}), ("--batch", {"type": int}), ("--dtype", {}),
                  ("--device", {}), ("--repeat", {"type": int}), ("--warmup", {"type": int}),
                  ("--official", {"default": None})):
        one.add_argument(a, **kw)
    one.add_argument("--tune-malloc", action="store_true")
    one.add_argument("--compile", action="store_true")
    one.add_argument("--psnr", action="store_true")


def run_one(args: argparse.Namespace) -> dict:
    """Time one configuration in this process; return one result row."""
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    torch.backends.cudnn.benchmark = True
    if args.tune_malloc:
        from gpen.runtime import tune_cpu_allocator

        tune_cpu_allocator()
    net = build(args.impl, args.size, device, dtype, args.official)
    if args.compile:
        net.compile()
    x = torch.rand(args.batch, 3, args.size, args.size, device=device, dtype=dtype) * 2 - 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        times = measure(lambda: net(x), device, warmup=args.warmup, repeat=args.repeat)
        out = net(x)
    assert torch.isfinite(out).all(), "non-finite output"
    best = min(times)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else peak_rss_mib()
    impl = args.impl + ("+compile" if args.compile else "")
    row = {"impl": impl, "device": device_name(device), "dtype": args.dtype, "resolved_dtype": NAMES[dtype],
           "size": args.size, "batch": args.batch, "seconds": best, "seconds_all": times, "peak_mib": peak,
           "threads": torch.get_num_threads()}
    if device.type == "cpu":
        row["cpu"] = cpu_capabilities()
    if args.psnr and dtype != torch.float32:  # after the timing and the peak: a float32 network beside it
        face = aligned_face(args.size).to(device)
        with torch.inference_mode():
            out = net(face.to(dtype)).float()
            del net
            ref = build(args.impl, args.size, device, torch.float32, args.official)(face).float()
        row["psnr_db_vs_fp32_aligned_face"] = image_psnr(out, ref)
    return row


def run(args: argparse.Namespace) -> list[dict]:
    """Every configuration of ``args``, each in its own process; one row each."""
    device = torch.device(args.device)
    rows = []
    impls = ["ours"] + (["official"] if args.official else [])
    peaks = {d: measured_peak_gflops(device, resolve_dtype(d, device)) for d in args.dtypes}
    configs = [(size, dtype, batch, malloc, impl) for size in args.sizes for dtype in args.dtypes
               for batch in args.batches for malloc in args.malloc for impl in impls
               if impl == "ours" or (dtype == "fp32" and batch <= args.official_max_batch)]
    if args.compile:
        configs += [(size, dtype, batch, malloc, "ours+compile") for size, dtype, batch, malloc, impl in configs
                    if impl == "ours"]
    flops_of = {size: flops_per_face(size) for size in args.sizes}
    merged: dict[tuple, dict] = {}
    for _ in range(args.rounds):
        for config in configs:
            row = _run_config(args, *config)
            if row is None:
                continue
            if config in merged:
                row["seconds_all"] = merged[config]["seconds_all"] + row["seconds_all"]
                row["peak_mib"] = max(row["peak_mib"], merged[config]["peak_mib"])
            row["seconds"] = min(row["seconds_all"])
            merged[config] = row
    for (size, dtype, batch, malloc, impl), row in merged.items():
        flops = flops_of[size]
        per_face = row["seconds"] / batch
        row.update({
            "faces_per_s": batch / row["seconds"], "ms_per_face": per_face * 1e3,
            "median_ms_per_face": statistics.median(row["seconds_all"]) / batch * 1e3,
            "gflop_per_face": flops / 1e9, "gflops": flops / per_face / 1e9,
            "peak_gflops_measured": peaks[dtype],
        })
        row["share_of_peak"] = row["gflops"] / peaks[dtype]
        ref = REFERENCE_SECONDS_PER_FACE.get(size)
        row["speedup_vs_reference_figure"] = ref / per_face if ref and device.type == "cpu" else None
        rows.append(row)
    fp32 = {(r["impl"], r["size"], r["batch"], r["malloc"]): r["ms_per_face"] for r in rows if r["dtype"] == "fp32"}
    for r in rows:  # the ratio to float32 measured in the same run (alternating with it over --rounds)
        base = fp32.get((r["impl"], r["size"], r["batch"], r["malloc"]))
        r["speedup_vs_fp32_same_run"] = base / r["ms_per_face"] if base else None
        print_row(r)
    add_side_by_side(rows)
    return rows


def _run_config(args: argparse.Namespace, size: int, dtype: str, batch: int, malloc: str, impl: str) -> dict | None:
    """One configuration in a fresh process (``python -m bench _one``); its row, None when it failed."""
    cmd = [sys.executable, "-m", "bench", "_one", "--impl", impl.removesuffix("+compile"), "--size", str(size),
           "--batch", str(batch), "--dtype", dtype, "--device", args.device,
           "--repeat", str(args.repeat), "--warmup", str(args.warmup)]
    if malloc == "tuned":
        cmd.append("--tune-malloc")
    if impl.endswith("+compile"):
        cmd.append("--compile")
    if args.official:
        cmd += ["--official", args.official]
    if getattr(args, "psnr", False):
        cmd.append("--psnr")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["malloc"] = malloc
    row["load_average"] = os.getloadavg()
    return row


def add_side_by_side(rows: list[dict]) -> None:
    """Speed-up over the official code measured in the same run (same size, batch 1 baseline)."""
    official = {(r["size"], r["batch"], r["malloc"]): r["ms_per_face"] for r in rows if r["impl"] == "official"}
    for r in rows:
        base = official.get((r["size"], r["batch"], r["malloc"])) or official.get((r["size"], 1, r["malloc"]))
        ours = r["impl"].startswith("ours")
        r["speedup_vs_official_same_run"] = base / r["ms_per_face"] if base and ours else None


HEADER = ("device", "impl", "malloc", "dtype", "size", "batch", "faces/s", "ms/face", "peak MiB", "GFLOP/s", "% peak",
          "x ref fig.", "x fp32", "dB vs fp32")


def _dtype(r: dict) -> str:
    return f"auto={r['resolved_dtype']}" if r["dtype"] == "auto" else r["dtype"]


def _extras(r: dict) -> list[str]:
    x32, db = r.get("speedup_vs_fp32_same_run"), r.get("psnr_db_vs_fp32_aligned_face")
    return [f"{x32:.2f}" if x32 else "-", f"{db:.1f}" if db else "-"]


def print_row(r: dict) -> None:
    if not getattr(print_row, "header_done", False):
        print(" | ".join(HEADER))
        print_row.header_done = True
    ref = r.get("speedup_vs_reference_figure")
    print(" | ".join([
        r["device"][:40], r["impl"], r["malloc"], _dtype(r), str(r["size"]), str(r["batch"]), f"{r['faces_per_s']:.3f}",
        f"{r['ms_per_face']:.0f}", f"{r['peak_mib']:.0f}", f"{r['gflops']:.1f}", f"{100 * r['share_of_peak']:.0f}%",
        f"{ref:.2f}" if ref else "-", *_extras(r),
    ]), flush=True)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADER + ("x official (same run)",)) + " |", "|" + "---|" * (len(HEADER) + 1)]
    for r in rows:
        ref = r.get("speedup_vs_reference_figure")
        same = r.get("speedup_vs_official_same_run")
        lines.append("| " + " | ".join([
            r["device"], r["impl"], r["malloc"], _dtype(r), str(r["size"]), str(r["batch"]), f"{r['faces_per_s']:.3f}",
            f"{r['ms_per_face']:.0f}", f"{r['peak_mib']:.0f}", f"{r['gflops']:.1f}",
            f"{100 * r['share_of_peak']:.0f}%", f"{ref:.2f}" if ref else "-", *_extras(r), f"{same:.2f}" if same else "-",
        ]) + " |")
    return "\n".join(lines)
