"""What every benchmark shares: the models it builds, the one timing helper, device facts.

Timing (:func:`measure`): ``warmup`` untimed calls, then at least ``repeat`` timed ones (more while
their total is under ``min_total_s``, up to ``max_repeat``); on CUDA each call is timed with CUDA
events around it, elsewhere with the wall clock. Callers report the best (``min``) or the
``median`` of the returned list, and say which.

Fields that changed meaning when the three former timing loops were merged into this one:
``python -m bench pipeline``'s and the measured-peak's best-of now exclude the warm-up call (the
old loop counted it; it is the slowest call, so best-of values are unchanged in practice), and
``python -m bench network`` times CUDA calls with events instead of the wall clock (no GPU
results existed before the change).
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Official implementation, fp32, one face, 2-core AMD EPYC, torch 2.14 (shared/README.md).
REFERENCE_SECONDS_PER_FACE = {512: 5.4, 1024: 10.0, 2048: 19.3}
SIZE_TO_MODEL = {256: "GPEN-BFR-256", 512: "GPEN-BFR-512", 1024: "GPEN-BFR-1024", 2048: "GPEN-BFR-2048"}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 1, repeat: int = 3,
            min_total_s: float = 0.0, max_repeat: int = 50) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls (see the module docstring)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    while len(times) < repeat or (sum(times) < min_total_s and len(times) < max_repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return times


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model with its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores)"


def cpu_capabilities() -> dict:
    """The CPU model, vendor, its bfloat16-related flags and what ``dtype="auto"`` picks on it."""
    from gpen.cpuinfo import bf16_matrix_units, cpu_facts
    from gpen.model.precision import auto_dtype_name

    facts = cpu_facts()
    wanted = ("avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512_vnni", "avx512f", "avx2", "bf16")
    return {"model": facts.model, "vendor": facts.vendor, "cores": os.cpu_count(),
            "bf16_flags": sorted(f for f in facts.flags if f in wanted),
            "bf16_matrix_units": bf16_matrix_units(), "auto_dtype": auto_dtype_name("cpu")}


def aligned_face(size: int) -> torch.Tensor:
    """skimage's astronaut aligned to the GPEN template at ``size`` px (its MTCNN landmarks from
    ``tests/fixtures/geometry/landmarks.json``), (1, 3, size, size) in -1..1: a real face to compare
    precisions on."""
    import json

    import numpy as np
    from skimage import data

    from gpen.faces.align import estimate_similarity, template_points, warp_affine

    marks = json.loads((REPO / "tests" / "fixtures" / "geometry" / "landmarks.json").read_text())
    points = np.asarray(marks["images"]["skimage.data.astronaut"]["faces"][0]["landmarks5"], np.float64)
    image = torch.from_numpy(data.astronaut().astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    m = estimate_similarity(points, template_points("gpen", size))
    return warp_affine(image, torch.from_numpy(m)[None].float(), None, size) * 2 - 1


def image_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two network outputs (-1..1) as images (clamped, 0..1)."""
    a = (a.double().clamp(-1, 1) + 1) / 2
    b = (b.double().clamp(-1, 1) + 1) / 2
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(torch.log10(torch.tensor(1 / mse)))


def measured_peak_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    """Best-of-``repeat`` large matrix product throughput: this machine's practical peak (on x86 CPUs
    the better of torch's MKL and oneDNN, which differ by 2x on AMD processors: ``python -m bench matmul``)."""
    from gpen.model import cpu_matmul

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    products = [lambda: torch.mm(a, b)]
    if device.type == "cpu" and dtype == torch.float32 and cpu_matmul.onednn_works():
        def onednn():
            with cpu_matmul.engine("onednn"):
                return cpu_matmul.linear(a, b.t())
        products.append(onednn)
    return max(2 * n ** 3 / min(measure(f, device, warmup=1, repeat=repeat)) / 1e9 for f in products)


def flops_per_face(size: int) -> float:
    """FLOPs of one forward pass of our network at ``size`` (torch's flop counter, on meta tensors)."""
    from torch.utils.flop_counter import FlopCounterMode

    from gpen.model.layouts import released_layout
    from gpen.model.network import GPEN

    with torch.device("meta"):
        net = GPEN(released_layout(SIZE_TO_MODEL[size])["config"]).requires_grad_(False)
        x = torch.empty(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter:
        net(x)
    return float(counter.get_total_flops())


def build(impl: str, size: int, device: torch.device, dtype: torch.dtype, official_dir: str | None, seed: int = 0):
    """``impl`` ("ours" or "official") at ``size`` with seeded weights of the released layout."""
    from gpen.model.layouts import released_layout, seeded_state_dict

    state = seeded_state_dict(SIZE_TO_MODEL[size], seed=seed)
    if impl == "ours":
        import gpen

        return gpen.load_model(state, device=device, dtype=dtype)
    # The official FullGenerator, imported from a checkout the user points to (never shipped here).
    sys.path.insert(0, str(Path(official_dir) / "face_model"))
    from gpen_model import FullGenerator  # type: ignore[import-not-found]

    cfg = released_layout(SIZE_TO_MODEL[size])["config"]
    net = FullGenerator(size, cfg.style_dim, cfg.n_mlp, int(cfg.channel_multiplier), narrow=cfg.narrow,
                        device=str(device))
    net.load_state_dict(state)
    net = net.to(device=device, dtype=dtype).eval()
    return lambda x: net(x)[0]
