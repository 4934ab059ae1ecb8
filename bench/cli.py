"""``python -m bench``: speed and memory of the network, the pipeline, ONNX files and a GPU check.

    python -m bench network --sizes 512 2048 --batches 1 8 --dtypes fp32
    python -m bench network --official /path/to/GPEN          # time the official FullGenerator too
    python -m bench pipeline --size 512 --faces 4              # whole face pipeline on a 1080p frame
    python -m bench onnx --size 512                            # an ONNX file: onnxruntime vs gpen.load_model
    python -m bench layers --size 512                          # each generator layer with every CPU path
    python -m bench matmul                                     # float32 products: torch.mm (MKL) vs oneDNN
    python -m bench device --json out/device_check.json       # one call on a lent GPU (bench/device_check.py)
    python -m bench cuda-trace                                # the CUDA forward's peak memory, traced without a GPU
    python -m bench reference                                 # JPEG noise vs face swaps (reference_threshold)
    python -m bench float-range                               # resamplers' overshoot of 0..1 (FLOAT_RANGE_LIMIT)
    python -m bench detection-memory                          # RetinaFace working memory per frame
    python -m bench segment-memory                            # one video segment's peak against its model
    python -m bench precision                                 # PSNR of bfloat16 against float32 (gpen.model.precision)
    python -m bench winograd-error                            # one bfloat16 Winograd layer's error, F(4x4) vs F(2x2)
    python -m bench ray --workers 1 2                          # the Ray Data runner: images/s per worker count
    python -m bench temporal                                   # flicker and lag of temporal_consistency
    python -m bench shots                                     # cut scores: real motion vs cuts (shot boundaries)
    python -m bench gaps                                      # filled faces: there vs gone (gap filling)

Each prints a table and, with ``--json``, writes its rows. Timing is :func:`bench.common.measure`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench import (cuda_trace, detection_memory, device_check, float_range, gaps, layers, matmul, network, onnx_bench,
                   pipeline, precision, ray_bench, reference_threshold, segment_memory, shots, temporal, winograd_error)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one benchmark."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    network.add_parser(sub)
    layers.add_parser(sub)
    matmul.add_parser(sub)
    pipeline.add_parser(sub)
    onnx_bench.add_parser(sub)
    device_check.add_parser(sub)
    cuda_trace.add_parser(sub)
    reference_threshold.add_parser(sub)
    precision.add_parser(sub)
    detection_memory.add_parser(sub)
    segment_memory.add_parser(sub)
    float_range.add_parser(sub)
    ray_bench.add_parser(sub)
    temporal.add_parser(sub)
    shots.add_parser(sub)
    gaps.add_parser(sub)
    winograd_error.add_parser(sub)
    args = p.parse_args(argv)
    if args.cmd == "_one":
        print(json.dumps(network.run_one(args)))
        return 0
    if args.cmd == "_onnx_one":
        print(json.dumps(onnx_bench.run_one(args)))
        return 0
    if args.cmd == "pipeline":  # in-process runs get the command line's allocator setting
        from gpen.runtime import tune_cpu_allocator

        tune_cpu_allocator()
    if args.cmd == "device":
        device_check.run(args)
        return 0
    if args.cmd == "ray":  # its rows and the cluster facts, in one file
        ray_bench.run(args)
        return 0
    if args.cmd == "temporal":  # flicker, lag and gate tables, in one file
        temporal.run(args)
        return 0
    if args.cmd == "pipeline":
        rows = pipeline.run(args)
    elif args.cmd == "onnx":
        rows = onnx_bench.run(args)
    elif args.cmd == "layers":
        rows = layers.run(args)
    elif args.cmd == "matmul":
        rows = matmul.run(args)
    elif args.cmd == "precision":
        rows = precision.run(args)
    elif args.cmd == "winograd-error":
        rows = winograd_error.run(args)
    elif args.cmd == "reference":
        rows = reference_threshold.run(args)
    elif args.cmd == "float-range":
        rows = float_range.run(args)
    elif args.cmd == "cuda-trace":
        rows = cuda_trace.run(args)
    elif args.cmd == "gaps":
        rows = gaps.run(args)
    elif args.cmd == "shots":
        rows = shots.run(args)
    elif args.cmd == "detection-memory":
        rows = detection_memory.run(args)
    elif args.cmd == "segment-memory":
        rows = segment_memory.run(args)
    else:
        rows = network.run(args)
    if getattr(args, "json", None):
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))
    if args.cmd == "network":
        print("\n" + network.markdown_table(rows))
        if args.markdown:
            Path(args.markdown).write_text(network.markdown_table(rows) + "\n")
    return 0
