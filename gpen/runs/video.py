"""Reading and writing video files with PyAV (optional: ``pip install av``).

Frames come out as upright RGB uint8 arrays (H, W, 3) with their presentation timestamps; a
clip stored sideways with a display rotation (phone portraits) is turned upright for restoring
and turned back when written, with the same rotation tag, so the output shows like the input.
:class:`VideoWriter` encodes frames in order (H.264 ``libx264``, ``yuv420p`` and CRF 18 by
default), keeps every frame's timestamp (so the frame count, frame rate and duration stay those
of the input), the colour tags, and copies the audio streams of the source: packets as they are
where the output container can hold the codec, else re-encoded to AAC.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError
from .imageio import partial_path, remove_stale_parts

log = logging.getLogger(__name__)

INSTALL_AV = 'pip install av (or, from a clone of this repository, pip install ".[video]")'
# output container per input suffix; the others get Matroska, which holds every codec
KEEP_CONTAINER = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
CHROMA_SUBSAMPLED = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "nv12", "yuv420p10le", "yuv422p10le")


def require_av(what: str = "reading and writing video"):
    """The ``av`` module, or MissingDependencyError naming the pip command."""
    try:
        import av
    except ImportError:
        raise MissingDependencyError(f"{what} needs PyAV, which is not installed: {INSTALL_AV}.") from None
    return av


def output_suffix(path: str | os.PathLike) -> str:
    """The suffix of the restored video of ``path``: the input's for mp4/m4v/mov/mkv, else ``.mkv``."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in KEEP_CONTAINER else ".mkv"


@dataclass(frozen=True)
class VideoInfo:
    """What a clip holds: stored frame size, display ``rotation`` (degrees counter-clockwise, as
    FFmpeg's display matrix), ``frames`` (counted from the packets), average ``fps``, ``duration``
    in seconds, the video stream's time base, and its frames' presentation timestamps in order
    (None where the container has none)."""

    path: Path
    width: int
    height: int
    rotation: int
    frames: int
    fps: Fraction
    duration: float
    time_base: Fraction
    frame_pts: tuple[int, ...] | None
    audio_streams: int

    @property
    def upright_size(self) -> tuple[int, int]:
        """(height, width) of the frames as shown (and restored)."""
        return (self.width, self.height) if self.rotation % 180 else (self.height, self.width)


@dataclass(frozen=True)
class VideoSettings:
    """How restored video is encoded: FFmpeg encoder name, quality (``crf``: lower is better; passed to
    the encoders that know it), ``preset``, pixel format and further encoder options."""

    codec: str = "libx264"
    crf: float = 18
    preset: str = "medium"
    pix_fmt: str = "yuv420p"
    options: dict[str, str] = field(default_factory=dict)

    def encoder_options(self) -> dict[str, str]:
        opts = {}
        if self.codec in ("libx264", "libx265", "libvpx-vp9", "libvpx", "libaom-av1", "libsvtav1"):
            opts["crf"] = f"{self.crf:g}"
        if self.codec in ("libvpx-vp9", "libvpx"):
            opts["b"] = "0"  # constant quality
        if self.codec in ("libx264", "libx265", "libsvtav1") and self.preset:
            opts["preset"] = self.preset
        opts.update({str(k): str(v) for k, v in self.options.items()})
        return opts


def _open(av, path: Path):
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise InvalidInputError(f"{path}: not a readable video ({e}).") from None


