"""Where weight files live on disk.

Two kinds of model folder are used, named as in ComfyUI's ``models/`` tree so that files already
downloaded for ReActor or facerestore_cf are found without copying:

- ``facerestore_models``: GPEN checkpoints (``GPEN-BFR-512.pth`` ...), the folder ReActor and
  facerestore_cf read face-restoration models from.
- ``facedetection``: face detector and face parsing weights under facexlib's file names
  (``detection_Resnet50_Final.pth``, ``detection_mobilenet0.25_Final.pth``,
  ``parsing_parsenet.pth``, ``parsing_bisenet.pth``), the folder ReActor passes to facexlib as
  ``model_rootpath``.

The default folder of a kind is resolved in this order:

1. ``$GPEN_MODELS_DIR/<kind>`` when the environment variable is set (a ComfyUI-style ``models/``
   root holding those subfolders);
2. ``<ComfyUI>/models/<kind>`` when this pack sits in ``<ComfyUI>/custom_nodes/<pack>/``;
3. ``<pack root>/models/<kind>`` in a clone of the repository (or a copy of the pack);
4. ``<user cache>/gpen/models/<kind>`` for a ``pip``-installed ``gpen`` (``$XDG_CACHE_HOME``,
   ``%LOCALAPPDATA%`` on Windows, else ``~/.cache``).

The ComfyUI node adapters pass ComfyUI's own registered folders
(``folder_paths.get_folder_paths(kind)``) as ``extra_dirs``; those are searched first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import InvalidInputError

logger = logging.getLogger(__name__)

ENV_MODELS_DIR = "GPEN_MODELS_DIR"
KINDS = ("facerestore_models", "facedetection")

# The pack root (the folder holding ``gpen/``). ``abspath`` rather than ``resolve``: when the pack
# is symlinked into ``custom_nodes/``, the link path is the one that leads to ComfyUI's models.
PACK_ROOT = Path(os.path.abspath(__file__)).parents[2]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidInputError(f"Unknown model folder kind {kind!r}; expected one of {', '.join(KINDS)}.")


def find_comfyui_models_root(pack_dir: Path) -> Path | None:
    """ComfyUI's ``models/`` folder for a pack installed at ``pack_dir``, or None outside ComfyUI.

    The pack must sit under a ``custom_nodes`` folder. The ComfyUI root is the nearest ancestor of
    ``pack_dir`` that has a ``models/`` folder and either ComfyUI's own files (``folder_paths.py``
    or ``main.py``) or the ``custom_nodes`` folder the pack sits in (a ``--base-directory`` layout).
    """
    pack_dir = Path(os.path.abspath(pack_dir))
    ancestors = list(pack_dir.parents)
    custom = next((i for i, p in enumerate(ancestors) if p.name == "custom_nodes"), None)
    if custom is None:
        return None
    for parent in ancestors[custom + 1 :]:
        models = parent / "models"
        if not models.is_dir():
            continue
        is_comfy = (parent / "folder_paths.py").is_file() or (parent / "main.py").is_file()
        if is_comfy or parent == ancestors[custom].parent:
            return models
    return None


def models_root() -> Path:
    """The ``models/`` root that holds the kind folders (see the module docstring for the order)."""
    env = os.environ.get(ENV_MODELS_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    comfy = find_comfyui_models_root(PACK_ROOT)
    if comfy is not None:
        return comfy
    if (PACK_ROOT / "pyproject.toml").is_file() or (PACK_ROOT / "nodes").is_dir():  # a clone, or the pack
        return PACK_ROOT / "models"
    return user_cache_dir() / "gpen" / "models"  # installed with pip: PACK_ROOT is site-packages


def user_cache_dir() -> Path:
    """The user's cache folder: ``$XDG_CACHE_HOME``, ``%LOCALAPPDATA%`` on Windows, else ``~/.cache``."""
    for var in ("XDG_CACHE_HOME", "LOCALAPPDATA"):
        value = os.environ.get(var, "").strip()
        if value:
            return Path(value).expanduser()
    return Path.home() / ".cache"


def models_dir(kind: str) -> Path:
    """Default folder of ``kind`` (``facerestore_models`` or ``facedetection``); not created here."""
    _check_kind(kind)
    return models_root() / kind


def search_dirs(kind: str, extra_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Folders searched for a file of ``kind``: ``extra_dirs`` first, then the default, no duplicates."""
    _check_kind(kind)
    out: list[Path] = []
    for d in [*extra_dirs, models_dir(kind)]:
        p = Path(d).expanduser()
        if p not in out:
            out.append(p)
    return out


def find_weights(file_name: str, kind: str, extra_dirs: Iterable[str | os.PathLike] = ()) -> Path | None:
    """Path of ``file_name`` in the first folder of :func:`search_dirs` that holds it, else None.

    An absolute ``file_name`` that exists is returned as it is.
    """
    direct = Path(file_name).expanduser()
    if direct.is_absolute():
        return direct if direct.is_file() else None
    for d in search_dirs(kind, extra_dirs):
        candidate = d / file_name
        if candidate.is_file():
            logger.debug("found %s at %s", file_name, candidate)
            return candidate
    return None
