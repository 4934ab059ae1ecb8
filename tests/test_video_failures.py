"""Video inputs that cannot be restored as asked fail before any frame is restored, with a message
that names the cause (issue 29); a clip cut short says so."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av")

from gpen.pipeline.restorer import FaceRestorer  # noqa: E402
from gpen.runs.cli import main  # noqa: E402
from gpen.runs.video import VideoSettings, probe  # noqa: E402

from conftest import FIXTURES  # noqa: E402
from video_utils import encode_clip  # noqa: E402

MODEL_512 = FIXTURES / "reference" / "fixture_s512.pth"


def frames(n: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def restores(monkeypatch):
    calls = []
    for name in ("restore", "restore_aligned"):
        original = getattr(FaceRestorer, name)
        monkeypatch.setattr(FaceRestorer, name, lambda self, *a, _o=original, **k: calls.append(1) or _o(self, *a, **k))
    return calls


def test_an_encoder_setting_that_cannot_work_fails_before_restoring(tmp_path, capsys, restores):
    clip = encode_clip(tmp_path / "clip.mp4", frames(4))
    rc = main(["-q", "restore", str(clip), "--aligned", "--model", str(MODEL_512), "-o", str(tmp_path / "out"),
               "--video-codec", "mpeg4", "--pix-fmt", "yuv444p"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and not restores
    assert "clip.mp4" in err[0] and "cannot encode video with mpeg4 (yuv444p" in err[0] and "--pix-fmt" in err[0]
    assert ".check" not in err[0] and list((tmp_path / "out").iterdir()) == []  # no scratch file left


def test_audio_that_cannot_be_copied_is_named_before_restoring(tmp_path, capsys, restores, monkeypatch):
    from gpen.runs import video

    def refuse(self, packet, out, remux):
        raise ValueError("Malformed AAC bitstream detected")  # what FFmpeg says of ADTS AAC in some containers

    monkeypatch.setattr(video.VideoWriter, "_mux_audio", refuse)
    clip = encode_clip(tmp_path / "clip.avi", frames(4), codec="mpeg4", pix_fmt="yuv420p", options={},
                       audio_seconds=0.5)
    rc = main(["-q", "restore", str(clip), "--aligned", "--model", str(MODEL_512), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and not restores
    assert "the aac audio of clip.avi cannot go into the matroska output" in err[0] and "--video-codec" not in err[0]


def test_an_avi_with_aac_audio_passes_the_check_with_its_audio(tmp_path):
    from gpen.runs.video import check_output

    clip = encode_clip(tmp_path / "clip.avi", frames(4), codec="mpeg4", pix_fmt="yuv420p", options={},
                       audio_seconds=0.5)
    info = probe(clip)
    assert info.audio_streams == 1
    check_output(info, tmp_path / "out" / "clip.mkv", VideoSettings())
    assert list((tmp_path / "out").iterdir()) == []


def test_a_clip_cut_short_warns_with_both_counts(tmp_path, caplog):
    import av

    clip = tmp_path / "full.mp4"
    with av.open(str(clip), "w", options={"movflags": "faststart"}) as out:  # the frame table first, as cameras do
        v = out.add_stream("libx264", rate=25)
        v.width = v.height = 64
        v.pix_fmt, v.options = "yuv420p", {"crf": "30", "preset": "ultrafast"}
        for i, rgb in enumerate(frames(75)):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 12])  # an interrupted copy: the header still lists 75 frames
    with caplog.at_level("WARNING"):
        assert probe(clip).frames == 75
        assert "header lists" not in caplog.text
        info = probe(cut)
    assert info.frames < 75 and f"its header lists 75 frames but the file holds {info.frames}" in caplog.text
