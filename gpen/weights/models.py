"""GPEN model names and files: resolve ``GPEN-BFR-512`` or a path to a checked weights file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .download import download, ensure_weights
from ..errors import ModelLoadError
from ..model.layouts import RELEASED_MODELS, released_layout
from ..model.checkpoint import infer_config
from ..model.files import unwrap_state_dict
from ..model.loader import read_weights_file

KIND = "facerestore_models"


def check_released_file(path: Path, name: str) -> None:
    """Raise ``ModelLoadError`` unless ``path`` holds exactly the released layout of model ``name``."""
    state = unwrap_state_dict(read_weights_file(path), path.name)
    infer_config(state, path.name)  # recognisable as GPEN at all (clear message otherwise)
    want = released_layout(name)["shapes"]
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != want:
        diff = sorted(set(want) ^ set(got)) or sorted(k for k in want if got[k] != want[k])
        raise ModelLoadError(f"{path.name}: does not have the layout of the released {name} "
                             f"({len(diff)} tensors differ, e.g. {diff[0]!r}).")


def model_file_name(name: str) -> str | None:
    """``GPEN-BFR-512`` / ``GPEN-BFR-512.pth`` -> ``GPEN-BFR-512.pth``; None for other names."""
    stem = name.removesuffix(".pth")
    return f"{stem}.pth" if stem in RELEASED_MODELS else None


def resolve_model(name_or_path: str | os.PathLike, extra_dirs: Iterable[str | os.PathLike] = (),
                  allow_download: bool = True, progress: bool = True) -> Path:
    """A model file: an existing path as is, or a released model name found or downloaded."""
    path = Path(name_or_path)
    if path.exists() or path.suffix.lower() not in ("", ".pth") or model_file_name(str(name_or_path)) is None:
        return path
    file_name = model_file_name(str(name_or_path))
    stem = file_name.removesuffix(".pth")
    return ensure_weights(file_name, KIND, extra_dirs, allow_download=allow_download, progress=progress,
                          validate=lambda p: check_released_file(p, stem))


def download_model(name: str, dest_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Download a released GPEN checkpoint (checked against its released layout before it is kept)."""
    file_name = model_file_name(name)
    if file_name is None:
        raise ModelLoadError(f"unknown GPEN model {name!r}; known: {', '.join(RELEASED_MODELS)}")
    stem = file_name.removesuffix(".pth")
    return download(file_name, dest_dir, progress=progress, validate=lambda p: check_released_file(p, stem))
