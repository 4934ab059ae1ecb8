"""Whole-pipeline benchmark (detection/alignment, network, paste-back) on video-sized frames."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("pipeline", help="time the whole face pipeline on synthetic 1080p frames")
    p.add_argument("--size", type=int, default=512)


def run(args: argparse.Namespace) -> list[dict]:
    raise SystemExit("the pipeline benchmark needs gpen.FaceRestorer (not built yet)")
