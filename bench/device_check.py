"""One call on a GPU machine: correctness, precision, speed and memory of the network there.

    python -m bench device --json $OUT/device_check.json              # on a lent GPU (about 6 minutes; budget 8)
    python -m bench device --device cpu --smoke                       # the same steps, small, anywhere

Steps (each is reported, and the JSON written after every step; a failing step does not stop the
others; a step whose estimated time (:data:`ESTIMATE_S`) would end past ``--budget-s`` is skipped,
and the speed step stops early enough to leave every later step its estimate):

1. ``parity``: the official-output fixtures (tests/fixtures/reference) on this device in float32,
   with TF32 off and with the device's default convolution settings;
2. ``precision``: float16 / bfloat16 against float32 on seeded full-width weights, as the PSNR of
   the 0..1 images (the issue asks >= 40 dB for float16), on real faces (the pack's group photo,
   aligned);
3. ``speed``: faces/s, ms/face and peak memory per size, dtype and batch, cuDNN autotune off (as in
   ComfyUI without ``--fast autotune``) and on (restored afterwards), and for a few small batches as a
   replayed CUDA graph (``GPEN.enable_cuda_graphs``); batch ``auto`` is what
   :meth:`gpen.FaceRestorer.default_chunk_size` picks, timed through ``run_network`` as users run it;
4. ``small_card``: with all but ``--card-gib`` GiB (7.0: an 8 GB card) of device memory taken by a
   ballast tensor, 2048 px faces restore with the automatic chunk size; ``ok`` only when no
   out-of-memory error reached the user and the back-off never had to halve the chunk;
5. ``memory``: measured peak memory at batch 1, 2, 4 (first call: derived weights included) against
   the model that chooses the batch (``gpen.pipeline.memory.network_memory_bytes``, from fake-tensor traces);
6. ``pipeline``: ``python -m bench pipeline`` here: a 1920x1080 frame with 4 faces, network alone vs
   alignment + network + paste-back + RetinaFace-R50 detection (without facexlib the detection is
   not timed, with the reason in the row, and the other timings are kept);
7. ``profile``: the most expensive kernels of one 2048 px fp16 batch (written beside the JSON);
8. ``upsample``: the upsampling convolution + blur as run now vs one fused 6x6 transposed
   convolution, at the high-resolution layers' shapes;
9. ``official`` (``--official DIR``): the official FullGenerator (its CUDA extensions build on the
   first import, about a minute) timed on the same device at 512 and 2048 px;
10. ``compile`` (``--compile``): eager vs ``torch.compile`` at 2048 px fp16.

Weights are seeded (random): speed and numerical precision do not depend on their values; image
quality is never judged here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from bench.common import REPO, build, device_name, measure, sync
from gpen.model.checkpoint import resolve_dtype


def add_parser(sub) -> None:
    p = sub.add_parser("device", help="one-call correctness/precision/speed/memory check on a GPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="small sizes and few repeats (to try the script)")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="seconds for all steps: a step that would end past it is skipped, and the speed step "
                        "stops early to leave the later steps their estimated time (ESTIMATE_S)")
    p.add_argument("--card-gib", type=float, default=7.0, help="memory left free in the small-card step (an 8 GB card)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile at 2048 px fp16")
    p.add_argument("--official", help="checkout of the official GPEN code, timed side by side")
    p.add_argument("--json", help="write all results to this JSON file")
    p.add_argument("--steps", nargs="+", help="run only these steps (e.g. precision on a CPU; default: all)")


class Clock:
    """Median time on the device (:func:`bench.common.measure`: CUDA events on a GPU, wall clock elsewhere)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def median(self, fn, warmup: int = 2, repeat: int = 5, min_total_s: float = 0.0) -> float:
        return float(np.median(measure(fn, self.device, warmup=warmup, repeat=repeat, min_total_s=min_total_s)))


