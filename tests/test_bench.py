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
    args = argparse.Namespace(device="cpu", smoke=True, budget_s=3600.0, card_gib=7.0, compile=False,
                              official=None, json=str(out), steps=None)
    device_check.run(args)
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert list(steps) == ["parity", "precision", "speed", "small_card", "memory", "pipeline", "profile", "upsample"]
    assert all(s["status"] == "ok" for s in steps.values()), {k: s.get("error") for k, s in steps.items()}
    assert all(r["ok"] for r in steps["parity"]["rows"])
    assert all(r["finite"] and r["psnr_db_vs_fp32"] >= 35 for r in steps["precision"]["rows"])
    rows = steps["speed"]["rows"]
    speed = {(r["batch"], r["mode"], r["cudnn_autotune"]): r for r in rows}
    from gpen.pipeline.memory import default_chunk_size

    assert speed[("auto", "eager", True)]["faces"] == default_chunk_size(torch.device("cpu"), 256)  # the CPU's batch
    assert {k for k, r in speed.items() if "skipped" not in r} == {(b, "eager", a) for b in (1, "auto") for a in (0, 1)}
    assert speed[(1, "graph", True)]["skipped"] == "CUDA graphs need CUDA"
    assert all(r["faces_per_s"] > 0 for r in rows if "skipped" not in r)
    assert torch.backends.cudnn.benchmark is False  # the autotuned rows leave the setting as they found it
    pipeline = steps["pipeline"]["rows"][0]
    assert pipeline["ratio_to_network"] >= 1.0
    assert pipeline["detection_s"] > 0 or "facexlib" in pipeline["detection_skipped"]
    assert (tmp_path / "device_profile.txt").read_text().count("\n") > 5
    # the fused upsampling variant it times computes the same as the network's upsampling
    assert all(r["max_rel_diff"] < 1e-5 for r in steps["upsample"]["rows"])


def test_device_check_skips_steps_past_its_budget(tmp_path):
    from bench import device_check

    out = tmp_path / "device_check.json"
    args = argparse.Namespace(device="cpu", smoke=True, budget_s=-1.0, card_gib=7.0, compile=False,
                              official=None, json=str(out), steps=None)
    device_check.run(args)
    steps = json.loads(out.read_text())["steps"]
    assert {s["status"] for s in steps.values()} == {"skipped"}


def test_device_check_speed_step_leaves_the_later_steps_their_time(tmp_path, monkeypatch):
    """A budget that only fits the later steps' estimates: the speed step records its rows as skipped
    (no row started past its deadline) and every later step still runs."""
    from bench import device_check

    monkeypatch.setattr(device_check, "ESTIMATE_S", {n: 1.0 for n in device_check.ESTIMATE_S} | {"upsample": 100.0})
    out = tmp_path / "device_check.json"
    args = argparse.Namespace(device="cpu", smoke=False, budget_s=105.0, card_gib=7.0, compile=False,
                              official=None, json=str(out), steps=["speed", "upsample"])
    monkeypatch.setattr(device_check, "step_upsample", lambda *a: [{"ran": True}])
    device_check.run(args)
    steps = json.loads(out.read_text())["steps"]
    assert steps["speed"]["status"] == "ok" and all("skipped" in r for r in steps["speed"]["rows"])
    assert steps["upsample"]["rows"] == [{"ran": True}]


def test_ray_bench_separates_start_up_first_image_and_steady_rate():
    from bench.ray_bench import summarize
    from gpen.runs.jobs import TaskTiming

    # worker a: starts at 10 s, first image 4 s, then two of 2 s; worker b: starts at 11 s, one of 5 s, one of 3 s
    timings = [TaskTiming("1", "a", 10, 4), TaskTiming("2", "a", 14, 2), TaskTiming("3", "a", 16, 2),
               TaskTiming("4", "b", 11, 5), TaskTiming("5", "b", 16, 3)]
    row = summarize(timings[::-1], started=2.0, total=20.0)
    assert row["startup_s"] == 8.0 and row["first_image_s"] == 4.5 and row["steady_s_per_image"] == 2.0
    assert row["steady_images_per_s"] == round(2 / 4 + 1 / 3, 3) and row["processes"] == 2 and row["images"] == 5
