"""Restore files in this process: images one by one, videos segment by segment (bounded memory).

The command line's run without ``--ray``. Outputs are named and skipped as :mod:`gpen.runs.jobs`
says; a video is decoded once, restored in overlapping segments (:mod:`gpen.runs.segments`) and
encoded as it goes, with its audio.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

from ..errors import GPENError, MissingDependencyError, MissingWeightsError

from .imageio import write_file_atomic
from .jobs import (Item, RestoreOptions, RunReport, TaskTiming, lookup_landmarks, pending, restore_image,
                   restore_sequence_segment, restore_window, video_reference, worker_name)
from .segments import SegmentWindows

log = logging.getLogger(__name__)


def frame_bar(total: int, name: str, quiet: bool):
    """A progress bar in frames (tqdm, on stderr)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="frame", disable=quiet, file=sys.stderr, leave=False)


def restore_video(restorer, item: Item, options: RestoreOptions, landmarks: list | None = None,
                  quiet: bool = False) -> tuple[int, int]:
    """Restore one video file into ``item.output``; returns (frames, faces restored)."""
    from .video import VideoWriter, probe, read_frames

    info = probe(item.source)
    h, w = info.upright_size
    segments = options.segments(info.frames, h, w)
    windows = SegmentWindows(read_frames(info))
    reference = video_reference(item, options, info)
    ref_windows = SegmentWindows(read_frames(reference)) if hasattr(reference, "frame_pts") else None
    bar = frame_bar(info.frames, item.name, quiet)
    frames = faces = 0
    per_call = logging.getLogger("gpen.pipeline.restorer")  # one summary per clip below, not one per segment
    level = per_call.level
    per_call.setLevel(max(level, logging.WARNING))
    try:
        with VideoWriter(item.output, info, options.video, options.upscale) as writer:
            for seg in segments:
                window, pts = windows.take(seg)
                if not len(pts):
                    break
                done_before = bar.n
                ref = ref_windows.take(seg)[0] if ref_windows is not None else reference
                restored, n_faces = restore_window(restorer, window, seg, landmarks, options, ref,
                                                   progress=lambda k, base=done_before: bar.update(base + k - bar.n))
                a, _ = seg.core
                writer.write(restored, pts[a:a + restored.shape[0]])
                frames += restored.shape[0]
                faces += n_faces
    finally:
        per_call.setLevel(level)
        bar.close()
    if frames != info.frames:
        log.warning("%s: %d frames decoded of the %d its stream lists", item.name, frames, info.frames)
    return frames, faces


def sequence_segments(sequence: list[Item], options: RestoreOptions) -> list:
    """The segments of an image sequence (``--track-faces``), sized by its first image."""
    from .imageio import read_image

    if not sequence:
        return []
    h, w = read_image(sequence[0].source)[0].shape[:2]
    return options.segments(len(sequence), h, w)


