"""GPEN model names and files: resolve ``GPEN-BFR-512`` or a path to a checked weights file, download them.

Checks of a downloaded GPEN file, on top of the size and sha256 the registry knows:

- a released ``.pth`` must have exactly the tensor layout of its released model (every name and
  shape), whatever source it came from (Hugging Face, ModelScope's ``pytorch_model.pt``, OSS);
- a file from any other URL (:func:`download_url`) must be a loadable GPEN checkpoint;
- a known ``.onnx`` is checked by its size and sha256 (its graph is read when it is loaded).

The format of a file being checked comes from its final name, never from the ``.part`` name it has
while downloading.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

from .download import ProgressCallback, Validator, download
from .registry import REGISTRY, RESTORE, WeightsFile, gpen_files
from ..errors import InvalidInputError, ModelLoadError
from ..model.checkpoint import build_network
from ..model.files import WEIGHT_SUFFIXES
from ..model.layouts import RELEASED_MODELS
from ..model.loader import check_released_file, read_weights_file, resolve_released

KIND = RESTORE
DOWNLOADABLE_SUFFIXES = (*WEIGHT_SUFFIXES, ".onnx")


def check_gpen_file(path: Path, suffix: str | None = None) -> None:
    """Raise ``ModelLoadError`` unless ``path`` is a GPEN checkpoint this pack can load (any size)."""
    suffix = (suffix or path.suffix).lower()
    if suffix == ".onnx":
        from ..model.onnx_loading import load_onnx_model

        load_onnx_model(path)
        return
    build_network(read_weights_file(path, suffix=suffix), path.name)


def validator_for(spec: WeightsFile) -> Validator | None:
    """The check a downloaded ``spec`` must pass besides its size and sha256 (None for a known ``.onnx``)."""
    if spec.model is None or spec.is_onnx:
        return None
    suffix = Path(spec.name).suffix
    return lambda p: check_released_file(p, spec.model, suffix=suffix)


def files_for(name: str, onnx: bool = False) -> WeightsFile:
    """The registry entry meant by ``name``: a file name (``gpen_bfr_512.onnx``), a file name without
    its suffix, or a model name (``GPEN-BFR-512``: its ``.pth``, or with ``onnx`` its ONNX export,
    ReActor's where there is one, else FaceFusion's)."""
    if name in REGISTRY:
        return REGISTRY[name]
    model = next((m for m in RELEASED_MODELS if m.lower() == name.removesuffix(".pth").lower()), None)
    if model is not None:
        matches = [f for f in gpen_files(onnx=onnx) if f.model == model]
        if matches:
            return matches[0]
    by_stem = [f for f in REGISTRY.values() if Path(f.name).stem.lower() == name.lower()]
    if len(by_stem) == 1:
        return by_stem[0]
    known = ", ".join([*RELEASED_MODELS, *REGISTRY])
    raise InvalidInputError(f"unknown weights name {name!r}; known: {known}. Any other GPEN checkpoint: "
                            f"python -m gpen download --url URL")


def resolve_model(name_or_path: str | os.PathLike, extra_dirs: Iterable[str | os.PathLike] = (),
                  allow_download: bool = True, progress: bool = True,
                  progress_callback: ProgressCallback | None = None) -> Path:
    """A model file: an existing path as is, or a released model name found or downloaded."""
    return resolve_released(name_or_path, extra_dirs, allow_download=allow_download, progress=progress,
                            progress_callback=progress_callback)


def download_file(spec: WeightsFile, dest_dir: str | os.PathLike | None = None, progress: bool = True,
                  progress_callback: ProgressCallback | None = None) -> Path:
    """Download a registry entry with the checks it needs (see the module docstring)."""
    return download(spec, dest_dir, progress=progress, validate=validator_for(spec),
                    progress_callback=progress_callback)


def download_model(name: str, dest_dir: str | os.PathLike | None = None, progress: bool = True,
                   onnx: bool = False, progress_callback: ProgressCallback | None = None) -> Path:
    """Download a released GPEN file by model or file name (see :func:`files_for`)."""
    spec = files_for(name, onnx=onnx)
    if spec.model is None:
        raise ModelLoadError(f"{spec.name} is not a GPEN model file; known models: {', '.join(RELEASED_MODELS)}")
    return download_file(spec, dest_dir, progress=progress, progress_callback=progress_callback)


def file_name_from_url(url: str) -> str:
    """The weights file name a URL points at: its last path segment, or a ``FilePath=`` query value
    (ModelScope's download API); ``InvalidInputError`` when neither has a weights suffix."""
    parts = urllib.parse.urlsplit(url)
    candidates = [urllib.parse.unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])]
    for key, values in urllib.parse.parse_qs(parts.query).items():
        if key.lower() in ("filepath", "file", "filename"):
            candidates += [v.rsplit("/", 1)[-1] for v in values]
    for c in candidates:
        if c.lower().endswith(DOWNLOADABLE_SUFFIXES):
            return c
    raise InvalidInputError(f"cannot tell the file name from {url!r}; give it with --name (ending in "
                            f"{', '.join(DOWNLOADABLE_SUFFIXES)})")


def download_url(url: str, dest_dir: str | os.PathLike | None = None, sha256: str | None = None,
                 name: str | None = None, progress: bool = True,
                 progress_callback: ProgressCallback | None = None) -> Path:
    """Download any GPEN checkpoint from ``url`` into ``dest_dir`` (default: the facerestore_models folder).

    The file must load as GPEN (any size; checked before it is kept) and match ``sha256`` when given.
    ``name``: the file name to save as (default: from the URL).
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise InvalidInputError(f"{url!r} is not an http(s) URL")
    file_name = name or file_name_from_url(url)
    if Path(file_name).name != file_name or not file_name.lower().endswith(DOWNLOADABLE_SUFFIXES):
        raise InvalidInputError(f"{file_name!r} is not a plain weights file name ending in "
                                f"{', '.join(DOWNLOADABLE_SUFFIXES)}")
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256)):
        raise InvalidInputError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    spec = WeightsFile(file_name, KIND, (url,), sha256=sha256.lower() if sha256 else None, origin="given URL")
    suffix = Path(file_name).suffix
    check: Callable[[Path], None] = lambda p: check_gpen_file(p, suffix=suffix)  # noqa: E731
    return download(spec, dest_dir, progress=progress, validate=check, progress_callback=progress_callback)
