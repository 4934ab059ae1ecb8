"""Working memory of the RetinaFace detectors per frame: the numbers behind ``detection_memory_bytes``.

    python -m bench detection-memory --json bench/results/cpu_detection_memory.json

Each case runs in a fresh process (so the peak resident memory belongs to it alone): a randomly
initialised RetinaFace (its memory does not depend on the weight values) detects ``frames``
frames whose longest side is the detector's working size (``max_side`` 1600 px, what a 1080p or
larger frame is scaled to); the working memory is the peak minus the memory before the first
call. The slope over frame counts, divided by the network input's pixels, is the per-pixel cost
:func:`gpen.faces.detect.detection_memory_bytes` uses. (On CUDA, cuDNN workspaces come on top;
no GPU was available to measure them.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.common import REPO

CASES = [("retinaface_resnet50", 1600, 900, f) for f in (1, 2, 4)] + \
        [("retinaface_mobile0.25", 1600, 900, f) for f in (1, 2, 4)]

_CHILD = r"""
import json, resource, sys
import torch
sys.path.insert(0, {repo!r})
from gpen.faces.detect import RETINAFACE_MODELS, RetinaFaceBackend, build_retinaface
torch.manual_seed(0)
torch.set_num_threads(2)
net = build_retinaface(RETINAFACE_MODELS[{model!r}][0], "cpu").eval()
backend = RetinaFaceBackend(net, batch_size={frames})
images = torch.rand({frames}, {height}, {width}, 3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
backend.detect(images, 0.99)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"working_mib": (peak - before) / 1024}}))
"""


def add_parser(sub) -> None:
    p = sub.add_parser("detection-memory", help="working memory of RetinaFace per frame (fresh process per case)")
    p.add_argument("--json")


def run(args: argparse.Namespace) -> list[dict]:
    """One row per (model, frame size, frames), then a fitted row per model."""
    rows = []
    for model, width, height, frames in CASES:
        code = _CHILD.format(repo=str(REPO), model=model, frames=frames, height=height, width=width)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        working = json.loads(out.stdout.strip().splitlines()[-1])["working_mib"]
        rows.append({"model": model, "input": f"{width}x{height}", "frames": frames, "working_mib": working})
        print(f"{model} | {width}x{height} | {frames} frame(s) | working {working:.0f} MiB")
    from gpen.faces.detect import RETINAFACE_MODELS, build_retinaface

    for model in sorted({r["model"] for r in rows}):
        values = sum(t.numel() for t in build_retinaface(RETINAFACE_MODELS[model][0], "cpu").state_dict().values())
        pts = [(r["frames"], r["working_mib"]) for r in rows if r["model"] == model]
        n = len(pts)
        mx = sum(p[0] for p in pts) / n
        my = sum(p[1] for p in pts) / n
        slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        per_pixel = slope * 2 ** 20 / (1600 * 900)
        rows.append({"model": model, "fit": "working MiB = base + per_frame * frames", "per_frame_mib": slope,
                     "base_mib": my - slope * mx, "bytes_per_input_pixel": per_pixel, "weight_values": values,
                     "weights_mib_fp32": values * 4 / 2 ** 20})
        print(f"{model}: {slope:.0f} MiB per 1600x900 frame ({per_pixel:.0f} B per network-input pixel), "
              f"base {my - slope * mx:.0f} MiB, weights {values * 4 / 2 ** 20:.1f} MiB")
    return rows