def run_local(restorer, items: list[Item], options: RestoreOptions, *, image_landmarks: dict | None = None,
              video_landmarks: dict | None = None, overwrite: bool = False, quiet: bool = False,
              retries: int = 0) -> RunReport:
    """Restore ``items`` with one :class:`gpen.pipeline.restorer.FaceRestorer`. Every input is tried:
    one that fails is named in ``report.failed`` with the reason, and the run goes on; a helper
    network's weights or a package that is missing ends the run (raised: no input could be restored).
    An input whose restoring crashes (an error that is not a pack error: a decoder or a device that
    fails) is tried ``retries`` more times before it is named."""
    from tqdm import tqdm

    report = RunReport()
    todo, done = pending(items, overwrite)
    report.skipped = [it.output for it in done]
    if done:
        log.info("skipping %d input(s) whose output exists (--overwrite redoes them)", len(done))
    images = [it for it in todo if it.kind == "image"]
    bar = tqdm(total=len(images), desc="restoring", unit="image", disable=quiet or len(images) < 2, file=sys.stderr)
    try:
        worker = worker_name()
        if options.image_sequence:  # the images are the frames of one video: restored in segments, like a clip
            todo = [it for it in todo if it.kind == "video"]
            sequence = [it for it in items if it.kind == "image"]
            for seg in sequence_segments(sequence, options):
                if all(it.output.exists() and not overwrite for it in sequence[seg.start:seg.stop]):
                    continue
                started, clock = time.time(), time.perf_counter()
                name = f"{sequence[0].name}[{seg.start}:{seg.stop}]"  # named as a video segment is
                try:
                    out = restore_sequence_segment(restorer, sequence, seg, options, image_landmarks)
                    for file_name, data in out.files:
                        write_file_atomic(sequence[0].output.with_name(file_name), data)
                except (MissingWeightsError, MissingDependencyError):
                    raise
                except Exception as e:  # noqa: BLE001 - named in the report; the other segments go on
                    report.failed[name] = failure(e)
                    continue
                report.timings.append(TaskTiming(name, worker, started, time.perf_counter() - clock))
                report.written.extend(it.output for it in sequence[seg.start:seg.stop])
                report.faces += out.faces
                bar.update(seg.stop - seg.start)
        for item in todo:
            for attempt in range(retries + 1):
                started = time.time()
                try:
                    faces, seconds = _restore_item(restorer, item, options, image_landmarks, video_landmarks, report,
                                                   quiet or len(images) > 1, quiet)
                except (MissingWeightsError, MissingDependencyError):
                    raise  # not about this input: every other one would fail the same way (and retry the download)
                except Exception as e:  # noqa: BLE001 - named in the report; the other inputs go on
                    if not isinstance(e, GPENError) and attempt < retries:  # a crash: maybe not the next time
                        log.warning("%s: %s; trying again (try %d of %d)", item.name, failure(e), attempt + 2,
                                    retries + 1)
                        continue
                    report.failed[item.name] = failure(e)
                    bar.update(item.kind == "image")
                    break
                bar.update(item.kind == "image")
                report.timings.append(TaskTiming(item.name, worker, started, seconds))
                report.written.append(item.output)
                report.faces += faces
                break
    finally:
        bar.close()
    return report


def _restore_item(restorer, item: Item, options: RestoreOptions, image_landmarks: dict | None,
                  video_landmarks: dict | None, report: RunReport, no_face_bar: bool, quiet: bool) -> tuple[int, float]:
    """Restore one input into its output file(s); returns (faces restored, seconds of the work)."""
    clock = time.perf_counter()
    if item.kind == "video":
        frames, faces = restore_video(restorer, item, options, lookup_landmarks(video_landmarks, item), quiet)
        seconds = time.perf_counter() - clock  # decoding, restoring and encoding the clip
        report.frames += frames
        log.info("%s: %d frames, %d face(s) restored", item.name, frames, faces)
        return faces, seconds
    with face_bar(item.name, no_face_bar) as progress:
        out = restore_image(restorer, item, options, lookup_landmarks(image_landmarks, item), progress=progress)
    seconds = time.perf_counter() - clock  # as a Ray worker's: reading, restoring, encoding
    for name, data in out.files:
        write_file_atomic(item.output.with_name(name), data)
    log.info("%s: %s", item.name, out.info)
    return out.faces, seconds


def failure(e: Exception) -> str:
    """The reason an input failed, for the report: a pack error's message as it is, anything else
    with its type (and its traceback in the debug log)."""
    if isinstance(e, GPENError):
        return str(e)
    log.debug("unexpected error", exc_info=e)
    return f"{type(e).__name__}: {e}"


@contextmanager
def face_bar(name: str, disable: bool):
    """A progress bar over the faces of one image (tqdm on stderr, shown from the first report), as
    ``progress(done, total)``; the restorer's own one-line summary is left to the caller meanwhile."""
    from tqdm import tqdm

    bars = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=name, unit="face", disable=disable, file=sys.stderr, leave=False))
        bar = bars[0]
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    per_call = logging.getLogger("gpen.pipeline.restorer")  # the run logs one summary line per input
    level = per_call.level
    per_call.setLevel(max(level, logging.WARNING))
    try:
        yield progress
    finally:
        per_call.setLevel(level)
        for bar in bars:
            bar.close()