def probe(path: str | os.PathLike, count: bool = True) -> VideoInfo:
    """Read the stream headers and count the video packets (no decoding). ``count=False`` reads the
    headers and the first frame only (``frames`` is then what the header says, ``frame_pts`` None)."""
    av = require_av()
    path = Path(path)
    with _open(av, path) as c:
        if not c.streams.video:
            raise InvalidInputError(f"{path}: holds no video stream.")
        vs = c.streams.video[0]
        pts: list[int] = []
        missing = not count
        try:
            for packet in c.demux(vs) if count else ():
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    missing = True
                else:
                    pts.append(int(packet.pts))
        except av.error.FFmpegError as e:
            raise InvalidInputError(f"{path}: cannot read the video ({e}).") from None
        n = len(pts) if count else int(vs.frames or 1)
        if missing and count:  # count the packets again, every one of them
            c.seek(0)
            n = sum(1 for p in c.demux(vs) if p.size)
        if n == 0:
            raise InvalidInputError(f"{path}: the video stream holds no frames.")
        if vs.frames and vs.frames > n:
            log.warning("%s: its header lists %d frames but the file holds %d (cut short, or an incomplete "
                        "download?): restoring those %d", path.name, vs.frames, n, n)
        fps = Fraction(vs.average_rate or vs.guessed_rate or 25)
        tb = Fraction(vs.time_base or Fraction(1, 90000))
        if vs.duration:
            duration = float(vs.duration * tb)
        elif c.duration:
            duration = c.duration / 1_000_000
        else:
            duration = float(n / fps)
        rotation = 0
        c.seek(0)
        try:
            first = next(c.decode(vs))
            rotation = int(round(first.rotation / 90.0)) * 90 % 360
            rotation = rotation - 360 if rotation > 180 else rotation
        except (StopIteration, av.error.FFmpegError):
            pass
        return VideoInfo(path, vs.codec_context.width, vs.codec_context.height, rotation, n, fps, duration, tb,
                         None if missing else tuple(sorted(pts)), len(c.streams.audio))


