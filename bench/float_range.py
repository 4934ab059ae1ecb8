"""How far above 1.0 do 0..1 images go after the resampling a host applies? Sets FLOAT_RANGE_LIMIT.

    python -m bench float-range --json bench/results/float_range_overshoot.json

:func:`gpen.pipeline.frames.check_images` takes float pixels above
:data:`gpen.pipeline.frames.FLOAT_RANGE_LIMIT` for 0..255 values given as float. Interpolating
resamplers ring past 0..1 at sharp edges, so the limit must sit above the largest value they
produce from 0..1 input. Measured here: the astronaut (``skimage.data.astronaut()``), the Solvay
photograph (``assets/solvay_conference_1927.png``) and a one-pixel black/white checkerboard (the
worst case for ringing), each resized 0.5x, 1.5x, 2x and 4x by torch's bicubic (with and without
antialiasing) and OpenCV's cubic and Lanczos-4, all without clamping.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.common import REPO


def add_parser(sub) -> None:
    p = sub.add_parser("float-range", help="largest value resamplers make from 0..1 images (FLOAT_RANGE_LIMIT)")
    p.add_argument("--json")


def _images() -> dict[str, np.ndarray]:
    import cv2
    from skimage import data

    solvay = cv2.imread(str(REPO / "assets" / "solvay_conference_1927.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    checker = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, axis=2)
    return {"astronaut": data.astronaut(), "solvay": solvay, "checkerboard": checker}


def run(args: argparse.Namespace) -> list[dict]:
    """Resize each image with each resampler and record the largest value; rows for ``--json``."""
    import cv2
    import torch.nn.functional as F

    rows = []
    for name, rgb in _images().items():
        img = rgb.astype(np.float32) / 255.0
        t = torch.from_numpy(img).permute(2, 0, 1)[None]
        h, w = img.shape[:2]
        for scale in (0.5, 1.5, 2.0, 4.0):
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            outs = {
                "torch bicubic": F.interpolate(t, size=size, mode="bicubic", align_corners=False),
                "torch bicubic antialias": F.interpolate(t, size=size, mode="bicubic", antialias=True,
                                                         align_corners=False),
                "opencv cubic": torch.from_numpy(cv2.resize(img, size[::-1], interpolation=cv2.INTER_CUBIC)),
                "opencv lanczos4": torch.from_numpy(cv2.resize(img, size[::-1], interpolation=cv2.INTER_LANCZOS4)),
            }
            for method, out in outs.items():
                rows.append({"image": name, "scale": scale, "method": method, "max": float(out.max()),
                             "min": float(out.min())})
                print(f"{name:12s} x{scale:<4g} {method:24s} max {rows[-1]['max']:.4f} min {rows[-1]['min']:.4f}")
    print(f"largest value: {max(r['max'] for r in rows):.4f}")
    return rows
