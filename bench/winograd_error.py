"""Error of one Winograd convolution in bfloat16, F(4x4, 3x3) against F(2x2, 3x3), next to direct ones.

    python -m bench winograd-error --json bench/results/cpu_winograd_bf16_error.json

For the shapes of the 3x3 layers that ``gpen.model.winograd`` runs (512 px layout: 1024 -> 512 channels
at 16-64 px, 512 -> 256 at 128 px; seeded random activations, weights, modulation and demodulation,
rounded to bfloat16 first, as the network's are), the RMS and largest error against float64, relative
to the output's spread, of: oneDNN's direct convolution in bfloat16 and in float32; Winograd F(4x4) in
float32 (what float32 runs); F(4x4) in bfloat16 and F(2x2) in bfloat16 (what bfloat16 runs,
:func:`gpen.model.winograd.tile`). The ratios to the direct bfloat16 convolution are what chose the tile.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch
import torch.nn.functional as F

from bench.common import cpu_capabilities

SHAPES = ((1024, 512, 16), (1024, 512, 32), (1024, 512, 64), (512, 256, 128))


def add_parser(sub) -> None:
    p = sub.add_parser("winograd-error", help="error of bfloat16 Winograd F(4x4) vs F(2x2) vs direct convolutions")
    p.add_argument("--json", help="write the rows to this JSON file")


@contextlib.contextmanager
def _tile(m: int):
    from gpen.model import winograd

    saved = winograd.tile
    winograd.tile = lambda dtype: m
    try:
        yield
    finally:
        winograd.tile = saved


def run(args: argparse.Namespace) -> list[dict]:
    from gpen.model import winograd
    from gpen.model.workspace import Workspace

    rows, cpu = [], cpu_capabilities()
    for cin, cout, side in SHAPES:
        g = torch.Generator().manual_seed(cin + side)
        bf = torch.bfloat16
        x = torch.randn(1, cin, side, side, generator=g).to(bf).contiguous(memory_format=torch.channels_last)
        w = (torch.randn(cout, cin, 3, 3, generator=g) / (3 * cin ** 0.5)).to(bf)
        scale, gain = (torch.rand(1, cin, generator=g) + 0.5).to(bf), (torch.rand(1, cout, generator=g) + 0.5).to(bf)
        bias = (torch.randn(cout, generator=g) * 0.1).to(bf)
        ref = (F.conv2d(x.double() * scale.double()[:, :, None, None], w.double(), padding=1)
               * gain.double()[:, :, None, None] + bias.double().view(1, -1, 1, 1))

        def direct(dt):
            y = F.conv2d(x.to(dt) * scale.to(dt)[:, :, None, None], w.to(dt), padding=1)
            return y * gain.to(dt)[:, :, None, None] + bias.to(dt).view(1, -1, 1, 1)

        def wino(dt, m):
            with _tile(m), Workspace().session(("e",)) as s:
                out = torch.empty(1, cout, side, side, dtype=dt).contiguous(memory_format=torch.channels_last)
                winograd.conv3x3(x.to(dt), scale.to(dt), winograd.conv_weight(w.to(dt)), out, bias.to(dt), gain.to(dt), s)
            return out

        with torch.inference_mode():
            outs = {"direct bf16": direct(bf), "direct fp32": direct(torch.float32),
                    "winograd F(4x4) fp32": wino(torch.float32, 4), "winograd F(4x4) bf16": wino(bf, 4),
                    "winograd F(2x2) bf16": wino(bf, 2)}
        spread = ref.std().item()
        base = None
        for name, out in outs.items():
            err = out.double() - ref
            rms = err.pow(2).mean().sqrt().item() / spread
            base = rms if base is None else base
            row = {"in_ch": cin, "out_ch": cout, "side": side, "path": name, "rms_error_over_spread": rms,
                   "max_error_over_spread": err.abs().max().item() / spread, "rms_vs_direct_bf16": rms / base,
                   "cpu": cpu}
            rows.append(row)
            print(f"{cin:5d} -> {cout:4d} | {side:4d} px | {name:22s} | rms {rms:.2e} | "
                  f"max {row['max_error_over_spread']:.2e} | {row['rms_vs_direct_bf16']:5.2f}x direct bf16",
                  file=sys.stderr, flush=True)
    return rows
