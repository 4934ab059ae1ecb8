"""Peak memory of one video segment, against the model that sizes segments (``segment_bytes``).

    python -m bench segment-memory --json bench/results/cpu_segment_memory.json
    python -m bench segment-memory --source /tmp/main_checkout   # the same cases on another checkout

Each case runs in a fresh process (so the peak belongs to it alone): a middle segment of a clip
(context frames on both sides) of ``height`` x ``width`` frames with one face per frame (known
landmarks), restored by the identity restorer (the network's working memory is not the segment's
and is bounded by ``gpen/pipeline/memory.py``) at ``upscale``, as the command line restores it:
``restore_window`` from the decoded uint8 frames to the uint8 frames for the encoder, which stay
alive as the encoder's input. The row's ``peak_mib`` is the process's peak resident memory beyond
what it held before the frames were made (Linux ``VmHWM`` after a reset), ``model_mib`` what
:func:`gpen.runs.segments.segment_bytes` predicts, and ``frames`` the segment length the planner
picks (``default``) or the one given.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.common import REPO

# (height, width, upscale, frames per segment: None = the planner's choice)
CASES = [(270, 480, 1, None), (270, 480, 4, None), (270, 480, 4, 64), (1080, 1920, 1, None), (1080, 1920, 4, None)]

_CHILD = r"""
import json, sys
sys.path.insert(0, {repo!r})
sys.path.insert(1, {bench!r})
import numpy as np, torch
from gpen.runtime import tune_cpu_allocator
tune_cpu_allocator()  # as the command line runs
torch.set_num_threads(2)
from gpen.pipeline.restorer import FaceRestorer
from gpen.runs.jobs import RestoreOptions, restore_window
from gpen.runs.segments import plan_segments
from bench.pipeline import start_peak_window, peak_since
h, w, s, length = {height}, {width}, {upscale}, {frames}
options = RestoreOptions(upscale=s, frames_per_segment=length)
if length is None:
    length = options.segments(10_000, h, w)[0].stop
c = options.context_frames()
seg = plan_segments(2 * length + c + 1, length, c)[1]  # context on both sides
restorer = FaceRestorer(lambda x: x, size=512)
side = min(h, w) * 0.6
face = (np.array([[0.34, 0.42], [0.66, 0.42], [0.5, 0.58], [0.37, 0.74], [0.63, 0.74]], np.float32) * side
        + np.array([(w - side) / 2, (h - side) / 2], np.float32))[None]
lms = [face] * (2 * length + c + 1)
base = start_peak_window()
frames = np.empty((seg.context_stop - seg.context_start, h, w, 3), np.uint8)
frames[:] = np.arange(w, dtype=np.uint8)[None, None, :, None]  # a gradient: decoded frames
out, faces = restore_window(restorer, frames, seg, lms, options)
peak = peak_since(base)
try:
    from gpen.runs.segments import segment_bytes
    model = segment_bytes(seg.stop - seg.start, c, h, w, s)
except ImportError:  # a checkout from before the model
    model = None
print(json.dumps({{"frames": seg.stop - seg.start, "context": c, "out_shape": list(out.shape), "faces": faces,
                  "peak_mib": peak / 2 ** 20, "model_mib": None if model is None else model / 2 ** 20}}))
"""


def add_parser(sub) -> None:
    p = sub.add_parser("segment-memory", help="peak memory of one video segment (fresh process per case)")
    p.add_argument("--source", default=str(REPO), help="checkout whose gpen/ runs the cases (default: this one)")
    p.add_argument("--json")


def run(args: argparse.Namespace) -> list[dict]:
    """One row per case."""
    rows = []
    print("frame | upscale | frames | context | peak MiB | model MiB | peak / model")
    for height, width, upscale, frames in CASES:
        code = _CHILD.format(repo=str(Path(args.source).resolve()), bench=str(REPO), height=height, width=width,
                             upscale=upscale, frames=frames)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode:
            print(f"{width}x{height} x{upscale}: failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row.update({"frame": f"{width}x{height}", "upscale": upscale, "planned": frames is None,
                    "source": str(Path(args.source).resolve())})
        if row["model_mib"]:
            row["peak_over_model"] = row["peak_mib"] / row["model_mib"]
        rows.append(row)
        ratio = f"{row['peak_over_model']:.2f}" if row["model_mib"] else "-"
        model = f"{row['model_mib']:.0f}" if row["model_mib"] else "-"
        print(f"{width}x{height} | {upscale} | {row['frames']}{'' if frames else ' (planned)'} | {row['context']} | "
              f"{row['peak_mib']:.0f} | {model} | {ratio}")
    return rows
