"""Faults in a local run: a decoder that raises costs its input a try and the others are written;
an interrupted run (SIGTERM, or a kill) leaves nothing that a later run does not clean up; a
reference clip that is too short is found before any frame is restored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from gpen.runs.cli import main

from conftest import FIXTURES, REPO
from video_utils import encode_clip, moving_faces, stream_facts, write_video_landmarks

pytest.importorskip("av")

SMALL_256 = FIXTURES / "reference" / "fixture_s256.pth"


def make_inputs(root, clips=("clip.mp4", "bad.mp4"), n: int = 10):
    frames, lms = moving_faces(n)
    src = root / "in"
    src.mkdir()
    for name in clips:
        encode_clip(src / name, frames, fps=5)
    cv2.imwrite(str(src / "a.png"), frames[2][:, :, ::-1])
    lm = write_video_landmarks(root / "lm.json", {name: lms for name in clips}, {"a.png": lms[2]})
    return src, lm


@pytest.mark.parametrize("retries", [0, 1])
def test_a_decoder_that_raises_costs_its_clip_a_try_and_the_others_are_written(tmp_path, monkeypatch, capsys,
                                                                                retries):
    import gpen.runs.video as video

    src, lm = make_inputs(tmp_path)
    tries = []
    read_frames = video.read_frames

    def broken_decoder(info, *args, **kwargs):
        for k, frame in enumerate(read_frames(info, *args, **kwargs)):
            if info.path.name == "bad.mp4" and k == 5:
                tries.append(1)
                raise RuntimeError("decoder crashed")  # not a clean InvalidInputError: a crash
            yield frame

    monkeypatch.setattr(video, "read_frames", broken_decoder)
    out = tmp_path / "out"
    rc = main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(out), "--landmarks", str(lm),
               "--frames-per-segment", "4", "--retries", str(retries)])
    err = capsys.readouterr().err
    assert len(tries) == retries + 1
    assert rc == 2 and "bad.mp4: RuntimeError: decoder crashed" in err and "1 input(s) failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "clip.mp4"]  # no partial clip, no hidden file
    assert stream_facts(out / "clip.mp4")["frames"] == 10


def hidden_parts(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_sigterm_during_a_video_then_a_rerun_leave_no_partial_file(tmp_path):
    frames, lms = moving_faces(40)
    src = encode_clip(tmp_path / "clip.mp4", frames, fps=5)
    lm = write_video_landmarks(tmp_path / "lm.json", {"clip.mp4": lms})
    out = tmp_path / "out"
    out.mkdir()
    # ultrafast: no encoder look-ahead, so the partial file exists from the first frames on
    cmd = [sys.executable, "-m", "gpen", "-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(out),
           "--landmarks", str(lm), "--frames-per-segment", "2", "--threads", "1", "--preset", "ultrafast"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not hidden_parts(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hidden_parts(out), proc.stderr.read() if proc.poll() is not None else "no partial file after 120 s"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        proc.kill()
    assert rc != 0 and not (out / "clip.mp4").exists()
    assert hidden_parts(out) == []  # the handler removed it
    # a run killed outright (no handler runs) leaves its part; the next run removes it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".clip.mp4.{dead.pid}.part"
    stale.write_bytes(b"half a video")
    assert main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(out), "--landmarks", str(lm)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]
    assert stream_facts(out / "clip.mp4")["frames"] == 40


def test_a_part_of_a_process_still_running_is_left_alone(tmp_path):
    from gpen.runs.imageio import remove_stale_parts

    alive = tmp_path / f".a.png.{os.getppid()}.part"  # the parent process: alive
    alive.write_bytes(b"being written")
    other = tmp_path / ".b.png.1.part"  # another output's name
    other.write_bytes(b"x")
    remove_stale_parts(tmp_path / "a.png")
    assert alive.exists() and other.exists()


def test_a_reference_clip_too_short_is_found_before_any_frame_is_restored(tmp_path, capsys, no_restore):
    frames, lms = moving_faces(12)
    src = encode_clip(tmp_path / "clip.mp4", frames, fps=6)
    ref = encode_clip(tmp_path / "before.mp4", frames[:9], fps=6)  # segment 0 reads 8 frames: the 2nd lacks them
    lm = write_video_landmarks(tmp_path / "lm.json", {"clip.mp4": lms})
    rc = main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(tmp_path / "out"), "--landmarks",
               str(lm), "--reference", str(ref), "--frames-per-segment", "4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "9 frames" in err and "12" in err, err
    assert no_restore == []  # found before the first segment
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
