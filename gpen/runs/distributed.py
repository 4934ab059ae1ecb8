"""Restore many files on a Ray cluster with Ray Data (optional: ``pip install "ray[data]"``).

The pipeline: the inputs are listed on the driver (images, and videos cut into overlapping
segments by the same plan as the local run, :mod:`gpen.runs.segments`) -> ``ray.data.from_items`` ->
``map_batches`` with :class:`RestoreWorker`, an actor class that holds one loaded GPEN
:class:`~gpen.pipeline.restorer.FaceRestorer` per worker (one per GPU with ``num_gpus=1`` where the
cluster has GPUs, else CPU workers of ``threads_per_worker`` torch threads) and reads, restores
and encodes each item -> the driver writes the results, in order, with the same names as the
local run (videos are encoded on the driver as their segments arrive, with their audio).

Inputs and the model file must be readable at the same path on every node (a shared file
system); outputs are written on the driver. A failed item is tried again (``retries``) and then
reported by name, never dropped; outputs that exist are skipped, so a rerun resumes.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import GPENError, InvalidInputError, MissingDependencyError
from .imageio import write_file_atomic
from .jobs import (Item, ModelSpec, RestoreOptions, RunReport, TaskTiming, lookup_landmarks, pending, restore_image,
                   restore_window, video_reference, worker_name)

log = logging.getLogger(__name__)

INSTALL_RAY = 'pip install "ray[data]"'
LOST = "WorkerDied: the worker process ended while restoring it (killed for memory, or a crash)"


def require_ray():
    """The ``ray`` module with Ray Data, or MissingDependencyError naming the pip command."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingDependencyError(f"--ray needs Ray Data, which is not installed: {INSTALL_RAY}.") from None
    return ray


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide: ``address`` of a running cluster (``auto``, ``ray://head:10001``, ...; None:
    ``RAY_ADDRESS`` when set, else a new local cluster of ``num_cpus`` CPUs), ``workers`` (default:
    one per GPU, else one per ``threads_per_worker`` CPUs), ``retries`` per failed item."""

    address: str | None = None
    workers: int | None = None
    num_cpus: int | None = None
    threads_per_worker: int = 1
    retries: int = 2


@dataclass(frozen=True)
class Task:
    """One unit of work: an image, or one segment of a video (with the clip's VideoInfo)."""

    item: Item
    landmarks: object = None
    segment: object = None
    info: object = None
    reference: object = None  # a video's reference: its VideoInfo, or one picture

    @property
    def name(self) -> str:
        """The input's name; a segment's adds its frames: ``clip.mp4[64:128]``."""
        seg = self.segment
        return self.item.name if seg is None else f"{self.item.name}[{seg.start}:{seg.stop}]"


class RestoreWorker:
    """The Ray Data actor: one loaded model; each row ``{"task": pickled Task, "index": its number}``
    becomes ``{"index", "error": "" or the reason, "retry": bool, "result": pickled result, "worker":
    host:pid, "started": epoch seconds, "seconds": how long it took}``."""

    def __init__(self, spec: ModelSpec, options: RestoreOptions, factory: Callable[[], object] | None = None,
                 models_root: str | None = None) -> None:
        if models_root is not None:  # the driver's models folder, not one inside Ray's copy of the package
            from ..weights.paths import ENV_MODELS_DIR

            os.environ[ENV_MODELS_DIR] = models_root
        self.options = options
        self.error = None
        try:
            self.restorer = factory() if factory is not None else spec.build()
        except GPENError as e:  # a model that cannot load fails every item with its reason
            self.error = f"{type(e).__name__}: {e}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors, retry, results, started, seconds = [], [], [], [], []
        for blob in batch["task"]:
            task: Task = pickle.loads(blob)
            started.append(time.time())
            clock = time.perf_counter()
            try:
                if self.error is not None:
                    raise GPENError(self.error)
                results.append(pickle.dumps(self.run(task), protocol=5))
                errors.append("")
                retry.append(False)
            except Exception as e:  # noqa: BLE001 - reported by name on the driver
                log.warning("%s: %s: %s", task.item.name, type(e).__name__, e)
                results.append(b"")
                errors.append(f"{type(e).__name__}: {e}")
                retry.append(not isinstance(e, InvalidInputError) and self.error is None)
            seconds.append(time.perf_counter() - clock)
        return {"index": np.asarray(batch["index"]), "error": np.array(errors, dtype=object), "retry": np.array(retry),
                "result": np.array(results, dtype=object), "started": np.array(started), "seconds": np.array(seconds),
                "worker": np.array([worker_name()] * len(errors), dtype=object)}

    def run(self, task: Task):
        """The result of one task: image files (name -> bytes) or a segment's (frames, pts, faces)."""
        if task.segment is None:
            return restore_image(self.restorer, task.item, self.options, task.landmarks)
        from .video import read_frames

        seg = task.segment
        decoded = list(read_frames(task.info, seg.context_start, seg.context_stop))
        frames = np.stack([f for f, _ in decoded])
        ref = task.reference
        if ref is not None and hasattr(ref, "frame_pts"):  # a reference clip: the same frames of it
            ref = np.stack([f for f, _ in read_frames(ref, seg.context_start, seg.context_stop)])
        restored, faces = restore_window(self.restorer, frames, seg, task.landmarks, self.options, ref)
        a, _ = seg.core
        return restored, [p for _, p in decoded][a:a + restored.shape[0]], faces


def _tasks(item: Item, options: RestoreOptions, image_lms: dict | None, video_lms: dict | None) -> list[Task]:
    source = Item(item.source.resolve(), item.kind, item.output)  # workers run elsewhere: absolute paths
    if item.kind == "image":
        return [Task(source, lookup_landmarks(image_lms, item))]
    from .video import probe

    info = probe(source.source)
    h, w = info.upright_size
    lms = lookup_landmarks(video_lms, item)
    ref = video_reference(item, options, info)
    return [Task(source, lms, seg, info, ref) for seg in options.segments(info.frames, h, w)]


def helper_weights(items: list[Item], options: RestoreOptions, image_lms: dict | None,
                   video_lms: dict | None) -> RestoreOptions:
    """Find (or download) on the driver the weights of the helper networks the run needs (detector,
    face parser, occluders), before any work: a missing file is an error naming the folders the user
    knows. Returns ``options`` for the workers: they search the folders the files were found in (they
    run inside Ray's temporary copy of the package, whose own ``models`` folder is empty) and never
    download."""
    from ..faces.detect import RETINAFACE_MODELS
    from ..faces.occlusion import OCCLUDER_MODELS, parse_occluders
    from ..faces.parsing import PARSING_MODELS
    from ..weights.download import ensure_weights

    given = [Path(d).expanduser().absolute() for d in options.restore.get("detector_dirs", ())]
    files = []
    if not options.aligned:
        detects = any((image_lms if it.kind == "image" else video_lms) is None
                      or it.name not in (image_lms if it.kind == "image" else video_lms) for it in items)
        if detects and options.detector in RETINAFACE_MODELS:
            files.append(RETINAFACE_MODELS[options.detector][1])
        if options.parsing:
            files.append(PARSING_MODELS["parsenet"][0])
        files.extend(OCCLUDER_MODELS[name] for name in parse_occluders(options.occlusion))
    folders = list(given)
    for name in files:
        folder = ensure_weights(name, "facedetection", given, allow_download=options.allow_download).parent.absolute()
        if folder not in folders:
            folders.append(folder)
    return replace(options, allow_download=False,
                   restore={**options.restore, "detector_dirs": tuple(str(d) for d in folders)})


def _connect(ray, config: RayConfig, quiet: bool) -> bool:
    """Join or start a cluster; True when this call started it (and shuts it down after)."""
    if ray.is_initialized():
        return False
    address = config.address or os.environ.get("RAY_ADDRESS") or "local"
    package = str(Path(__file__).resolve().parents[1])
    kwargs = dict(runtime_env={"py_modules": [package]}, log_to_driver=not quiet, configure_logging=False)
    if address == "local":
        kwargs.update(num_cpus=config.num_cpus, include_dashboard=False)
    elif config.num_cpus is not None:
        log.warning("--ray-cpus applies to a local cluster only; %s keeps its own resources", address)
    ray.init(address=address, **kwargs)
    return True


def _worker_resources(ray, config: RayConfig, spec: ModelSpec) -> tuple[int, dict, ModelSpec]:
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 1))
    if gpus and spec.device in ("auto", "cuda"):
        return config.workers or gpus, {"num_gpus": 1, "num_cpus": 1}, spec
    threads = spec.threads or config.threads_per_worker
    workers = config.workers or max(1, cpus // threads)
    return workers, {"num_cpus": threads}, replace(spec, threads=threads)


def run_ray(items: list[Item], spec: ModelSpec, options: RestoreOptions, config: RayConfig | None = None, *,
            image_landmarks: dict | None = None, video_landmarks: dict | None = None, overwrite: bool = False,
            quiet: bool = False, restorer_factory: Callable[[], object] | None = None) -> RunReport:
    """Restore ``items`` on a Ray cluster (see the module docstring); failures are in ``report.failed``.

    ``restorer_factory``: builds the restorer in each worker instead of loading ``spec`` (a custom
    or wrapped :class:`~gpen.pipeline.restorer.FaceRestorer`; it is pickled to the workers).
    """
    ray = require_ray()
    config = config or RayConfig()
    if options.image_sequence:
        raise InvalidInputError("--track-faces (images as the frames of one video) runs in this process only: "
                                "drop --ray, or make the frames a video file.")
    if options.reference is not None:  # workers run elsewhere: absolute paths
        options = replace(options, reference=str(Path(options.reference).resolve()))
    report = RunReport()
    todo, done = pending(items, overwrite)
    if todo:
        options = helper_weights(todo, options, image_landmarks, video_landmarks)
    report.skipped = [it.output for it in done]
    if done:
        log.info("skipping %d input(s) whose output exists (--overwrite redoes them)", len(done))
    if not todo:
        return report
    if quiet:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    started = _connect(ray, config, quiet)
    try:
        workers, resources, worker_spec = _worker_resources(ray, config, spec)
        log.info("Ray: %d worker(s), %s each", workers, resources)
        remaining, final = todo, {}
        for attempt in range(config.retries + 1):
            if attempt:
                log.warning("retrying %d failed input(s) (attempt %d of %d): %s", len(remaining), attempt + 1,
                            config.retries + 1, ", ".join(it.name for it in remaining))
            failed = _run_round(ray, remaining, worker_spec, options, workers, resources, image_landmarks,
                                video_landmarks, restorer_factory, report, quiet)
            final.update({it: why for it, (why, _) in failed.items()})
            for it in remaining:
                if it not in failed:
                    final.pop(it, None)
            remaining = [it for it, (_, again) in failed.items() if again]
            if not remaining:
                break
        report.failed = {it.name: why for it, why in final.items()}
    finally:
        if started:
            ray.shutdown()
    return report


def _run_round(ray, items: list[Item], spec: ModelSpec, options: RestoreOptions, workers: int, resources: dict,
               image_lms, video_lms, factory, report: RunReport, quiet: bool) -> dict[Item, tuple[str, bool]]:
    """One pass over ``items``; returns the failed ones: item -> (reason, worth retrying)."""
    from tqdm import tqdm

    failed: dict[Item, tuple[str, bool]] = {}
    tasks: list[Task] = []
    for item in items:
        try:
            tasks.extend(_tasks(item, options, image_lms, video_lms))
        except GPENError as e:
            failed[item] = (f"{type(e).__name__}: {e}", False)
    if not tasks:
        return failed
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # segments of a video arrive in order
    ctx.enable_progress_bars = False
    ctx.max_errored_blocks = -1  # a task whose worker died is dropped (and found missing below), not fatal
    rows = [{"task": pickle.dumps(t, protocol=5), "index": i} for i, t in enumerate(tasks)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    # A worker process that dies (killed for memory, a crash in native code) is restarted, but the task it
    # held is not run again by Ray (max_task_retries=0): it is a failed try of its input, tried again by
    # the next round as far as ``retries`` allows. One task in flight per worker, so that a death costs
    # a try of the input it held only.
    pool = ray.data.ActorPoolStrategy(size=min(workers, len(rows)), max_tasks_in_flight_per_actor=1)
    from ..weights.paths import models_root

    kwargs = {"spec": spec, "options": options, "factory": factory, "models_root": os.path.abspath(models_root())}
    with warnings.catch_warnings():  # Ray 2.6x names no other way to set the actors' restart limits
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.map_batches(RestoreWorker, fn_constructor_kwargs=kwargs, batch_size=1, compute=pool,
                            max_restarts=-1, max_task_retries=0, **resources)
    total = sum(1 if t.segment is None else t.segment.stop - t.segment.start for t in tasks)
    bar = tqdm(total=total, desc="restoring (Ray)", unit="frame", disable=quiet, file=sys.stderr)
    by_output = {it.output: it for it in items}
    video = _VideoOutput(options, report)

    def fail(task: Task, why: str, again: bool) -> None:
        key = by_output[task.item.output]
        if key not in failed:
            failed[key] = (why, again)
        video.abort(task.item.output)

    done = 0  # tasks before this one have a row, or were found lost
    try:
        try:
            for row in ds.iter_rows():
                index = int(row["index"])
                for lost in tasks[done:index]:
                    fail(lost, LOST, True)
                done = index + 1
                task = tasks[index]
                key = by_output[task.item.output]
                report.timings.append(TaskTiming(task.name, str(row["worker"]), float(row["started"]),
                                                 float(row["seconds"])))
                bar.update(1 if task.segment is None else task.segment.stop - task.segment.start)
                if key in failed:
                    continue  # an earlier segment of this video failed
                try:
                    if row["error"]:
                        fail(task, row["error"], bool(row["retry"]))
                    elif task.segment is None:
                        result = pickle.loads(row["result"])
                        for name, data in result.files:
                            write_file_atomic(task.item.output.with_name(name), data)
                        report.written.append(task.item.output)
                        report.faces += result.faces
                    else:
                        video.add(task, pickle.loads(row["result"]))
                except GPENError as e:  # this output cannot be written (e.g. the encoder refuses an option)
                    fail(task, f"{type(e).__name__}: {e}", False)
        except ray.exceptions.RayError as e:  # the pool itself failed (e.g. workers die as they start)
            log.warning("Ray stopped this round: %s", " ".join(str(e).split())[:300])
            for lost in tasks[done:]:
                fail(lost, f"{LOST} ({type(e).__name__})", True)
            done = len(tasks)
        for lost in tasks[done:]:
            fail(lost, LOST, True)
    finally:
        video.abort()
        bar.close()
    return failed


class _VideoOutput:
    """The video being written on the driver: opened at its first segment, closed after its last."""

    def __init__(self, options: RestoreOptions, report: RunReport) -> None:
        self.options, self.report = options, report
        self.writer = None
        self.frames = self.faces = 0

    def add(self, task: Task, result) -> None:
        from .video import VideoWriter

        frames, pts, faces = result
        if task.segment.index == 0:
            self.abort()
            self.writer = VideoWriter(task.item.output, task.info, self.options.video, self.options.upscale)
            self.frames = self.faces = 0
        self.writer.write(frames, pts)
        self.frames += frames.shape[0]
        self.faces += faces
        if task.segment.stop >= task.info.frames:
            self.writer.close()
            self.writer = None
            self.report.written.append(task.item.output)
            self.report.frames += self.frames
            self.report.faces += self.faces

    def abort(self, output: Path | None = None) -> None:
        """Drop the partial video (only if it is ``output``, when given)."""
        if self.writer is not None and (output is None or self.writer.path == output):
            self.writer.abort()
            self.writer = None