def image_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two network outputs as 0..1 images."""
    a = (a.float().clamp(-1, 1) + 1) / 2
    b = (b.float().clamp(-1, 1) + 1) / 2
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


@contextlib.contextmanager
def tf32(enabled: bool | None):
    """Convolutions and matrix products in TF32 (True), true float32 (False), or as configured (None)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if enabled is not None:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def net_for(size: int, device: torch.device, dtype: str, seed: int = 0):
    """Our network at ``size`` with seeded weights of the released layout."""
    return build("ours", size, device, resolve_dtype(dtype), None, seed=seed)


def real_faces(n: int, size: int, device: torch.device) -> torch.Tensor:
    """The first ``n`` faces of the group photo that ships with the pack (assets/solvay_conference_1927.png),
    aligned to the GPEN template with ``gpen.faces.align`` from the landmarks in the test fixtures; -1..1."""
    import cv2

    from gpen.faces.align import estimate_similarity, template_points, warp_affine

    bgr = cv2.imread(str(REPO / "assets" / "solvay_conference_1927.png"), cv2.IMREAD_COLOR)
    image = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)[None].float().div(255)
    marks = json.loads((REPO / "tests" / "fixtures" / "geometry" / "landmarks.json").read_text())
    found = marks["images"]["solvay_conference_1927.png"]["faces"]
    template = template_points("gpen", size)
    matrices = torch.stack([torch.as_tensor(estimate_similarity(np.asarray(f["landmarks5"]), template), dtype=torch.float32)
                            for f in (found * n)[:n]])
    crops = warp_affine(image.to(device), matrices.to(device), None, size)
    return crops * 2 - 1


def faces(n: int, size: int, device: torch.device, seed: int = 1) -> torch.Tensor:
    """``n`` random crops in -1..1, made on the device."""
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g, device=device) * 2 - 1


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ---- steps ------------------------------------------------------------------------------------

def step_parity(device: torch.device, smoke: bool) -> list[dict]:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import load_reference_fixture, reference_fixture_dirs  # noqa: PLC0415

    import gpen

    rows = []
    tags = ["s256"] if smoke else sorted(reference_fixture_dirs())
    settings = [("tf32 off", False)] + ([("device default", None)] if device.type == "cuda" else [])
    for tag in tags:
        f = load_reference_fixture(tag)
        k = f["meta"]["subsample_step"]
        for name, enabled in settings:
            with tf32(enabled):
                net = gpen.load_model(f["checkpoint"], device=device)
                out = net(f["input"].to(device)).float().cpu()[:, :, ::k, ::k]
            err = ((out - f["expected"]).abs().max() / f["expected"].std()).item()
            rows.append({"fixture": tag, "setting": name, "max_err_over_std": err, "ok": err <= 1e-4})
    return rows


def step_precision(device: torch.device, smoke: bool) -> list[dict]:
    rows = []
    for size in ([256] if smoke else [512, 2048]):
        x = real_faces(1 if smoke else 2, size, device)  # real faces: their statistics, not noise's
        with tf32(False):  # the reference in true float32
            ref = net_for(size, device, "fp32", seed=5)(x)
        for dt in ("fp16", "bf16"):
            if device.type == "cpu" and dt == "fp16" and smoke:
                continue
            out = net_for(size, device, dt, seed=5)(x)
            rows.append({"size": size, "dtype": dt, "finite": bool(torch.isfinite(out).all()),
                         "psnr_db_vs_fp32": image_psnr(out, ref)})
        del ref
    return rows


