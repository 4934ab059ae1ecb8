"""Test clips made with PyAV: faces from real pictures moving across the frame, a sine tone as audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from conftest import REPO, landmarks_of

SOLVAY_ASSET = REPO / "assets" / "solvay_conference_1927.png"


def encode_clip(path: Path, frames: np.ndarray, fps: int = 12, *, audio_seconds: float | None = None,
                audio_codec: str = "aac", sample_rate: int = 16000, rotation: int = 0,
                codec: str = "libx264", pix_fmt: str = "yuv444p", options: dict | None = None) -> Path:
    """Encode RGB uint8 frames (N, H, W, 3) as stored (before any display ``rotation``) with a 440 Hz tone."""
    import av

    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        lossless = {"crf": "0", "preset": "ultrafast"} if codec == "libx264" else {}
        v.options = options if options is not None else lossless
        if rotation:
            v.set_display_rotation(rotation)
        a = None
        if audio_seconds:
            a = out.add_stream(audio_codec, rate=sample_rate)
            a.layout = "mono"
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            f.pts = i
            f.time_base = Fraction(1, fps)
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        if a is not None:
            t = np.arange(int(audio_seconds * sample_rate)) / sample_rate
            pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            fmt = a.codec_context.format.name if a.codec_context.format else "fltp"
            step = a.codec_context.frame_size or 1024
            for k in range(0, len(pcm), step):
                chunk = pcm[None, k:k + step]
                if fmt.startswith("s16"):
                    chunk = (chunk * 32767).astype(np.int16)
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout="mono")
                af.sample_rate = sample_rate
                af.pts = k
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode():
                out.mux(p)
    return path


def decode_clip(path: Path) -> tuple[np.ndarray, list[int]]:
    """All frames of a clip as stored (N, H, W, 3) RGB uint8 and their timestamps."""
    import av

    with av.open(str(path)) as c:
        frames, pts = [], []
        for f in c.decode(c.streams.video[0]):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(f.pts)
    return np.stack(frames), pts


def moving_faces(n: int, size: tuple[int, int] = (192, 128), step: float = 0.5, origin: tuple[int, int] = (470, 70)
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n`` frames cut from the Solvay photo (shipped in assets/) with a window that slides right by
    ``step`` px per frame, and per frame the real landmarks (K, 5, 2) of the faces fully inside it."""
    import cv2

    rgb = cv2.imread(str(SOLVAY_ASSET), cv2.IMREAD_COLOR)[:, :, ::-1]
    lms = landmarks_of("solvay_conference_1927.png")
    h, w = size
    x0, y0 = origin
    frames, per_frame = [], []
    for i in range(n):
        dx = int(round(i * step))
        frames.append(rgb[y0:y0 + h, x0 + dx:x0 + dx + w])
        shifted = lms - np.array([x0 + dx, y0], np.float32)
        inside = ((shifted[..., 0] > 12) & (shifted[..., 0] < w - 12) & (shifted[..., 1] > 12)
                  & (shifted[..., 1] < h - 12)).all(axis=1)
        per_frame.append(shifted[inside])
    return np.ascontiguousarray(np.stack(frames)), per_frame


def write_video_landmarks(path: Path, videos: dict[str, list[np.ndarray]], images: dict | None = None) -> Path:
    """A landmarks file with per-frame faces for videos (and per-image faces)."""
    import json

    data = {"videos": {name: {"frames": [{"faces": [{"landmarks5": f.tolist()} for f in fr]} for fr in frames]}
                       for name, frames in videos.items()}}
    if images:
        data["images"] = {n: {"faces": [{"landmarks5": f.tolist()} for f in lm]} for n, lm in images.items()}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def audio_packets(path: Path) -> list[bytes]:
    """The bytes of every audio packet of a file, in order."""
    import av

    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def stream_facts(path: Path) -> dict:
    """Frame count, rate, durations and audio facts of a clip, read back with PyAV."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        times = [float(f.pts * f.time_base) for f in c.decode(v)]
        facts = {"frames": len(times), "fps": v.average_rate, "times": times, "width": v.codec_context.width,
                 "height": v.codec_context.height, "pix_fmt": v.codec_context.pix_fmt,
                 "video_duration": float(v.duration * v.time_base) if v.duration else None, "audio": None}
        if c.streams.audio:
            a = c.streams.audio[0]
            facts["audio"] = {"codec": a.codec_context.name, "rate": a.codec_context.sample_rate,
                              "duration": float(a.duration * a.time_base) if a.duration else None}
    return facts
