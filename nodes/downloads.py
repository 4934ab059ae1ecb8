"""Downloads from inside ComfyUI: the released files the loader offers, and ComfyUI's progress bar.

The loader's ``model_name`` list shows, after the files on disk, every released GPEN file that is
not on disk yet, marked with :data:`DOWNLOAD_MARK` (``GPEN-BFR-2048.pth [download]``). Running
the loader with such an entry downloads the file (verified, resumable: :mod:`gpen.weights.download`)
into ``models/facerestore_models`` with ComfyUI's progress bar on the node, then loads it; a
workflow saved with the marked name keeps working once the file is there. Downloads that the core
starts itself (face detector and parser weights) report to the node that is running through the
reporter :func:`install_download_progress` installs.

ComfyUI's modules are imported inside the functions, so this module imports without ComfyUI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

from ..gpen.weights.download import set_progress_reporter
from ..gpen.weights.models import download_file
from ..gpen.weights.registry import REGISTRY, WeightsFile, gpen_files
from .folders import RESTORE_MODELS, restore_model_files

logger = logging.getLogger(__name__)

DOWNLOAD_MARK = " [download]"
"""Suffix of a ``model_name`` entry that is downloaded when the loader runs."""


def split_download_name(model_name: str) -> tuple[str, bool]:
    """``"GPEN-BFR-2048.pth [download]"`` -> ``("GPEN-BFR-2048.pth", True)``; other names unchanged, False."""
    if model_name.endswith(DOWNLOAD_MARK):
        return model_name[: -len(DOWNLOAD_MARK)], True
    return model_name, False


def not_downloaded(on_disk: Iterable[str]) -> list[str]:
    """Marked entries for the released GPEN files absent from ``on_disk`` (file names, maybe in subfolders).

    ``.pth`` files first (512, 1024, 2048, 256: the usual choice first), then the ``.onnx`` exports.
    """
    present = {os.path.basename(n).lower() for n in on_disk}
    order = {"GPEN-BFR-512": 0, "GPEN-BFR-1024": 1, "GPEN-BFR-2048": 2, "GPEN-BFR-256": 3}
    specs = sorted(gpen_files(), key=lambda f: (f.is_onnx, order.get(f.model, 9)))
    return [f"{f.name}{DOWNLOAD_MARK}" for f in specs if f.name.lower() not in present]


def restore_model_names() -> list[str]:
    """The loader's drop-down: the files on disk, then the released GPEN files not on disk yet, marked."""
    files = restore_model_files()
    return [*files, *not_downloaded(files)]


class ComfyProgress:
    """A download progress callback drawing ComfyUI's progress bar on the running node.

    The bar is created at the first report that knows the total; updates are sent at most once per
    percent (every update is a message to the browser).
    """

    def __init__(self, name: str, bar_factory: Callable[[int], object] | None = None) -> None:
        self.name = name
        self._factory = bar_factory
        self._bar = None
        self._last = -1

    def __call__(self, done: int, total: int | None) -> None:
        if not total:
            return
        if self._bar is None:
            factory = self._factory
            if factory is None:
                import comfy.utils

                factory = comfy.utils.ProgressBar
            self._bar = factory(total)
        percent = done * 100 // total
        if percent != self._last or done >= total:
            self._last = percent
            self._bar.update_absolute(done, total)


def comfy_reporter(spec: WeightsFile) -> ComfyProgress:
    """The progress reporter for :func:`gpen.weights.download.set_progress_reporter` inside ComfyUI."""
    return ComfyProgress(spec.name)


def install_download_progress() -> None:
    """Show every download the core starts without a callback (detector, parser) on ComfyUI's bar."""
    set_progress_reporter(comfy_reporter)


def restore_models_dir() -> str:
    """``ComfyUI/models/facerestore_models``: where the loader's downloads go."""
    import folder_paths

    return os.path.join(folder_paths.models_dir, RESTORE_MODELS)


def fetch_requested(model_name: str) -> str | None:
    """For a marked ``model_name``: the file's path, downloaded first when it is not in any
    ``facerestore_models`` folder yet. None for an unmarked name (a file the user has)."""
    import folder_paths

    file_name, wanted = split_download_name(model_name)
    if not wanted:
        return None
    found = folder_paths.get_full_path(RESTORE_MODELS, file_name)
    if found is not None:
        return found
    spec = REGISTRY.get(file_name)
    if spec is None or spec.model is None:
        from ..gpen.errors import MissingWeightsError

        raise MissingWeightsError(f"'{file_name}' is not a released GPEN file this pack can download; pick a file "
                                  f"from the list (refresh the page with R).")
    logger.info("downloading %s into %s", file_name, restore_models_dir())
    return str(download_file(spec, restore_models_dir(), progress=True, progress_callback=ComfyProgress(file_name)))