@contextlib.contextmanager
def cudnn_autotune(enabled: bool):
    """``torch.backends.cudnn.benchmark`` set for the block and restored after it (it would otherwise
    leak into later steps: autotuned algorithms take larger workspaces)."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


SPEED_PLAN = [(512, "fp16", [1, 8, "auto"]), (1024, "fp16", [1, "auto"]), (2048, "fp16", [1, 4, "auto"]),
              (2048, "bf16", ["auto"]), (512, "fp32", [1]), (2048, "fp32", ["auto"])]
"""(size, dtype, batches) timed by the speed step, in order; cuDNN autotune off and on for each."""
GRAPH_ROWS = {(512, "fp16", 1), (512, "fp16", 8), (2048, "fp16", 1)}
"""Also timed as a replayed CUDA graph (``GPEN.enable_cuda_graphs``), where launches count most."""


def step_speed(device: torch.device, smoke: bool, clock: Clock, deadline: float = math.inf) -> list[dict]:
    """Faces/s per size, dtype and batch, cuDNN autotune off and on, eager and (CUDA) graph; rows
    that would start after ``deadline`` (a ``time.perf_counter`` value) are recorded as skipped."""
    import gpen

    plan = [(256, "fp32", [1, "auto"])] if smoke else SPEED_PLAN
    graph_rows = {(256, "fp32", 1)} if smoke else GRAPH_ROWS
    rows = []
    for size, dt, batches in plan:
        net = restorer = None
        for batch in batches:
            modes = [("eager", False), ("eager", True)] + ([("graph", True)] if (size, dt, batch) in graph_rows else [])
            for mode, autotune in modes:
                row = {"size": size, "dtype": dt, "batch": batch, "mode": mode, "cudnn_autotune": autotune}
                if time.perf_counter() > deadline:
                    rows.append(dict(row, skipped="budget: time left for the later steps"))
                    continue
                if mode == "graph" and device.type != "cuda":
                    rows.append(dict(row, skipped="CUDA graphs need CUDA"))
                    continue
                if net is None:  # built for the first row that runs
                    net = net_for(size, device, dt)
                    restorer = gpen.FaceRestorer(net)
                with cudnn_autotune(autotune):
                    rows.append(dict(row, **_time_batch(net, restorer, size, batch, device, clock, smoke, mode)))
                net.enable_cuda_graphs(False)
    return rows


def _time_batch(net, restorer, size: int, batch, device: torch.device, clock: Clock, smoke: bool, mode: str) -> dict:
    reset_peak(device)
    base = torch.cuda.memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    repeat, min_total = (3, 0.0) if smoke else (5, 1.0)
    if batch == "auto":  # what users get: the chunk from free memory, through run_network
        n = restorer.default_chunk_size(device)
        crops = (faces(n, size, device) + 1) / 2
        seconds = clock.median(lambda: restorer.run_network(crops), repeat=repeat, min_total_s=min_total)
    else:
        n = batch
        x = faces(n, size, device).to(net.dtype)
        if mode == "graph":
            net.enable_cuda_graphs()
            net(x)  # the capture
        seconds = clock.median(lambda: net(x), repeat=repeat, min_total_s=min_total)
    peak = peak_mib(device)
    return {"faces": n, "faces_per_s": n / seconds, "ms_per_face": seconds / n * 1e3, "peak_mib": peak,
            "peak_minus_weights_mib": None if peak is None else peak - base}


def step_memory(device: torch.device, smoke: bool) -> list[dict]:
    """Peak memory at batch 1, 2, 4: slope per face and intercept against the chunk-size model."""
    from gpen.pipeline.memory import network_memory_bytes

    if device.type != "cuda":
        return [{"skipped": "device memory is only measured on CUDA"}]
    rows = []
    for size, dt in ([(256, "fp32")] if smoke else [(512, "fp16"), (2048, "fp16"), (2048, "fp32")]):
        net = net_for(size, device, dt)
        peaks = {}
        for n in (1, 2, 4):
            x = faces(n, size, device).to(net.dtype)
            reset_peak(device)
            base = torch.cuda.memory_allocated(device)
            net(x)
            torch.cuda.synchronize(device)
            peaks[n] = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
            del x
        model = {n: network_memory_bytes(size, resolve_dtype(dt), n) / 2 ** 20 for n in peaks}
        rows.append({"size": size, "dtype": dt, "peak_mib_by_batch": peaks, "model_mib_by_batch": model,
                     "per_face_mib": (peaks[4] - peaks[1]) / 3,
                     "measured_over_model": {n: peaks[n] / model[n] for n in peaks}})
        del net
    return rows


class BackOffWatch(logging.Handler):
    """Collects the out-of-memory back-off's warnings (``gpen.pipeline.batching``) while entered."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    @property
    def fired(self) -> bool:
        return bool(self.messages)

    def emit(self, record: logging.LogRecord) -> None:
        if "out of memory" in record.getMessage():
            self.messages.append(record.getMessage())

    def __enter__(self) -> BackOffWatch:
        logging.getLogger("gpen.pipeline.batching").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("gpen.pipeline.batching").removeHandler(self)


