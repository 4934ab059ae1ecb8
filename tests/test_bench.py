"""bench/ helpers: the one-call device check (bench/device_check.py) runs every step, here on the
CPU, small; the Ray bench reads start-up, first image and steady rate from per-image timings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def test_device_check_smoke_on_cpu(tmp_path):
    pytest.importorskip("skimage")
    from bench import device_check

    out = tmp_path / "device_check.json"
    args = argparse.Namespace(device="cpu", smoke=True, budget_s=600.0, card_gib=7.5, compile=False,
                              official=None, json=str(out))
    device_check.run(args)
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert list(steps) == ["parity", "precision", "speed", "small_card", "memory", "pipeline", "profile", "upsample"]
    assert all(s["status"] == "ok" for s in steps.values()), {k: s.get("error") for k, s in steps.items()}
    assert all(r["ok"] for r in steps["parity"]["rows"])
    assert all(r["finite"] and r["psnr_db_vs_fp32"] >= 35 for r in steps["precision"]["rows"])
    speed = {r["batch"]: r for r in steps["speed"]["rows"]}
    from gpen.pipeline.memory import default_chunk_size

    assert speed["auto"]["faces"] == default_chunk_size(torch.device("cpu"), 256)  # the CPU's measured batch
    assert all(r["faces_per_s"] > 0 for r in speed.values())
    pipeline = steps["pipeline"]["rows"][0]
    assert pipeline["ratio_to_network"] >= 1.0 and pipeline["detection_s"] > 0
    assert (tmp_path / "device_profile.txt").read_text().count("\n") > 5
    # the fused upsampling variant it times computes the same as the network's upsampling
    assert all(r["max_rel_diff"] < 1e-5 for r in steps["upsample"]["rows"])


def test_device_check_skips_steps_past_its_budget(tmp_path):
    from bench import device_check

    out = tmp_path / "device_check.json"
    args = argparse.Namespace(device="cpu", smoke=True, budget_s=-1.0, card_gib=7.5, compile=False,
                              official=None, json=str(out))
    device_check.run(args)
    steps = json.loads(out.read_text())["steps"]
    assert {s["status"] for s in steps.values()} == {"skipped"}


def test_ray_bench_separates_start_up_first_image_and_steady_rate():
    from bench.ray_bench import summarize
    from gpen.runs.jobs import TaskTiming

    # worker a: starts at 10 s, first image 4 s, then two of 2 s; worker b: starts at 11 s, one of 5 s, one of 3 s
    timings = [TaskTiming("1", "a", 10, 4), TaskTiming("2", "a", 14, 2), TaskTiming("3", "a", 16, 2),
               TaskTiming("4", "b", 11, 5), TaskTiming("5", "b", 16, 3)]
    row = summarize(timings[::-1], started=2.0, total=20.0)
    assert row["startup_s"] == 8.0 and row["first_image_s"] == 4.5 and row["steady_s_per_image"] == 2.0
    assert row["steady_images_per_s"] == round(2 / 4 + 1 / 3, 3) and row["processes"] == 2 and row["images"] == 5
