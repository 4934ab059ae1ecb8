"""Whole-pipeline benchmark: a 1920x1080 frame with several faces, and long frame batches.

    python -m bench pipeline --size 512 --faces 4            # one frame: pipeline vs network time
    python -m bench pipeline --frames 32 --faces 1 --restorer identity  # memory of a video batch
    python -m bench pipeline --restorer identity --upscale 2   # the cost of a 2x output (background + paste)

In the frames mode the row's ``peak_beyond_input_ratio`` is the process's peak resident memory
during ``FaceRestorer.restore`` beyond what it held before (the input frames), divided by the input's
size: the output (1x, or upscale^2 x) and the blend masks (1/3x for RGB frames) are part of it.

Faces are the astronaut's face (scikit-image) pasted at several places and scales, with known
landmarks, so no detector weights are needed for alignment; detection is timed separately with a
randomly initialised RetinaFace (its speed does not depend on the weight values; with threshold 1.0,
so that the random scores send no boxes to NMS).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import device_name, measure


def add_parser(sub) -> None:
    p = sub.add_parser("pipeline", help="time the whole face pipeline on synthetic 1080p frames")
    p.add_argument("--size", type=int, default=512, choices=[256, 512, 1024, 2048])
    p.add_argument("--faces", type=int, default=4)
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--frames-per-chunk", type=int, default=None)
    p.add_argument("--restorer", default="gpen", choices=["gpen", "identity"],
                   help="identity: skip the network (to measure the rest, e.g. memory over many frames)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--detector", default="retinaface_resnet50", help="detector to time (random weights)")
    p.add_argument("--upscale", type=int, default=1, choices=[1, 2, 3, 4], help="output scale of the restore")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json")


def synthetic_frame(faces: int, height: int = 1080, width: int = 1920) -> tuple[torch.Tensor, np.ndarray]:
    """A grey frame with ``faces`` copies of the astronaut's face; returns (1, H, W, 3) and landmarks."""
    from skimage import data

    src = torch.from_numpy(data.astronaut().astype(np.float32) / 255.0)  # 512 x 512
    lm = np.array([[191.0, 130.0], [251.0, 122.0], [226.0, 168.0], [203.0, 201.0], [250.0, 196.0]], np.float32)
    frame = torch.full((height, width, 3), 0.5)
    marks = []
    for k in range(faces):
        side = 360 - 40 * (k % 4)  # different face sizes
        x0 = 40 + k * (width - 400) // max(1, faces - 1) if faces > 1 else width // 2 - side // 2
        y0 = 100 + (k % 2) * 300
        patch = F.interpolate(src.permute(2, 0, 1)[None], size=(side, side), mode="bilinear", antialias=True,
                              align_corners=False)[0].permute(1, 2, 0)
        frame[y0:y0 + side, x0:x0 + side] = patch
        marks.append(lm * side / 512 + np.array([x0, y0], np.float32))
    return frame[None], np.stack(marks)


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
PEAK_MEASURE = "VmHWM after reset" if _CLEAR_REFS.exists() else "ru_maxrss (lower bound)"


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def start_peak_window() -> int:
    """Resident bytes now, after resetting the kernel's peak counter (Linux: ``clear_refs`` 5), so that
    :func:`peak_since` sees the peak of what runs next only; elsewhere the process peak so far."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass
    now = _status_kib("VmRSS")
    return (now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def peak_since(base: int) -> int:
    """Peak resident bytes beyond ``base`` since :func:`start_peak_window`."""
    hwm = _status_kib("VmHWM")
    peak = (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return max(0, peak - base)


def timed(fn, device: torch.device, repeat: int) -> float:
    """Best of ``repeat`` calls after one warm-up call (:func:`bench.common.measure`)."""
    return min(measure(fn, device, warmup=1, repeat=repeat))


def random_detector(model: str, device: torch.device):
    """RetinaFace with random weights: the real network's speed without its weights file."""
    from gpen.faces.detect import RETINAFACE_MODELS, FaceDetector, RetinaFaceBackend, build_retinaface

    torch.manual_seed(0)
    net = build_retinaface(RETINAFACE_MODELS[model][0], device).eval()
    return FaceDetector(backend=RetinaFaceBackend(net))