def step_small_card(device: torch.device, smoke: bool, card_gib: float) -> list[dict]:
    import gpen

    if device.type != "cuda":
        return [{"skipped": "needs CUDA"}]
    size, n = (256, 4) if smoke else (2048, 12)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    keep = int(card_gib * 2 ** 30)
    ballast = torch.empty(max(0, free - keep), dtype=torch.uint8, device=device) if free > keep else None
    row: dict = {"size": size, "dtype": "fp16", "faces": n, "free_gib_left": torch.cuda.mem_get_info(device)[0] / 2 ** 30}
    try:
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        restorer = gpen.FaceRestorer(net_for(size, device, "fp16"))
        crops = (faces(n, size, device) + 1) / 2
        row["chunk"] = restorer.default_chunk_size(device)
        t = time.perf_counter()
        with BackOffWatch() as backoff:
            out = restorer.run_network(crops)
        torch.cuda.synchronize(device)
        row.update({"ok": bool(torch.isfinite(out).all()) and not backoff.fired, "backoff": backoff.messages,
                    "seconds": time.perf_counter() - t,
                    "peak_gib_on_card": (torch.cuda.max_memory_allocated(device) - base) / 2 ** 30})
    except torch.cuda.OutOfMemoryError as e:  # torch.OutOfMemoryError is missing from older torch
        row.update({"ok": False, "error": str(e).splitlines()[0]})
    finally:
        del ballast
        torch.cuda.empty_cache()
    return [row]


def step_pipeline(device: torch.device, smoke: bool) -> list[dict]:
    """``python -m bench pipeline`` on this device: a 1080p frame with 4 faces, network vs everything."""
    from bench import pipeline

    rows = []
    for size, dt in ([(256, "fp32")] if smoke else [(512, "fp16"), (2048, "fp16")]):
        args = argparse.Namespace(size=size, faces=4, frames=1, frames_per_chunk=None, restorer="gpen",
                                  device=str(device), dtype=dt, detector="retinaface_resnet50", repeat=3)
        rows += [dict(row, dtype=dt) for row in pipeline.run(args)]
    return rows


def step_profile(device: torch.device, smoke: bool, out_dir: Path | None) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    size, dt, n = (256, "fp32", 1) if smoke else (2048, "fp16", 8)
    net = net_for(size, device, dt)
    x = faces(n, size, device).to(net.dtype)
    net(x)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        net(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=40, max_name_column_width=60)
    if out_dir is not None:
        (out_dir / "device_profile.txt").write_text(table)
    return [{"size": size, "dtype": dt, "batch": n, "top": table.splitlines()[:14]}]


def step_upsample(device: torch.device, smoke: bool, clock: Clock) -> list[dict]:
    """The upsampling convolution as the network runs it (transposed 3x3 stride 2, then the 4x4 blur)
    against one fused transposed 6x6 convolution (the blur folded into the weights: 4x the
    multiply-adds, one pass less over the output). On the 2-core CPU the fused form is 2-3.6x slower."""
    import torch.nn.functional as F

    from gpen.model.network import ModulatedConv2d

    rows = []
    dt = torch.float32 if device.type == "cpu" else torch.float16
    shapes = [(1, 64, 16, 128)] if smoke else [(8, 64, 16, 1024), (8, 128, 32, 512), (8, 256, 64, 256),
                                               (8, 1024, 256, 64)]
    blur = ModulatedConv2d(1, 1, 3, 1, upsample=True).blur.to(device)  # the network's own blur after upsampling
    g = torch.Generator(device=device).manual_seed(2)
    for b, cin, cout, n in shapes:
        x = torch.randn(b, cin, n, n, generator=g, device=device).to(dt).contiguous(memory_format=torch.channels_last)
        w = torch.randn(cin, cout, 3, 3, generator=g, device=device) / (3 * cin ** 0.5)
        taps = F.pad(w.reshape(cin * cout, 1, 3, 3), (3, 3, 3, 3))
        fused_w = F.conv2d(taps, blur.kernel.view(1, 1, 4, 4)).reshape(cin, cout, 6, 6).to(dt)
        w = w.to(dt)
        separate = lambda: blur(F.conv_transpose2d(x, w, stride=2))  # noqa: E731
        fused = lambda: F.conv_transpose2d(x, fused_w, stride=2)[:, :, 2:2 + 2 * n, 2:2 + 2 * n]  # noqa: E731
        diff = (separate().float() - fused().float()).abs().max().item() / separate().float().abs().max().item()
        rows.append({"shape": [b, cin, cout, n], "dtype": str(dt).removeprefix("torch."),
                     "separate_ms": clock.median(separate, repeat=5) * 1e3,
                     "fused_ms": clock.median(fused, repeat=5) * 1e3, "max_rel_diff": diff})
    return rows


