"""``restore_files``: one restore run over files and folders, in this process or on a Ray cluster.

The command line's ``restore`` and the Python API both come here::

    from gpen.runs.runner import restore_files
    from gpen.runs.distributed import RayConfig

    restore_files(["clips/", "photo.jpg"], "out/", model="GPEN-BFR-512")                 # this process
    restore_files(["clips/"], "out/", ray=RayConfig(address="auto"))                     # a Ray cluster
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..errors import GPENError, InvalidInputError
from .imageio import list_inputs
from .jobs import (Item, ModelSpec, RestoreOptions, RunReport, pending, pick_device, pick_dtype, plan_outputs,
                   read_landmarks_file, video_reference)

log = logging.getLogger(__name__)


def restore_files(inputs: list[str | os.PathLike], output: str | os.PathLike, *, model: str = "GPEN-BFR-512",
                  options: RestoreOptions | None = None, device: str = "auto", dtype: str = "auto",
                  threads: int | None = None, compile: bool = False, landmarks: str | os.PathLike | None = None,
                  overwrite: bool = False, ray=None, quiet: bool = False, restorer_factory=None,
                  retries: int = 2) -> RunReport:
    """Restore every image and video of ``inputs`` (files or folders) into the folder ``output``.

    ``model``: a weights file or a released model name (found or downloaded). ``options``: a
    :class:`gpen.runs.jobs.RestoreOptions`. ``landmarks``: a landmarks JSON file (see
    ``python -m gpen restore --help``). ``ray``: None to run here, or a
    :class:`gpen.runs.distributed.RayConfig` to run on a Ray cluster. Outputs that exist are skipped
    unless ``overwrite``. Bad arguments (options, output folder, device, threads) raise
    ``InvalidInputError`` before any file is read. Every input is tried: the report names what
    was written, skipped and, per input name, why an input failed. An input whose restoring crashes
    (an error that is not a pack error: a decoder or device failing; on Ray, a worker process that
    dies) is tried ``retries`` more times first (on Ray: ``ray.retries``).
    """
    from ..weights.models import resolve_model

    options = (options or RestoreOptions()).check()
    if not str(output).strip():
        raise InvalidInputError("the output folder (-o) is empty: name the folder to write the restored files into.")
    if threads is not None and int(threads) < 1:
        raise InvalidInputError(f"--threads must be 1 or more (torch CPU threads per process), got {threads}; "
                                f"leave it out for torch's default.")
    for tries in (retries, ray.retries if ray is not None else 0):
        if tries < 0:
            raise InvalidInputError(f"--retries must be 0 or more, got {tries}.")
    if ray is None:
        pick_device(device)  # a device this machine lacks is refused here, before any file is read
    pick_dtype(dtype, torch.device("cpu"))
    items = plan_outputs(list_inputs(inputs), output, inputs)
    check_output_folder(output)
    if any(it.kind == "video" for it in items):
        from .video import require_av

        require_av()
    image_lms, video_lms = read_landmarks_file(landmarks) if landmarks else (None, None)
    if options.save_crops and any(it.kind == "video" for it in items):
        log.warning("--save-crops writes the crops of images only, not of video frames")
    todo, _ = pending(items, overwrite)
    problems = preflight(todo, options)
    order = {it.name: k for k, it in enumerate(items)}
    items = [it for it in items if it.name not in problems]
    if not items:
        return RunReport(failed=problems)
    path = Path(resolve_model(model, allow_download=options.allow_download, progress=not quiet))
    spec = ModelSpec(str(path.resolve()) if path.exists() else str(path), device, dtype, threads, compile)
    if ray is not None:
        from .distributed import run_ray

        report = run_ray(items, spec, options, ray, image_landmarks=image_lms, video_landmarks=video_lms,
                         overwrite=overwrite, quiet=quiet, restorer_factory=restorer_factory)
    else:
        from .local_run import run_local

        restorer = restorer_factory() if restorer_factory is not None else spec.build()
        report = run_local(restorer, items, options, image_landmarks=image_lms, video_landmarks=video_lms,
                           overwrite=overwrite, quiet=quiet, retries=retries)
    failed = {**problems, **report.failed}
    report.failed = dict(sorted(failed.items(), key=lambda kv: order.get(kv[0], len(order))))  # in input order
    return report


def check_output_folder(output: str | os.PathLike) -> Path:
    """The output folder, created if needed; ``InvalidInputError`` when it is empty, a file, or cannot
    be created or written (checked by writing a file into it), before any work."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"the output folder {out} is a file: give -o a folder (it is created if needed).")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidInputError(f"cannot create the output folder {out} ({e.strerror or e}): choose a folder you "
                                f"can write to.") from None
    probe = out / f".gpen-write-check.{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InvalidInputError(f"cannot write into the output folder {out} ({e.strerror or e}): choose a folder "
                                f"you can write to.") from None
    return out


def preflight(items: list[Item], options: RestoreOptions) -> dict[str, str]:
    """Input name -> why it cannot be restored, for what shows before restoring: image headers that
    claim more pixels than can be decoded, videos that cannot be read or whose output cannot be
    encoded (codec, pixel format, options, container, audio; :func:`gpen.runs.video.check_output`)."""
    from .imageio import check_image_header

    problems = {}
    for it in items:
        try:
            if it.kind == "image":
                check_image_header(it.source)
            else:
                from .video import check_output, probe

                check_output(probe(it.source, count=False), it.output, options.video, options.upscale)
                if options.reference is not None:  # a reference clip of the clip's size and length
                    video_reference(it, options, probe(it.source))
        except GPENError as e:
            problems[it.name] = str(e)
    return problems
