"""Each styled convolution of a released layout, timed with every CPU path the network has for it.

    python -m bench layers --size 512 --json bench/results/cpu_layers_512.json
    python -m bench layers --size 2048 --dtype bf16 --json bench/results/cpu_layers_2048_bf16.json

For every layer of the generator (seeded weights, random input of the layer's shape) the layer runs
as the network runs it (``StyledConv.forward`` with a workspace: convolution, demodulation, bias,
concatenated feature, leaky ReLU) with each path forced in turn: 3x3 layers ``direct`` (oneDNN,
into a kept buffer) or ``winograd`` (``gpen.model.winograd``); upsampling layers ``direct``
(oneDNN's transposed convolution, one call), ``banded`` (the same in row bands, each blurred at
once: ``cpu_conv.upsample_blur_into``; where the layer's activations outnumber its weights) or
``matrix product`` (``gpen.model.cpu_conv``), each then blurred. The paths alternate over ``--rounds`` rounds; rows give the best and the median call and
which path the network's thresholds pick (``chosen``), so the thresholds can be checked on a machine.
``--dtype bf16`` builds the network as ``dtype="bf16"`` does (``gpen.model.precision``: its small layers
stay float32) and runs each layer in its own dtype. ``--finish halves`` writes each half of every
concatenation by itself even where ``gpen.model.layers.SHORT_RUN_BYTES`` says contiguous passes pay
(the before of that threshold).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics

import torch

from bench.common import SIZE_TO_MODEL, cpu_capabilities, device_name, measure


def add_parser(sub) -> None:
    p = sub.add_parser("layers", help="time each generator layer with every CPU path")
    p.add_argument("--size", type=int, default=512, choices=[256, 512, 1024, 2048])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--finish", default="auto", choices=["auto", "halves"],
                   help="halves: never finish a concatenation in contiguous passes (SHORT_RUN_BYTES = 0)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", help="write the rows to this JSON file")


@contextlib.contextmanager
def forced(path: str):
    """Force one CPU path on for every layer it applies to (and the alternative off)."""
    import gpen.model.network as network
    from gpen.model import winograd

    saved = (winograd.MIN_CHANNELS, winograd.MIN_SIDE, winograd.BF16_MAX_SIDE, network.GEMM_TRANSPOSED_MAX_SIDE,
             network.BANDED_UPSAMPLE)
    if path == "winograd":
        winograd.MIN_CHANNELS, winograd.MIN_SIDE, winograd.BF16_MAX_SIDE = 1, 4, 10 ** 9
    elif path == "direct":
        winograd.MIN_CHANNELS, network.GEMM_TRANSPOSED_MAX_SIDE, network.BANDED_UPSAMPLE = 10 ** 9, 0, False
    elif path == "banded":
        network.GEMM_TRANSPOSED_MAX_SIDE, network.BANDED_UPSAMPLE = 0, True
    elif path == "matrix product":
        network.GEMM_TRANSPOSED_MAX_SIDE = 10 ** 9
    try:
        yield
    finally:
        (winograd.MIN_CHANNELS, winograd.MIN_SIDE, winograd.BF16_MAX_SIDE, network.GEMM_TRANSPOSED_MAX_SIDE,
         network.BANDED_UPSAMPLE) = saved


def banded_applies(conv, x: torch.Tensor) -> bool:
    """Whether the network would band this upsampling layer's transposed convolution (its
    activations outnumber its weights: one convolution per image)."""
    return conv.conv.weight[0].numel() < x[0].numel()


def chosen_path(conv, x: torch.Tensor) -> str:
    """The path the network's thresholds pick for ``conv`` on ``x``."""
    import gpen.model.network as network
    from gpen.model import winograd

    if conv.conv.upsample:
        if max(x.shape[2:]) <= network.GEMM_TRANSPOSED_MAX_SIDE:
            return "matrix product"
        return "banded" if network.BANDED_UPSAMPLE and banded_applies(conv, x) else "direct"
    return "winograd" if winograd.pays(conv.conv.in_ch, conv.conv.out_ch, x) else "direct"


def run(args: argparse.Namespace) -> list[dict]:
    import gpen
    from gpen.model import layers as network_layers
    from gpen.model.layouts import seeded_state_dict
    from gpen.model.workspace import Workspace

    if args.finish == "halves":
        network_layers.SHORT_RUN_BYTES = 0
    device = torch.device("cpu")
    net = gpen.load_model(seeded_state_dict(SIZE_TO_MODEL[args.size], seed=0), dtype=args.dtype)
    gen, ch, b = net.generator, net.config.channels, args.batch
    g = torch.Generator().manual_seed(0)
    style = torch.randn(b, net.config.style_dim, generator=g)
    layers = [("conv1", gen.conv1, ch[4], 4)]
    for j in range(len(gen.to_rgbs)):
        r = 2 ** (j + 3)
        layers += [(f"convs.{2 * j}", gen.convs[2 * j], 2 * ch[r // 2], r // 2), (f"convs.{2 * j + 1}", gen.convs[2 * j + 1],
                                                                                 2 * ch[r], r)]
    rows, cpu = [], cpu_capabilities()
    print(f"{'layer':9s} | {'in -> out':12s} | side | path           | best ms | median | chosen")
    for name, conv, cin, side in layers:
        out_side = 2 * side if conv.conv.upsample else side
        dt = conv.conv.weight.dtype
        x = (torch.randn(b, cin, side, side, generator=g) * 0.5).to(dt).contiguous(memory_format=torch.channels_last)
        feature = torch.randn(b, conv.conv.out_ch, out_side, out_side, generator=g).to(dt).contiguous(
            memory_format=torch.channels_last)
        paths = ["direct", "matrix product"] if conv.conv.upsample else ["direct", "winograd"]
        if conv.conv.upsample and banded_applies(conv, x):
            paths.insert(1, "banded")
        if conv.conv.upsample and side < 4 or not conv.conv.upsample and side % 4:
            paths = ["direct"]
        ws = Workspace()
        times: dict[str, list[float]] = {p: [] for p in paths}

        def call(path):
            with forced(path), ws.session(("layer", path)) as s:
                return conv(x, style, feature, ws=s)

        with torch.inference_mode():
            outs = {p: call(p).clone() for p in paths}
            for r in range(args.rounds):
                for p in paths:
                    times[p] += measure(lambda: call(p), device, warmup=1 if r == 0 else 0, repeat=args.repeat)
        ref = outs["direct"]
        pick = chosen_path(conv, x)
        for p in paths:
            row = {"device": device_name(device), "size": args.size, "dtype": args.dtype, "finish": args.finish,
                   "layer_dtype": str(dt).removeprefix("torch."), "layer": name, "in_ch": cin,
                   "out_ch": conv.conv.out_ch, "side": side, "upsample": conv.conv.upsample, "batch": b, "path": p,
                   "ms": min(times[p]) * 1e3, "median_ms": statistics.median(times[p]) * 1e3,
                   "seconds_all": times[p], "chosen": p == pick, "threads": torch.get_num_threads(),
                   "max_diff_vs_direct_over_std": ((outs[p] - ref).float().abs().max() / ref.float().std()).item(),
                   "load_average": os.getloadavg(), "cpu": cpu}
            rows.append(row)
            print(f"{name:9s} | {cin:5d} -> {row['out_ch']:4d} | {side:4d} | {p:14s} | {row['ms']:7.1f} | "
                  f"{row['median_ms']:6.1f} | {'*' if row['chosen'] else ''}", flush=True)
    return rows