def step_compile(device: torch.device, smoke: bool, clock: Clock) -> list[dict]:
    size, dt, n = (256, "fp32", 1) if smoke else (2048, "fp16", 8)
    net = net_for(size, device, dt)
    x = faces(n, size, device).to(net.dtype)
    eager_s = clock.median(lambda: net(x), repeat=3)
    ref = net(x)
    t = time.perf_counter()
    net.compile()
    out = net(x)
    sync(device)
    compile_s = time.perf_counter() - t
    compiled_s = clock.median(lambda: net(x), repeat=3)
    return [{"size": size, "dtype": dt, "batch": n, "eager_ms_per_face": eager_s / n * 1e3,
             "compiled_ms_per_face": compiled_s / n * 1e3, "compile_s": compile_s,
             "psnr_db_vs_eager": image_psnr(out, ref)}]


def step_official(device: torch.device, smoke: bool, clock: Clock, official: str) -> list[dict]:
    """The official FullGenerator (``bench.common.build``) and ours on the same seeded weights and input."""
    rows = []
    for size, dt, batch in ([(256, "fp32", 1)] if smoke else [(512, "fp32", 1), (512, "fp16", 8), (2048, "fp32", 1),
                                                              (2048, "fp16", 1), (2048, "fp16", 8)]):
        try:
            off = build("official", size, device, resolve_dtype(dt), official)
            ours = build("ours", size, device, resolve_dtype(dt), None)
            x = faces(batch, size, device).to(resolve_dtype(dt))
            s_off = clock.median(lambda: off(x), repeat=3)
            s_ours = clock.median(lambda: ours(x), repeat=3)
            rows.append({"size": size, "dtype": dt, "batch": batch, "official_ms_per_face": s_off / batch * 1e3,
                         "ours_ms_per_face": s_ours / batch * 1e3, "speedup": s_off / s_ours,
                         "psnr_db_ours_vs_official": image_psnr(off(x), ours(x))})
        except Exception as e:  # e.g. an official op without float16 support: keep the other rows
            rows.append({"size": size, "dtype": dt, "batch": batch, "error": f"{type(e).__name__}: {e}"[:300]})
        off = ours = None
    return rows


# ---- driver -----------------------------------------------------------------------------------

ESTIMATE_S = {"parity": 25, "precision": 30, "speed": 150, "small_card": 30, "memory": 25, "pipeline": 45,
              "profile": 20, "upsample": 20, "official": 120, "compile": 150}
"""Seconds each step is expected to take on an H100 (not yet measured there: the first lent call
records each step's ``seconds`` in its JSON; 365 s for the default steps). A step is skipped when its
estimate would end past ``--budget-s``; the speed step stops to leave every later step its estimate."""
SPEED_ROW_S = 10.0
"""The longest a speed row is expected to take (a 2048 px batch timed for at least a second, its warm-up included)."""

