"""``python -m bench ray``: throughput of the Ray Data runner with 1, 2, ... workers, beside local runs.

A folder of ``--images`` copies of skimage's astronaut (one face, its real landmarks given, so no
detector runs; a few pixels of noise make each a different picture) is restored with seeded
weights of the released layout (``--size``). Every configuration runs once untimed on ``--warm``
images (imports, file caches), then once timed on the full folder. Each unit of work is timed
where it runs (:class:`gpen.runs.jobs.TaskTiming` in the run's report), so the table separates:

- ``startup s``: from the call to the first image starting (a Ray run: actors starting, importing
  torch and loading the model);
- ``first image s``: a worker's first image (buffers allocated, weights transformed once);
- ``steady s/image`` and ``steady images/s``: every later image, summed over the workers
  (``(n - 1) / (last end - first end)`` per worker): the rate a long job runs at;
- ``total s``: what a user waits for the folder.

Configurations: the local run in this process (1 thread, and all threads), the local run in N
processes of one thread each (the same work as N Ray workers, without Ray: what the machine
itself gives), and Ray with each ``--workers`` count, one torch thread per worker. The machine's
load average is recorded: on a shared machine other work takes cores too.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from bench.common import SIZE_TO_MODEL, device_name


def add_parser(sub) -> None:
    p = sub.add_parser("ray", help="Ray Data runner: images/s with 1, 2, ... workers (CPU)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--images", type=int, default=12, help="images in the timed folder")
    p.add_argument("--warm", type=int, default=2, help="images in the untimed first run")
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
        noisy = np.clip(img.astype(np.int16) + np.random.default_rng(i).integers(-2, 3, img.shape), 0, 255)
        cv2.imwrite(str(folder / name), noisy.astype(np.uint8))
        images[name] = lms
    lm = root / f"lm_{n}.json"
    lm.write_text(json.dumps({"images": images}))
    return folder, lm


def _restore(files: list[str], out: str, model: str, landmarks: str, threads: int, ray=None):
    """One run of the runner; returns (when it started, seconds from call to return, its report)."""
    from gpen.runs.runner import restore_files

    started = time.time()
    report = restore_files(files, out, model=model, landmarks=landmarks, threads=threads, ray=ray, quiet=True)
    return started, time.time() - started, report


def _in_processes(n: int, files: list[str], out: str, model: str, landmarks: str):
    """The local run split over ``n`` fresh processes of one thread each, side by side."""
    with ProcessPoolExecutor(n, mp_context=get_context("spawn")) as pool:
        started = time.time()
        runs = list(pool.map(_restore, [files[k::n] for k in range(n)], [out] * n, [model] * n, [landmarks] * n,
                             [1] * n))
        total = time.time() - started
    timings = [t for _, _, report in runs for t in report.timings]
    return started, total, timings


def summarize(timings, started: float, total: float) -> dict:
    """The row's numbers from the per-image timings of one run (see the module docstring)."""
    by_worker: dict[str, list] = {}
    for t in sorted(timings, key=lambda t: t.started):
        by_worker.setdefault(t.worker, []).append(t)
    firsts = [ts[0] for ts in by_worker.values()]
    later = [t for ts in by_worker.values() for t in ts[1:]]
    rate = sum((len(ts) - 1) / ((ts[-1].started + ts[-1].seconds) - (ts[0].started + ts[0].seconds))
               for ts in by_worker.values() if len(ts) > 1)
    return {"processes": len(by_worker), "total_s": round(total, 2),
            "startup_s": round(min(t.started for t in firsts) - started, 2),
            "first_image_s": round(float(np.median([t.seconds for t in firsts])), 2),
            "steady_s_per_image": round(float(np.median([t.seconds for t in later])), 2) if later else None,
            "steady_images_per_s": round(rate, 3), "images": len(timings)}


def run(args: argparse.Namespace) -> list[dict]:
    """Time every configuration; print a table; return the rows."""
    import ray

    from gpen.runs.distributed import RayConfig
    from gpen.model.layouts import seeded_state_dict

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = str(root / f"{SIZE_TO_MODEL[args.size]}-seeded.pth")
        torch.save(seeded_state_dict(SIZE_TO_MODEL[args.size]), model)
        small, small_lm = _folder(root, args.warm)
        big, big_lm = _folder(root, args.images)
        files = sorted(str(f) for f in big.iterdir())
        cpus = os.cpu_count()
        runs = [("local", 1, 1), ("local", 1, cpus), ("processes", cpus, 1)] + [("ray", w, 1) for w in args.workers]
        begun = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"py_modules": [str(Path(__file__).resolve().parents[1] / "gpen")]})
        cluster_s = time.perf_counter() - begun
        try:
            for kind, workers, threads in runs:
                cfg = RayConfig(workers=workers) if kind == "ray" else None
                out = str(root / f"out_{kind}_{workers}_{threads}")
                _restore([str(small)], out + "_warm", model, str(small_lm), threads, cfg)
                if kind == "processes":
                    started, total, timings = _in_processes(workers, files, out, model, str(big_lm))
                else:
                    started, total, report = _restore(files, out, model, str(big_lm), threads, cfg)
                    timings = report.timings
                rows.append({"run": kind, "workers": workers, "threads_per_worker": threads, "size": args.size,
                             **summarize(timings, started, total), "load_average": round(os.getloadavg()[0], 2)})
                print(rows[-1], flush=True)
        finally:
            ray.shutdown()
    base = next((r for r in rows if r["run"] == "ray" and r["workers"] == 1), None)
    for r in rows:
        r["speedup_vs_1_worker"] = (round(r["steady_images_per_s"] / base["steady_images_per_s"], 2)
                                    if base else None)
    meta = {"machine": device_name(torch.device("cpu")), "torch": torch.__version__, "ray": ray.__version__,
            "cluster_start_s": round(cluster_s, 2), "load_average_after": os.getloadavg(), "cpu_count": cpus}
    print("\n" + markdown_table(rows))
    print(f"\n{meta}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**meta, "rows": rows}, indent=1))
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = ("| run | workers | threads each | size | images | total s | startup s | first image s | steady s/image "
            "| steady images/s | × 1 Ray worker |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['run']} | {r['workers']} | {r['threads_per_worker']} | {r['size']} | {r['images']} | "
                     f"{r['total_s']} | {r['startup_s']} | {r['first_image_s']} | {r['steady_s_per_image']} | "
                     f"{r['steady_images_per_s']} | {r['speedup_vs_1_worker']} |")
    return "\n".join(lines)
