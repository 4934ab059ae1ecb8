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

from ..errors import InvalidInputError
from .imageio import list_inputs
from .jobs import ModelSpec, RestoreOptions, RunReport, plan_outputs, read_landmarks_file

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
    unless ``overwrite``. An input whose restoring crashes (a worker process that dies, a decoder
    or device that raises) is tried ``retries`` more times (a Ray run: ``ray.retries``), then named
    in the report's ``failed`` while the others go on; a local run raises a
    :class:`gpen.errors.GPENError` (a bad input or setting) at once. Returns what was written,
    skipped and what failed.
    """
    from ..weights.models import resolve_model

    options = (options or RestoreOptions()).check()
    for tries in (retries, ray.retries if ray is not None else 0):
        if tries < 0:
            raise InvalidInputError(f"retries must be >= 0, got {tries}.")
    items = plan_outputs(list_inputs(inputs), output, inputs)
    if any(it.kind == "video" for it in items):
        from .video import require_av

        require_av()
    image_lms, video_lms = read_landmarks_file(landmarks) if landmarks else (None, None)
    if options.save_crops and any(it.kind == "video" for it in items):
        log.warning("--save-crops writes the crops of images only, not of video frames")
    path = Path(resolve_model(model, allow_download=options.allow_download, progress=not quiet))
    spec = ModelSpec(str(path.resolve()) if path.exists() else str(path), device, dtype, threads, compile)
    if ray is not None:
        from .distributed import run_ray

        return run_ray(items, spec, options, ray, image_landmarks=image_lms, video_landmarks=video_lms,
                       overwrite=overwrite, quiet=quiet, restorer_factory=restorer_factory)
    from .local_run import run_local

    restorer = restorer_factory() if restorer_factory is not None else spec.build()
    return run_local(restorer, items, options, image_landmarks=image_lms, video_landmarks=video_lms,
                     overwrite=overwrite, quiet=quiet, retries=retries)
