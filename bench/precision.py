"""How far bfloat16 is from float32: the PSNR behind ``gpen.model.precision`` and tests/test_precision.py.

    python -m bench precision --sizes 256 512 1024 2048 --json bench/results/cpu_bf16_precision_epyc_zen4.json

For each reference fixture (``tests/fixtures/reference``: official float32 outputs, reduced widths)
and each released layout (seeded weights) on a real face (skimage's astronaut aligned to the GPEN
template, ``bench.common.aligned_face``): the image PSNR (0..1) of bfloat16 as ``dtype="bf16"``
builds it (float32 kept where :mod:`gpen.model.precision` says) and of bfloat16 everywhere
(``precision.MIXED_BFLOAT16 = False``) against float32, and for the fixtures against the official
output too (its subsampled pixels). No timing.
"""

from __future__ import annotations

import argparse
import gc

import torch

from bench.common import REPO, SIZE_TO_MODEL, aligned_face, cpu_capabilities, image_psnr


def add_parser(sub) -> None:
    p = sub.add_parser("precision", help="PSNR of bfloat16 (mixed and everywhere) against float32")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--json", help="write the rows to this JSON file")


def _variants(source, x: torch.Tensor) -> dict[str, torch.Tensor]:
    import gpen
    from gpen.model import precision

    outs = {}
    for name, mixed, dtype in (("fp32", True, torch.float32), ("bf16", True, torch.bfloat16),
                               ("bf16_everywhere", False, torch.bfloat16)):
        saved, precision.MIXED_BFLOAT16 = precision.MIXED_BFLOAT16, mixed
        try:
            net = gpen.load_model(source, dtype=dtype)
        finally:
            precision.MIXED_BFLOAT16 = saved
        with torch.inference_mode():
            outs[name] = net(x).float()
        outs[name + "_float32_share"] = precision.float32_share(net)
        del net
        gc.collect()
    return outs


def run(args: argparse.Namespace) -> list[dict]:
    import json
    import sys

    import cv2
    import numpy as np

    from gpen.model.layouts import seeded_state_dict

    rows = []
    cpu = cpu_capabilities()
    folder = REPO / "tests" / "fixtures" / "reference"
    for meta_file in sorted(folder.glob("fixture_*.json")):
        meta = json.loads(meta_file.read_text())
        tag = meta["tag"]
        inputs = []
        for b in range(meta["batch"]):
            bgr = cv2.imread(str(folder / f"fixture_{tag}_input{b}.png"), cv2.IMREAD_COLOR)
            inputs.append((torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1).float() / 255 - 0.5) / 0.5)
        expected = torch.from_numpy(np.load(folder / f"fixture_{tag}_expected_sub.npy"))
        outs = _variants(str(folder / f"fixture_{tag}.pth"), torch.stack(inputs))
        k = meta["subsample_step"]
        row = {"case": f"fixture {tag}", "size": meta["size"], "cpu": cpu}
        for v in ("fp32", "bf16", "bf16_everywhere"):
            row[f"{v}_psnr_db_vs_official"] = image_psnr(outs[v][:, :, ::k, ::k], expected)
            if v != "fp32":
                row[f"{v}_psnr_db_vs_fp32"] = image_psnr(outs[v], outs["fp32"])
        row["bf16_float32_parameter_share"] = outs["bf16_float32_share"]
        rows.append(row)
        print(row, flush=True, file=sys.stderr)
    for size in args.sizes:
        outs = _variants(seeded_state_dict(SIZE_TO_MODEL[size], seed=0), aligned_face(size))
        row = {"case": f"{SIZE_TO_MODEL[size]} seeded, aligned astronaut", "size": size, "cpu": cpu,
               "bf16_psnr_db_vs_fp32": image_psnr(outs["bf16"], outs["fp32"]),
               "bf16_everywhere_psnr_db_vs_fp32": image_psnr(outs["bf16_everywhere"], outs["fp32"]),
               "bf16_float32_parameter_share": outs["bf16_float32_share"]}
        rows.append(row)
        print(row, flush=True, file=sys.stderr)
    return rows
