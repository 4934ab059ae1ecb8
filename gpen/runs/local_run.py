"""Restore files in this process: images one by one, videos segment by segment (bounded memory).

The command line's run without ``--ray``. Outputs are named and skipped as :mod:`gpen.runs.jobs`
says; a video is decoded once, restored in overlapping segments (:mod:`gpen.runs.segments`) and
encoded as it goes, with its audio.
"""

from __future__ import annotations

import logging
import sys
import time

from ..errors import GPENError
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


def _restore_item(restorer, item: Item, options: RestoreOptions, image_landmarks: dict | None,
                  video_landmarks: dict | None, report: RunReport, quiet: bool) -> int:
    """Restore one input into its output file(s); returns the faces restored."""
    if item.kind == "video":
        frames, faces = restore_video(restorer, item, options, lookup_landmarks(video_landmarks, item), quiet)
        report.frames += frames
        log.info("%s: %d frames, %d face(s) restored", item.name, frames, faces)
        return faces
    out = restore_image(restorer, item, options, lookup_landmarks(image_landmarks, item))
    for name, data in out.files:
        write_file_atomic(item.output.with_name(name), data)
    log.info("%s: %s", item.name, out.info)
    return out.faces


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
    """Restore ``items`` with one :class:`gpen.pipeline.restorer.FaceRestorer`.

    A :class:`gpen.errors.GPENError` (a bad input or setting) stops the run: it is raised. Any other
    error while restoring an input (a decoder or a device that fails) is a failed try of that input:
    it is tried ``retries`` times more, then named in ``report.failed`` while the other inputs go on.
    """
    from tqdm import tqdm

    report = RunReport()
    todo, done = pending(items, overwrite)
    report.skipped = [it.output for it in done]
    if done:
        log.info("skipping %d input(s) whose output exists (--overwrite redoes them)", len(done))
    if options.reference is not None and not options.image_sequence:  # every clip's reference, before any work
        from .video import probe

        for item in todo:
            if item.kind == "video":
                video_reference(item, options, probe(item.source))
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
                out = restore_sequence_segment(restorer, sequence, seg, options, image_landmarks)
                for name, data in out.files:
                    write_file_atomic(sequence[0].output.with_name(name), data)
                name = f"{sequence[0].name}[{seg.start}:{seg.stop}]"  # named as a video segment is
                report.timings.append(TaskTiming(name, worker, started, time.perf_counter() - clock))
                report.written.extend(it.output for it in sequence[seg.start:seg.stop])
                report.faces += out.faces
                bar.update(seg.stop - seg.start)
        for item in todo:
            for attempt in range(retries + 1):
                started, clock = time.time(), time.perf_counter()
                try:
                    faces = _restore_item(restorer, item, options, image_landmarks, video_landmarks, report, quiet)
                except GPENError:
                    raise  # the input or a setting is wrong: one clear message (a retry would not help)
                except Exception as e:  # noqa: BLE001 - a crash (decoder, device): a failed try of this input
                    why = f"{type(e).__name__}: {e}"
                    report.timings.append(TaskTiming(item.name, worker, started, time.perf_counter() - clock))
                    if attempt < retries:
                        log.warning("%s: %s; trying again (attempt %d of %d)", item.name, why, attempt + 2, retries + 1)
                        continue
                    log.error("%s: %s; giving up after %d tries", item.name, why, retries + 1)
                    report.failed[item.name] = why
                    break
                if item.kind == "image":
                    bar.update(1)
                report.timings.append(TaskTiming(item.name, worker, started, time.perf_counter() - clock))
                report.written.append(item.output)
                report.faces += faces
                break
    finally:
        bar.close()
    return report