def run(args: argparse.Namespace) -> list[dict]:
    import gpen
    from gpen.model.layouts import seeded_state_dict

    device = torch.device(args.device)
    name = f"GPEN-BFR-{args.size}"
    if args.restorer == "gpen":
        net = gpen.load_model(seeded_state_dict(name), device=device, dtype=args.dtype)
        restorer = gpen.FaceRestorer(net)
    else:
        restorer = gpen.FaceRestorer(lambda x: x, size=args.size, device=device)
    frame, marks = synthetic_frame(args.faces)
    upscale = getattr(args, "upscale", 1)  # callers that build their own arguments (bench device) have none
    rows = []
    if args.frames == 1:
        crops = restorer.restore(frame, [marks], keep_crops="aligned").crops.permute(0, 3, 1, 2).to(device)
        t_net = timed(lambda: restorer.run_network(crops, chunk_size=args.faces), device, args.repeat)
        t_pipe = timed(lambda: restorer.restore(frame, [marks], chunk_size=args.faces, keep_crops="none",
                                                upscale=upscale), device, args.repeat)
        try:
            detector = random_detector(args.detector, device)
            # threshold 1.0 keeps no box: random weights would send thousands of "faces" to the box
            # decoding and NMS, which real weights never do; what is timed is the network and its decoding
            t_det, skipped = timed(lambda: detector.detect(frame.to(device), threshold=1.0), device, args.repeat), None
        except ImportError as e:  # no facexlib here: the timings taken so far still count
            t_det, skipped = 0.0, f"detection not timed: {e}"
        row = {"device": str(device), "machine": device_name(device), "size": args.size, "faces": args.faces,
               "detector": args.detector, "restorer": args.restorer, "frame": "1920x1080",
               "upscale": upscale,
               "network_s": t_net, "pipeline_with_landmarks_s": t_pipe, "detection_s": t_det if skipped is None else None,
               "pipeline_s": t_pipe + t_det, "ratio_to_network": (t_pipe + t_det) / t_net}
        if skipped:
            row["detection_skipped"] = skipped
        print("device | size | faces | network s | align+restore+paste s | detection s | total / network")
        print(f"{row['device']} | {args.size} | {args.faces} | {t_net:.2f} | {t_pipe:.2f} | {t_det:.2f} | "
              f"{row['ratio_to_network']:.2f}")
        rows.append(row)
    else:
        frames = frame.repeat(args.frames, 1, 1, 1)
        input_bytes = frames.numel() * frames.element_size()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        base = start_peak_window()
        t = time.perf_counter()
        res = restorer.restore(frames, [marks] * args.frames, keep_crops="none",
                               frames_per_chunk=args.frames_per_chunk, upscale=upscale)
        t = time.perf_counter() - t
        beyond = peak_since(base)
        row = {"device": str(device), "machine": device_name(device), "size": args.size, "frames": args.frames,
               "frame": "1920x1080", "faces_per_frame": args.faces, "faces": len(res.faces), "restorer": args.restorer,
               "upscale": upscale,
               "seconds": t, "input_mib": input_bytes / 2 ** 20, "peak_beyond_input_mib": beyond / 2 ** 20,
               "peak_beyond_input_ratio": beyond / input_bytes,
               "output_and_masks_mib": (res.images.numel() * res.images.element_size()
                                        + res.masks.numel() * res.masks.element_size()) / 2 ** 20,
               "peak_measure": PEAK_MEASURE}
        row["working_mib"] = row["peak_beyond_input_mib"] - row["output_and_masks_mib"]
        if device.type == "cuda":
            row["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        print("device | frames | faces | s | s/frame | input MiB | peak beyond input MiB | / input | "
              "of it output+masks MiB | working MiB")
        print(f"{row['device']} | {args.frames} | {row['faces']} | {t:.1f} | {t / args.frames:.3f} | "
              f"{row['input_mib']:.0f} | {row['peak_beyond_input_mib']:.0f} | {row['peak_beyond_input_ratio']:.2f} | "
              f"{row['output_and_masks_mib']:.0f} | {row['working_mib']:.0f}")
        rows.append(row)
    return rows
