"""float32 matrix products on the CPU: torch's own (``torch.mm``, MKL on x86 builds) against oneDNN's
(``gpen.model.cpu_matmul.linear``), for a square product and the shapes the network runs.

    python -m bench matmul --json bench/results/cpu_matmul_epyc.json

MKL picks its code path by processor vendor: on AMD processors it takes the AVX2 one even where the
processor has AVX-512, which oneDNN (generating its kernels for the processor it finds) uses. The
rows say how much that costs here, and so whether the network's products should go through oneDNN
on this kind of processor (``gpen.model.cpu_matmul``: on x86 processors other than Intel's).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench.common import device_name, measure

# (name, n, k, o): x (n, k) @ w (o, k)^T
SHAPES = (
    ("square 2048", 2048, 2048, 2048),
    ("Winograd product, 64 px level", 4096, 512, 256),
    ("Winograd product, 256 px level", 16384, 256, 128),
    ("Winograd input transform", 36, 36, 131072),
    ("transposed conv, 32 px", 1024, 1024, 4608),
    ("ToRGB band, 1024 px level", 65536, 64, 3),
)


def add_parser(sub) -> None:
    p = sub.add_parser("matmul", help="float32 matrix products: torch.mm (MKL) vs oneDNN")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="write the rows to this JSON file")


def run(args: argparse.Namespace) -> list[dict]:
    from gpen.model import cpu_matmul

    device = torch.device("cpu")
    if not cpu_matmul.onednn_works():
        raise SystemExit("oneDNN's matrix product is not available here (x86-64 CPUs only): nothing to compare")
    g = torch.Generator().manual_seed(0)
    rows = []
    print(f"{'shape':32s} | {'n x k x o':20s} | torch.mm ms | GFLOP/s | oneDNN ms | GFLOP/s | x")
    for name, n, k, o in SHAPES:
        x, w = torch.randn(n, k, generator=g), torch.randn(o, k, generator=g)
        out = torch.empty(n, o)
        def onednn(x=x, w=w):
            with cpu_matmul.engine("onednn"):
                return cpu_matmul.linear(x, w)

        paths = {"torch.mm": lambda x=x, w=w, out=out: torch.mm(x, w.t(), out=out), "oneDNN": onednn}
        times: dict[str, list[float]] = {p: [] for p in paths}
        for r in range(args.rounds):
            for p, fn in paths.items():
                times[p] += measure(fn, device, warmup=1 if r == 0 else 0, repeat=args.repeat)
        flop = 2 * n * k * o
        row = {"device": device_name(device), "shape": name, "n": n, "k": k, "o": o, "threads": torch.get_num_threads(),
               **{f"{p}_ms": min(t) * 1e3 for p, t in times.items()},
               **{f"{p}_median_ms": statistics.median(t) * 1e3 for p, t in times.items()},
               **{f"{p}_gflops": flop / min(t) / 1e9 for p, t in times.items()}}
        row["speedup"] = row["torch.mm_ms"] / row["oneDNN_ms"]
        rows.append(row)
        print(f"{name:32s} | {f'{n} x {k} x {o}':20s} | {row['torch.mm_ms']:11.2f} | {row['torch.mm_gflops']:7.0f} | "
              f"{row['oneDNN_ms']:9.2f} | {row['oneDNN_gflops']:7.0f} | {row['speedup']:.2f}", flush=True)
    return rows
