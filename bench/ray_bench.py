"""``python -m bench ray``: throughput of the Ray Data runner with 1, 2, ... workers, and of the local run.

A folder of ``--images`` copies of skimage's astronaut (one face, its real landmarks given, so no
detector runs) is restored with seeded weights of the released layout (``--size``); each Ray
worker has one torch thread. Every configuration runs once untimed (imports, caches), then twice
timed, on ``--warm`` images and on all of them: the difference removes the fixed costs (actors
importing torch and loading the model), so ``marginal images/s`` is the steady throughput and
``total s`` what a user waits for the full folder. The local run is the same call without Ray (one
process, 1 or all threads). The machine's load average is recorded: on a shared machine other
work takes cores too.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import SIZE_TO_MODEL, device_name


def add_parser(sub) -> None:
    p = sub.add_parser("ray", help="Ray Data runner: images/s with 1, 2, ... workers (CPU)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--images", type=int, default=12, help="images in the timed folder")
    p.add_argument("--warm", type=int, default=2, help="images in the run that measures fixed costs")
    p.add_argument("--size", type=int, default=512, choices=sorted(SIZE_TO_MODEL))
    p.add_argument("--cpus", type=int, default=None, help="CPUs of the local cluster (default: all)")
    p.add_argument("--json", help="write the rows here")


def _folder(root: Path, n: int) -> tuple[Path, Path]:
    import cv2
    from skimage import data

    img = data.astronaut()[:, :, ::-1]
    lms = json.loads((Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "geometry" / "landmarks.json")
                     .read_text())["images"]["skimage.data.astronaut"]
    folder = root / f"in_{n}"
    folder.mkdir()
    images = {}
    for i in range(n):
        name = f"img{i:03d}.png"
        # a different picture each time (a few pixels of noise), the same face
        noisy = np.clip(img.astype(np.int16) + np.random.default_rng(i).integers(-2, 3, img.shape), 0, 255)
        cv2.imwrite(str(folder / name), noisy.astype(np.uint8))
        images[name] = lms
    lm = root / f"lm_{n}.json"
    lm.write_text(json.dumps({"images": images}))
    return folder, lm


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(args: argparse.Namespace) -> list[dict]:
    """Time every configuration; print a table; return the rows."""
    import ray

    from gpen.distributed import RayConfig
    from gpen.model.layouts import seeded_state_dict
    from gpen.runner import restore_files

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = root / f"{SIZE_TO_MODEL[args.size]}-seeded.pth"
        torch.save(seeded_state_dict(SIZE_TO_MODEL[args.size]), model)
        small, small_lm = _folder(root, args.warm)
        big, big_lm = _folder(root, args.images)
        runs = [("local", None, 1), ("local", None, os.cpu_count())] + [("ray", w, 1) for w in args.workers]
        started = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"py_modules": [str(Path(__file__).resolve().parents[1] / "gpen")]})
        cluster_s = time.perf_counter() - started
        try:
            for kind, workers, threads in runs:
                times = []
                for k, (folder, lm) in enumerate(((small, small_lm), (small, small_lm), (big, big_lm))):
                    out = root / f"out_{kind}_{workers}_{threads}_{k}"
                    cfg = RayConfig(workers=workers) if kind == "ray" else None
                    times.append(_timed(lambda: restore_files([folder], out, model=str(model), landmarks=lm,
                                                              threads=threads, ray=cfg, quiet=True)))
                warm, full = times[1], times[2]  # times[0]: the untimed first run
                marginal = (args.images - args.warm) / max(1e-9, full - warm)
                rows.append({"run": kind, "workers": workers or 1, "threads_per_worker": threads,
                             "size": args.size, "images": args.images, "total_s": round(full, 2),
                             "warm_run_s": round(warm, 2), "images_per_s": round(args.images / full, 3),
                             "marginal_images_per_s": round(marginal, 3), "load_average": os.getloadavg()[0]})
                print(rows[-1], flush=True)
        finally:
            ray.shutdown()
    base = next((r for r in rows if r["run"] == "ray" and r["workers"] == 1), None)
    for r in rows:
        r["speedup_vs_1_worker"] = (round(r["marginal_images_per_s"] / base["marginal_images_per_s"], 2)
                                    if base else None)
    meta = {"machine": device_name(torch.device("cpu")), "torch": torch.__version__, "ray": ray.__version__,
            "cluster_start_s": round(cluster_s, 2), "load_average_after": os.getloadavg(),
            "cpu_count": os.cpu_count()}
    print("\n" + markdown_table(rows))
    print(f"\n{meta}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**meta, "rows": rows}, indent=1))
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = "| run | workers | threads each | size | images | total s | marginal images/s | × 1 worker |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['run']} | {r['workers']} | {r['threads_per_worker']} | {r['size']} | {r['images']} | "
                     f"{r['total_s']} | {r['marginal_images_per_s']} | {r['speedup_vs_1_worker']} |")
    return "\n".join(lines)