def _upright(arr: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(arr, rotation // 90)) if rotation else arr


def read_frames(info: VideoInfo, start: int = 0, stop: int | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Frames ``start`` .. ``stop - 1`` (in presentation order) as (upright RGB uint8 (H, W, 3), pts).

    Seeks to the keyframe before ``start`` where the timestamps are known, else (or where the seek
    cannot place the frames) decodes from the first frame; either way frame ``i`` is the ``i``-th
    frame of the clip.
    """
    av = require_av()
    seek_to = None
    if start > 0 and info.frame_pts is not None and start < len(info.frame_pts):
        seek_to = info.frame_pts[start]
    with _open(av, info.path) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        if seek_to is not None:
            c.seek(seek_to, stream=vs, backward=True, any_frame=False)
        index = None if seek_to is not None else 0
        try:
            for frame in c.decode(vs):
                if index is None:  # after the seek: find frame ``start`` by its timestamp
                    if frame.pts is None or frame.pts > seek_to:  # cannot place it, or the seek overshot
                        yield from read_frames(replace(info, frame_pts=None), start, stop)
                        return
                    if frame.pts < seek_to:
                        continue
                    index = start
                if stop is not None and index >= stop:
                    return
                if index >= start:
                    rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range or None)
                    pts = frame.pts if frame.pts is not None else int(round(index / info.fps / info.time_base))
                    yield _upright(rgb, info.rotation), int(pts)
                index += 1
        except av.error.FFmpegError as e:
            raise InvalidInputError(f"{info.path}: cannot decode frame {index} ({e}).") from None


class VideoWriter:
    """Encode restored frames of ``source`` (a :class:`VideoInfo`) into ``path``, with its audio.

    Frames (upright RGB uint8) are given in order with their timestamps (:meth:`write`); the file
    is written under a temporary name and renamed on :meth:`close`, so a file of the final name is
    always complete (:meth:`abort` removes the partial file). Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike, source: VideoInfo, settings: VideoSettings | None = None,
                 scale: int = 1) -> None:
        self.av = av = require_av("writing video")
        self.path = Path(path)
        self.source = source
        self.scale = int(scale)  # the restored frames are this many times larger than the source's
        self.settings = settings or VideoSettings()
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(self.path)
        self._tmp = partial_path(self.path)
        self._in = _open(av, source.path)
        fmt = KEEP_CONTAINER.get(self.path.suffix.lower(), "matroska")
        try:
            self._out = av.open(str(self._tmp), "w", format=fmt)
            self._out.metadata.update(self._in.metadata)  # title, creation time, ...
            self._video = self._add_video(self._in.streams.video[0])
            self._audio = [self._add_audio(s) for s in self._in.streams.audio]
        except (av.error.FFmpegError, ValueError, TypeError) as e:
            self.abort()
            raise self._error(e) from None
        except BaseException:
            self.abort()
            raise
        self._audio_packets = self._in.demux(*[a[0] for a in self._audio]) if self._audio else iter(())
        self._pending_audio = None

    def _add_video(self, src):
        s = self.settings
        out = self._out.add_stream(s.codec, rate=self.source.fps)
        cc = out.codec_context
        cc.width, cc.height = self.source.width * self.scale, self.source.height * self.scale
        pix_fmt = s.pix_fmt
        if pix_fmt in CHROMA_SUBSAMPLED and (cc.width % 2 or cc.height % 2):
            log.warning("%s: %dx%d is odd-sized, which %s cannot hold: encoding yuv444p", self.path.name,
                        cc.width, cc.height, pix_fmt)
            pix_fmt = "yuv444p"
        cc.pix_fmt = pix_fmt
        if src.codec_context.sample_aspect_ratio:
            cc.sample_aspect_ratio = src.codec_context.sample_aspect_ratio  # anamorphic clips stay so
        cc.time_base = self.source.time_base
        out.time_base = self.source.time_base
        self._tags = {}
        for name in ("colorspace", "color_range", "color_primaries", "color_trc"):
            value = getattr(src.codec_context, name, None)
            if value:
                self._tags[name] = value
                try:
                    setattr(cc, name, value)
                except (AttributeError, TypeError, ValueError):
                    pass
        cc.options = s.encoder_options()
        if self.source.rotation:
            out.set_display_rotation(self.source.rotation)
        return out

    def _add_audio(self, src) -> tuple:
        """(source stream, output stream, remux?) for one audio stream of the source."""
        name = src.codec_context.name
        if name in self._out.supported_codecs:
            return src, self._out.add_stream_from_template(src), True
        log.info("%s: the output container cannot hold %s audio: re-encoding it to AAC", self.path.name, name)
        out = self._out.add_stream("aac", rate=src.codec_context.sample_rate or 48000)
        channels = src.codec_context.channels or 2
        out.codec_context.layout = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}.get(channels, "stereo")
        return src, out, False

    def _error(self, e: Exception) -> InvalidInputError:
        s = self.settings
        return InvalidInputError(f"{self.path}: cannot encode video with {s.codec} ({s.pix_fmt}, options "
                                 f"{s.encoder_options()}): {e}. Check --video-codec, --pix-fmt and --video-option.")

    # ---- audio, interleaved with the video by time ----

    def _mux_audio_until(self, seconds: float | None) -> None:
        while True:
            packet = self._pending_audio
            if packet is None:
                try:
                    packet = next(self._audio_packets)
                except StopIteration:
                    self._audio_packets = iter(())
                    break
            if packet.dts is not None and seconds is not None and float(packet.dts * packet.time_base) > seconds:
                self._pending_audio = packet
                return
            self._pending_audio = None
            self._mux_audio_packet(packet)
        if seconds is None:
            self._flush_audio_encoders()

    def _mux_audio_packet(self, packet) -> None:
        found = next((a for a in self._audio if a[0].index == packet.stream.index), None)
        if found is None:
            return
        try:
            self._mux_audio(packet, *found[1:])
        except (self.av.error.FFmpegError, ValueError) as e:
            src = found[0].codec_context.name
            raise InvalidInputError(f"{self.path.name}: the {src} audio of {self.source.path.name} cannot go into the "
                                    f"{self._out.format.name} output ({e}); convert its audio first, e.g. ffmpeg -i "
                                    f"{self.source.path.name} -c:v copy -c:a aac fixed.mkv") from None

    def _mux_audio(self, packet, out, remux: bool) -> None:
        if not remux:
            for frame in packet.decode():  # the empty packet at the end flushes the decoder
                for p in out.encode(frame):
                    self._out.mux(p)
            return
        if packet.size == 0 or packet.dts is None:
            return
        packet.stream = out
        self._out.mux(packet)

    def _flush_audio_encoders(self) -> None:
        for _, out, remux in self._audio:
            if not remux:
                for p in out.encode(None):
                    self._out.mux(p)

    # ---- video ----

    def write(self, frames: np.ndarray, pts: list[int] | np.ndarray) -> None:
        """Encode upright RGB uint8 frames (N, H, W, 3) with their presentation timestamps."""
        av = self.av
        frames = np.asarray(frames)
        h, w = (self.scale * n for n in self.source.upright_size)
        if frames.ndim != 4 or frames.shape[1:] != (h, w, 3) or frames.dtype != np.uint8:
            raise InvalidInputError(f"{self.path}: frames must be uint8 (N, {h}, {w}, 3), got "
                                    f"{frames.dtype} {frames.shape}.")
        try:
            self._write(frames, pts)
        except InvalidInputError:
            self.abort()
            raise
        except (av.error.FFmpegError, ValueError) as e:
            self.abort()
            raise self._error(e) from None

    def _write(self, frames: np.ndarray, pts) -> None:
        av = self.av
        cc = self._video.codec_context
        for rgb, t in zip(frames, pts):
            if self.source.rotation:
                rgb = np.ascontiguousarray(np.rot90(rgb, -self.source.rotation // 90))
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame = frame.reformat(format=cc.pix_fmt, dst_colorspace=self._tags.get("colorspace"),
                                   dst_color_range=self._tags.get("color_range"))
            frame.pts = int(t)
            frame.time_base = self.source.time_base
            for packet in self._video.encode(frame):
                self._mux_video(packet)
            self.frames_written += 1

    def _mux_video(self, packet) -> None:
        if packet.dts is not None:
            self._mux_audio_until(float(packet.dts * packet.time_base))
        self._out.mux(packet)

    def check(self) -> None:
        """Flush the encoder and copy the first second of audio: what the codec, its options and the
        container refuse shows here (:func:`check_output`)."""
        try:
            for packet in self._video.encode(None):
                self._mux_video(packet)
            self._mux_audio_until(1.0)
        except InvalidInputError:
            raise
        except (self.av.error.FFmpegError, ValueError) as e:
            raise self._error(e) from None

    def close(self) -> Path:
        """Flush the encoder, copy the rest of the audio, and move the file into place."""
        try:
            for packet in self._video.encode(None):
                self._mux_video(packet)
            self._mux_audio_until(None)
            self._out.close()
            self._in.close()
            os.replace(self._tmp, self.path)
        except InvalidInputError:
            self.abort()
            raise
        except self.av.error.FFmpegError as e:
            self.abort()
            raise self._error(e) from None
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the partial output (after an error or an interrupt)."""
        for c in (getattr(self, "_out", None), getattr(self, "_in", None)):
            try:
                if c is not None:
                    c.close()
            except Exception:  # noqa: BLE001 - already failing; the partial file goes either way
                pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def check_output(info: VideoInfo, path: str | os.PathLike, settings: VideoSettings | None = None,
                 scale: int = 1) -> None:
    """Encode one black frame and the first second of audio as :class:`VideoWriter` would write
    ``path``, into a scratch file that is removed at once: a codec, pixel format, option, container
    or audio stream that cannot be written raises ``InvalidInputError`` here, before any frame is
    restored."""
    path = Path(path)
    scratch = path.with_name(f".{path.stem}.check{path.suffix}")
    try:
        writer = VideoWriter(scratch, info, settings, scale)
        try:
            h, w = (scale * n for n in info.upright_size)
            writer.write(np.zeros((1, h, w, 3), np.uint8), [info.frame_pts[0] if info.frame_pts else 0])
            writer.check()
        finally:
            writer.abort()
    except InvalidInputError as e:  # named by the output it is about, not by the scratch file
        raise InvalidInputError(str(e).replace(str(scratch), str(path)).replace(scratch.name, path.name)) from None