def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    clock = Clock(device)
    out_dir = Path(args.json).parent if args.json else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    env = {"torch": torch.__version__, "device": str(device), "machine": device_name(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update({"gpu": p.name, "total_gib": p.total_memory / 2 ** 30, "cudnn": torch.backends.cudnn.version(),
                    "conv_tf32": torch.backends.cudnn.allow_tf32, "matmul_tf32": torch.backends.cuda.matmul.allow_tf32})
    print(json.dumps(env), flush=True)
    deadlines = {"speed": math.inf}  # set before each step: the speed step leaves the later steps their time
    steps = [
        ("parity", lambda: step_parity(device, args.smoke)),
        ("precision", lambda: step_precision(device, args.smoke)),
        ("speed", lambda: step_speed(device, args.smoke, clock, deadlines["speed"])),
        ("small_card", lambda: step_small_card(device, args.smoke, args.card_gib)),
        ("memory", lambda: step_memory(device, args.smoke)),
        ("pipeline", lambda: step_pipeline(device, args.smoke)),
        ("profile", lambda: step_profile(device, args.smoke, out_dir)),
        ("upsample", lambda: step_upsample(device, args.smoke, clock)),
    ]
    if args.official:
        steps.append(("official", lambda: step_official(device, args.smoke, clock, args.official)))
    if args.compile:
        steps.append(("compile", lambda: step_compile(device, args.smoke, clock)))
    if getattr(args, "steps", None):
        steps = [s for s in steps if s[0] in args.steps]
    report: dict = {"env": env, "steps": {}, "budget_s": args.budget_s}
    estimates = {name: 0.0 if args.smoke else ESTIMATE_S.get(name, 30.0) for name, _ in steps}
    for i, (name, fn) in enumerate(steps):
        elapsed = time.perf_counter() - started
        later = sum(estimates[n] for n, _ in steps[i + 1:])
        deadlines["speed"] = started + args.budget_s - later - SPEED_ROW_S
        if elapsed + estimates[name] > args.budget_s:
            report["steps"][name] = {"status": "skipped", "reason": f"budget: {elapsed:.0f} s elapsed, "
                                     f"about {estimates[name]:.0f} s needed of {args.budget_s:.0f} s"}
            print(f"== {name}: skipped (budget)", flush=True)
        else:
            run_step(report, name, fn, device)
        if args.json:  # written after every step: a call cut off at its limit still returns what it had
            Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    print_summary(report)
    return report


def run_step(report: dict, name: str, fn, device: torch.device) -> None:
    """Run one step into ``report``; an error is recorded, never raised."""
    t = time.perf_counter()
    try:
        with torch.inference_mode():
            rows = fn()
        report["steps"][name] = {"status": "ok", "seconds": time.perf_counter() - t, "rows": rows}
    except Exception as e:  # report and go on: one broken step must not cost the others' results
        report["steps"][name] = {"status": "error", "error": f"{type(e).__name__}: {e}",
                                 "traceback": traceback.format_exc()[-3000:]}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"== {name} ({time.perf_counter() - t:.1f} s): " + json.dumps(report["steps"][name], default=str),
          flush=True)


def print_summary(report: dict) -> None:
    """The lines that matter, last in the output."""
    print("\nstep | status | summary")
    for name, step in report["steps"].items():
        summary = step.get("error") or step.get("reason") or ""
        rows = step.get("rows") or []
        if name == "speed":
            summary = "; ".join(f"{r['size']} {r['dtype']} b{r['batch']} {r['mode']}{'+at' if r['cudnn_autotune'] else ''}"
                                + (f": skipped" if "skipped" in r else f"({r['faces']}): {r['faces_per_s']:.1f} f/s "
                                   f"{r['peak_mib'] or 0:.0f} MiB") for r in rows)
        elif name == "precision":
            summary = "; ".join(f"{r['size']} {r['dtype']}: {r['psnr_db_vs_fp32']:.1f} dB" for r in rows)
        elif name == "parity":
            summary = "; ".join(f"{r['fixture']} {r['setting']}: {r['max_err_over_std']:.1e}" for r in rows)
        elif rows and name != "profile":
            summary = json.dumps(_rounded(rows), default=str)[:600]
        print(f"{name} | {step['status']} | {summary}")


def _rounded(value):
    """``value`` with floats rounded to 4 significant digits (for the summary lines)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
