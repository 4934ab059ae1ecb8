"""Video files through the command line: frames, rate, duration and audio kept, faces restored,
segments that keep smoothing continuous, aligned mode, rotation, interrupted runs resumed."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch

from gpen.runs.cli import main
from gpen.errors import MissingDependencyError
from gpen.runs.imageio import read_image, to_uint8
from gpen.runs.jobs import RestoreOptions
from gpen.model.layouts import seeded_state_dict
from gpen.model.loader import load_model
from gpen.pipeline.restorer import FaceRestorer
from gpen.runs.segments import SegmentWindows, plan_segments, restore_segment, window_landmarks

from conftest import FIXTURES, psnr
from video_utils import (audio_packets, decode_clip, encode_clip, moving_faces, stream_facts,
                         write_video_landmarks)

pytest.importorskip("av")

SMALL_256 = FIXTURES / "reference" / "fixture_s256.pth"  # a narrow 256 px network: fast on CPU
LOSSLESS = ["--pix-fmt", "yuv444p", "--crf", "0", "--preset", "ultrafast"]


@pytest.fixture(scope="module")
def seeded_256(tmp_path_factory):
    """The released GPEN-BFR-256 layout with seeded weights, saved as a .pth (restores nothing real)."""
    path = tmp_path_factory.mktemp("models") / "GPEN-BFR-256-seeded.pth"
    torch.save(seeded_state_dict("GPEN-BFR-256"), path)
    return path


def oracle(model, frames: np.ndarray, landmarks, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """What FaceRestorer.restore makes of the frames in one call: (uint8 frames, blend masks)."""
    torch.set_num_threads(1)
    result = FaceRestorer(load_model(model)).restore(torch.from_numpy(frames).float() / 255.0, landmarks, **kwargs)
    return to_uint8(result.images), result.masks.numpy()


def test_clip_with_audio_keeps_frames_rate_duration_audio_and_restores_faces(tmp_path, seeded_256, capsys):
    frames, lms = moving_faces(16)  # 2 s at 8 fps, two faces moving a little per frame
    src = encode_clip(tmp_path / "clip.mp4", frames, fps=8, audio_seconds=2.0)
    write_video_landmarks(tmp_path / "lm.json", {"clip.mp4": lms})
    rc = main(["restore", str(src), "--model", str(seeded_256), "-o", str(tmp_path / "out"), "--landmarks",
               str(tmp_path / "lm.json"), "--frames-per-segment", "6", "--threads", "1"])
    assert rc == 0
    out = tmp_path / "out" / "clip.mp4"
    assert "frame" in capsys.readouterr().err  # the progress bar counts frames
    got, want = stream_facts(out), stream_facts(src)
    assert got["frames"] == want["frames"] == 16
    assert got["fps"] == want["fps"] == 8
    assert got["times"] == want["times"]  # every frame at its time: duration kept
    assert got["video_duration"] == want["video_duration"] == 2.0
    assert (got["width"], got["height"], got["pix_fmt"]) == (128, 192, "yuv420p")  # H.264 defaults
    assert got["audio"] == want["audio"] and got["audio"]["codec"] == "aac"
    assert audio_packets(out) == audio_packets(src)  # the audio is copied packet for packet

    decoded, _ = decode_clip(src)
    restored, _ = decode_clip(out)
    picks = [0, 5, 6, 15]  # segment borders included
    expected, masks = oracle(seeded_256, decoded[picks], [lms[i] for i in picks])
    for k, i in enumerate(picks):
        face = masks[k] > 0.5
        assert face.mean() > 0.05  # two faces blended in
        assert psnr(restored[i][face] / 255, expected[k][face] / 255) >= 30.0  # as restored, up to H.264 at CRF 18
        assert psnr(restored[i][face] / 255, decoded[i][face] / 255) < 20.0  # and not the input
        away = masks[k] == 0
        assert psnr(restored[i][away] / 255, decoded[i][away] / 255) >= 36.0  # the rest is the input


def _segmented(restorer, frames, lms, length, overlap, **kwargs) -> tuple[np.ndarray, list]:
    windows = SegmentWindows((f, i) for i, f in enumerate(frames))
    outs = []
    for seg in plan_segments(len(frames), length, overlap):
        window, _ = windows.take(seg)
        restored, _, _ = restore_segment(restorer, torch.from_numpy(window).float() / 255.0, seg,
                                         window_landmarks(lms, seg, len(window)), restore_kwargs=kwargs)
        outs.append(to_uint8(restored))
    return np.concatenate(outs)


class CountingNet(torch.nn.Module):
    """A network stand-in that counts the faces it restores."""

    def __init__(self, net):
        super().__init__()
        self.net, self.size, self.faces = net, net.size, 0

    def forward(self, x):
        self.faces += x.shape[0]
        return self.net(x)


def test_overlapping_segments_keep_smoothing_continuous_and_restore_each_frame_once():
    frames, lms = moving_faces(14, step=1.0)
    rng = np.random.default_rng(0)
    jittered = [lm + rng.normal(0, 1.0, lm.shape).astype(np.float32) for lm in lms]  # detector-like jitter
    net = CountingNet(load_model(SMALL_256))
    restorer = FaceRestorer(net)
    x = torch.from_numpy(frames).float() / 255.0
    whole = to_uint8(restorer.restore(x, jittered, temporal_smoothing=1.0).images)
    net.faces = 0
    chunked = _segmented(restorer, frames, jittered, 4, 4, temporal_smoothing=1.0)
    assert net.faces == sum(len(lm) for lm in lms) > 20  # context frames are never restored
    assert np.abs(chunked.astype(int) - whole).max() <= 1  # the smoothing sees across every border
    assert (chunked != whole).mean() < 1e-4
    cut = _segmented(restorer, frames, jittered, 4, 0, temporal_smoothing=1.0)
    assert np.abs(cut.astype(int) - whole).max() > 10  # without context the borders jump: the test can tell


def test_aligned_mode_restores_whole_frames_of_images_and_videos(tmp_path):
    rng = np.random.default_rng(1)
    crops = (rng.random((5, 96, 96, 3)) * 255).astype(np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    encode_clip(src / "faces.mkv", crops, fps=5)
    cv2.imwrite(str(src / "face.png"), crops[0][:, :, ::-1])
    rc = main(["-q", "restore", str(src), "--aligned", "--model", str(SMALL_256), "-o", str(tmp_path / "out"),
               "--strength", "0.7", *LOSSLESS])
    assert rc == 0
    restorer = FaceRestorer(load_model(SMALL_256))
    image, _ = read_image(src / "face.png")
    want = to_uint8(restorer.restore_aligned(image[None], strength=0.7).images[0])
    assert np.array_equal(cv2.imread(str(tmp_path / "out" / "face.png"))[:, :, ::-1], want)
    decoded, _ = decode_clip(src / "faces.mkv")
    want = to_uint8(restorer.restore_aligned(torch.from_numpy(decoded).float() / 255.0, strength=0.7).images)
    got, _ = decode_clip(tmp_path / "out" / "faces.mkv")
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want).max() <= 3  # lossless H.264 4:4:4, up to RGB <-> YUV rounding
    assert psnr(got / 255, decoded / 255) < 25.0


def test_rotated_phone_clip_is_restored_upright_and_keeps_its_rotation(tmp_path):
    frames, lms = moving_faces(6)
    stored = np.ascontiguousarray(np.rot90(frames, -1, axes=(1, 2)))  # shown upright after 90 degrees CCW
    src = encode_clip(tmp_path / "phone.mp4", stored, fps=6, rotation=90)
    write_video_landmarks(tmp_path / "lm.json", {"phone.mp4": lms})  # landmarks as the clip shows
    rc = main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(tmp_path / "out"),
               "--landmarks", str(tmp_path / "lm.json"), *LOSSLESS])
    assert rc == 0
    import av

    with av.open(str(tmp_path / "out" / "phone.mp4")) as c:
        frame = next(c.decode(c.streams.video[0]))
        assert (frame.width, frame.height, frame.rotation) == (192, 128, 90)  # stored as the input
    got, _ = decode_clip(tmp_path / "out" / "phone.mp4")
    upright = np.rot90(got, 1, axes=(1, 2))
    decoded, _ = decode_clip(src)
    want, masks = oracle(SMALL_256, np.ascontiguousarray(np.rot90(decoded, 1, axes=(1, 2))), lms)
    assert masks.mean() > 0.05
    assert np.abs(upright.astype(int) - want).max() <= 3


def test_odd_sized_clip_keeps_its_size(tmp_path):
    frames = (np.random.default_rng(2).random((3, 21, 33, 3)) * 255).astype(np.uint8)
    src = encode_clip(tmp_path / "odd.mkv", frames, fps=3)
    (tmp_path / "lm.json").write_text('{"videos": {"odd.mkv": {"frames": []}}}')
    rc = main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(tmp_path / "out"),
               "--landmarks", str(tmp_path / "lm.json"), "--crf", "0"])
    assert rc == 0
    facts = stream_facts(tmp_path / "out" / "odd.mkv")
    assert (facts["frames"], facts["width"], facts["height"], facts["pix_fmt"]) == (3, 33, 21, "yuv444p")
    got, _ = decode_clip(tmp_path / "out" / "odd.mkv")
    assert np.abs(got.astype(int) - decode_clip(src)[0]).max() <= 3  # no faces: the frames pass through


def test_audio_the_output_container_cannot_hold_is_reencoded(tmp_path):
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    src = encode_clip(tmp_path / "old.avi", frames, fps=4, audio_seconds=1.0, audio_codec="adpcm_ms",
                      codec="mpeg4", pix_fmt="yuv420p", options={})
    (tmp_path / "lm.json").write_text('{"videos": {"old.avi": {"frames": []}}}')
    rc = main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(tmp_path / "out"),
               "--landmarks", str(tmp_path / "lm.json")])
    assert rc == 0
    out = tmp_path / "out" / "old.mkv"  # AVI in, Matroska out
    facts = stream_facts(out)
    assert facts["frames"] == 4 and facts["audio"]["codec"] == "aac" and facts["audio"]["rate"] == 16000
    import av

    with av.open(str(out)) as c:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0])])
    assert abs(len(pcm) / 16000 - 1.0) < 0.15
    spectrum = np.abs(np.fft.rfft(pcm[2048:2048 + 8192]))
    assert abs(np.argmax(spectrum) * 16000 / 8192 - 440) < 4  # the 440 Hz tone survived


def test_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="gpen")
    frames, lms = moving_faces(10)
    src = tmp_path / "in"
    src.mkdir()
    encode_clip(src / "clip.mp4", frames, fps=5, audio_seconds=2.0)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(src / name), frames[0][:, :, ::-1])
    write_video_landmarks(tmp_path / "lm.json", {"clip.mp4": lms}, {"a.png": lms[0], "b.png": lms[0]})
    def args(out):
        return ["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(out), "--landmarks",
                str(tmp_path / "lm.json"), "--frames-per-segment", "4"]


    calls = {"n": 0}
    original = FaceRestorer.restore

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # a.png, b.png, the clip's first segment, then Ctrl-C
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(FaceRestorer, "restore", interrupted)
    out = tmp_path / "out"
    assert main(args(out)) == 130
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]  # no partial clip, no temporary file
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    monkeypatch.setattr(FaceRestorer, "restore", original)
    caplog.clear()
    assert main(args(out)) == 0
    assert "skipping 2 input(s) whose output exists" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".png"} == stamps
    assert stream_facts(out / "clip.mp4")["frames"] == 10
    fresh = tmp_path / "fresh"
    assert main(args(fresh)) == 0
    assert np.array_equal(decode_clip(out / "clip.mp4")[0], decode_clip(fresh / "clip.mp4")[0])


def test_video_without_pyav_says_what_to_install(tmp_path, monkeypatch, capsys):
    src = encode_clip(tmp_path / "clip.mp4", np.zeros((2, 16, 16, 3), np.uint8), fps=2)
    monkeypatch.setitem(sys.modules, "av", None)
    from gpen.runs.video import require_av

    with pytest.raises(MissingDependencyError, match="pip install av"):
        require_av()
    assert main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install av" in err


def test_options_reach_the_video_encoder():
    from gpen.runs.cli import build_parser, restore_options

    args = build_parser().parse_args(["restore", "x.mp4", "-o", "out", "--video-codec", "libx265", "--crf", "23",
                                      "--preset", "slow", "--pix-fmt", "yuv420p10le", "--video-option", "tune=grain"])
    options = restore_options(args)
    assert isinstance(options, RestoreOptions) and options.video.codec == "libx265"
    assert options.video.encoder_options() == {"crf": "23", "preset": "slow", "tune": "grain"}
    assert args.model == "GPEN-BFR-512"  # the default model


@pytest.mark.parametrize("name", ["gop.mp4", "gop.mkv"])
def test_reading_a_segment_by_seeking_gives_the_frames_of_a_full_read(tmp_path, name):
    from gpen.runs.video import probe, read_frames

    frames = (np.random.default_rng(3).random((23, 32, 48, 3)) * 255).astype(np.uint8)
    src = encode_clip(tmp_path / name, frames, fps=10, pix_fmt="yuv420p",
                      options={"preset": "medium", "g": "6", "bf": "2", "crf": "30"})  # keyframes, B-frames
    info = probe(src)
    assert info.frames == 23 and info.frame_pts is not None
    full = list(read_frames(info))
    assert len(full) == 23
    for start, stop in [(0, 4), (5, 11), (7, 8), (12, 23), (20, 40)]:
        part = list(read_frames(info, start, stop))
        assert [p for _, p in part] == [p for _, p in full[start:stop]]
        assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(part, full[start:stop]))
    # timestamps that do not match the frames (a container that lies): decoded from the start instead
    from dataclasses import replace

    odd = replace(info, frame_pts=tuple(p - 1 for p in info.frame_pts))
    assert [p for _, p in read_frames(odd, 12, 15)] == [p for _, p in full[12:15]]


@pytest.mark.parametrize("option", [["--video-codec", "no-such-codec"], ["--pix-fmt", "no-such-format"],
                                    ["--video-option", "crf=not-a-number"]])
def test_encoder_settings_it_cannot_use_give_one_line_and_no_file(tmp_path, capsys, option):
    src = encode_clip(tmp_path / "clip.mp4", np.zeros((3, 16, 16, 3), np.uint8), fps=3)
    (tmp_path / "lm.json").write_text('{"videos": {"clip.mp4": {"frames": []}}}')
    rc = main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(tmp_path / "out"),
               "--landmarks", str(tmp_path / "lm.json"), *option])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot encode video" in err, err
    assert not any((tmp_path / "out").iterdir())  # no partial file left


def test_video_reference_restores_only_the_face_the_swap_changed(tmp_path):
    before, lms = moving_faces(6)
    after = before.copy()
    after[:, 140:190, 55:110] = after[:, 140:190, 55:110][:, :, ::-1] // 2  # the lower face "swapped"
    src = encode_clip(tmp_path / "clip.mp4", after, fps=6)
    ref = encode_clip(tmp_path / "before.mp4", before, fps=6)
    write_video_landmarks(tmp_path / "lm.json", {"clip.mp4": lms})
    assert main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(tmp_path / "out"), "--landmarks",
                 str(tmp_path / "lm.json"), "--reference", str(ref), *LOSSLESS]) == 0
    got, _ = decode_clip(tmp_path / "out" / "clip.mp4")
    shown, _ = decode_clip(src)
    assert np.abs(got[:, :90].astype(int) - shown[:, :90]).max() <= 3  # the upper face: left alone
    assert np.abs(got[:, 145:185, 60:105].astype(int) - shown[:, 145:185, 60:105]).mean() > 10  # the swapped one


def test_a_face_missed_at_a_segment_border_is_filled_in_from_the_context(tmp_path):
    frames, lms = moving_faces(12)
    missed = [lm.copy() for lm in lms]
    missed[4] = lms[4][1:]  # the upper face is missing in frame 4, the first frame of the second segment
    assert lms[4][0, 0, 1] < 90
    src = encode_clip(tmp_path / "clip.mp4", frames, fps=6)
    write_video_landmarks(tmp_path / "lm.json", {"clip.mp4": missed})
    assert main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(tmp_path / "out"), "--landmarks",
                 str(tmp_path / "lm.json"), "--frames-per-segment", "4", *LOSSLESS]) == 0
    got, _ = decode_clip(tmp_path / "out" / "clip.mp4")
    shown, _ = decode_clip(src)
    upper = (slice(20, 70), slice(5, 60))
    assert np.abs(got[4][upper].astype(int) - shown[4][upper]).mean() > 10  # restored at interpolated landmarks
    # the same segment without context frames: the gap sits at the start of its frames and stays a gap
    restorer = FaceRestorer(load_model(SMALL_256))
    cut = _segmented(restorer, shown, missed, 4, 0)
    assert np.abs(cut[4][upper].astype(int) - shown[4][upper]).max() == 0


def test_image_sequence_in_segments_equals_one_segment(tmp_path):
    frames, lms = moving_faces(6)
    src = tmp_path / "frames"
    src.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(src / f"f{i}.png"), f[:, :, ::-1])
    write_video_landmarks(tmp_path / "lm.json", {}, {f"f{i}.png": lm for i, lm in enumerate(lms) if i != 3})
    outs = {}
    for per, chunk in (("2", "1"), ("16", "1"), ("2", None), ("16", None)):
        out = tmp_path / f"out{per}_{chunk}"
        assert main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(out), "--landmarks",
                     str(tmp_path / "lm.json"), "--track-faces", "--select", "0", "--frames-per-segment", per,
                     "--temporal-smoothing", "1", *(["--chunk-size", chunk] if chunk else [])]) == 0
        outs[per, chunk] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert list(outs["2", "1"]) == [f"f{i}.png" for i in range(6)]
    assert outs["2", "1"] == outs["16", "1"]  # one face per call: three segments give the files of one
    # the default batches faces (4 or 8 per call at 256 px on the CPU): a face's last float bits may then
    # depend on the faces sharing its call, never more than a step of the 8-bit output
    for name in outs["2", "1"]:
        a, b = (cv2.imdecode(np.frombuffer(outs[per, None][name], np.uint8), cv2.IMREAD_UNCHANGED).astype(int)
                for per in ("2", "16"))
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3
    f3 = cv2.imread(str(tmp_path / "out2_1" / "f3.png"))[:, :, ::-1]
    assert np.abs(f3[20:70, 5:60].astype(int) - frames[3][20:70, 5:60]).mean() > 10  # track 0 filled in frame 3


def test_local_run_times_each_image_clip_and_sequence_segment(tmp_path):
    import os
    import socket
    import time

    from gpen.runs.runner import restore_files

    frames, lms = moving_faces(6)
    mixed, seq = tmp_path / "mixed", tmp_path / "seq"
    mixed.mkdir()
    seq.mkdir()
    encode_clip(mixed / "clip.mp4", frames, fps=5)
    cv2.imwrite(str(mixed / "a.png"), frames[2][:, :, ::-1])
    for i, f in enumerate(frames):
        cv2.imwrite(str(seq / f"f{i}.png"), f[:, :, ::-1])
    lm = write_video_landmarks(tmp_path / "lm.json", {"clip.mp4": lms},
                               {"a.png": lms[2], **{f"f{i}.png": x for i, x in enumerate(lms)}})
    here = f"{socket.gethostname()}:{os.getpid()}"
    runs = (("mixed", RestoreOptions(), ["a.png", "clip.mp4"]),
            ("seq", RestoreOptions(image_sequence=True, frames_per_segment=2),
             ["f0.png[0:2]", "f0.png[2:4]", "f0.png[4:6]"]))
    for name, options, expected in runs:
        t0 = time.time()
        report = restore_files([tmp_path / name], tmp_path / f"out_{name}", model=str(SMALL_256), options=options,
                               landmarks=lm, quiet=True)
        t1 = time.time()
        assert sorted(t.name for t in report.timings) == expected  # one per unit of work, named as Ray names them
        assert all(t.worker == here and t.seconds > 0 and t0 <= t.started <= t.started + t.seconds <= t1
                   for t in report.timings)
        assert len(report.written) == len(list((tmp_path / f"out_{name}").iterdir()))


def test_restore_range_restores_only_its_frames():
    from gpen.errors import InvalidInputError

    frames, lms = moving_faces(5)
    x = torch.from_numpy(frames).float() / 255.0
    restorer = FaceRestorer(load_model(SMALL_256))
    whole = restorer.restore(x, lms)
    part = restorer.restore(x, lms, restore_range=(1, 3))
    assert torch.equal(part.images[[0, 3, 4]], x[[0, 3, 4]])  # context frames come back bit-identical
    assert torch.equal(part.images[1:3], whole.images[1:3])
    assert part.faces_per_image == [0, 2, 2, 0, 0] and {f.image_index for f in part.faces} == {1, 2}
    for bad in [(3, 1), (0, 6), (-1, 2), "x"]:
        with pytest.raises(InvalidInputError, match="restore_range"):
            restorer.restore(x, lms, restore_range=bad)


def test_upscaled_video_is_that_many_times_larger(tmp_path):
    frames, lms = moving_faces(3)
    src = encode_clip(tmp_path / "clip.mkv", frames, fps=3, audio_seconds=1.0)
    write_video_landmarks(tmp_path / "lm.json", {"clip.mkv": lms})
    assert main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(tmp_path / "out"), "--landmarks",
                 str(tmp_path / "lm.json"), "--upscale", "2"]) == 0
    facts = stream_facts(tmp_path / "out" / "clip.mkv")
    assert (facts["frames"], facts["width"], facts["height"]) == (3, 256, 384)
    assert facts["audio"] == stream_facts(src)["audio"]
