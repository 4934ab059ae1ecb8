"""Model folders of the pack, merged into ComfyUI's ``folder_paths`` table.

Other face packs (ReActor, facerestore_cf) use the same two folder names, and some of them
replace the whole table entry when they load. We never replace: we add our default folder and our
file extensions to whatever entry exists, keeping the very list and set objects other packs hold.
Because a pack loaded after us may still replace the entry, the nodes call ``register_folders()``
again whenever they list files (it is idempotent and cheap).
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

logger = logging.getLogger(__name__)

RESTORE_MODELS = "facerestore_models"
"""ComfyUI folder name for face restoration checkpoints (shared with ReActor and facerestore_cf)."""
DETECTION_MODELS = "facedetection"
"""ComfyUI folder name for face detector / face parsing weights (facexlib files)."""

RESTORE_EXTENSIONS = (".pth", ".pt", ".ckpt", ".safetensors", ".onnx")
DETECTION_EXTENSIONS = (".pth", ".pt", ".safetensors", ".onnx")

RELEASED_MODEL_FILES = ("GPEN-BFR-512.pth", "GPEN-BFR-1024.pth", "GPEN-BFR-2048.pth", "GPEN-BFR-256.pth")
"""File names of the released GPEN face restoration checkpoints, for messages."""


def merge_folder(table: MutableMapping[str, tuple], name: str, default_dir: str,
                 extensions: tuple[str, ...]) -> None:
    """Add ``default_dir`` and ``extensions`` to ``table[name]`` without dropping anything there.

    ``table`` has ComfyUI's layout: ``name -> (list of folders, extensions)``. An absent entry is
    created; an existing one keeps its folders (ours is appended when missing) and its extension
    collection object, which gains our extensions. An empty extension collection means "every
    file" to ComfyUI unless a pack chose it; the only empty entries ComfyUI itself creates come
    from ``extra_model_paths.yaml`` for unknown names, so those receive our extensions.
    """
    entry = table.get(name)
    if entry is None:
        table[name] = ([default_dir], set(extensions))
        return
    folders, exts = entry[0], entry[1]
    if default_dir not in folders:
        folders.append(default_dir)
    if isinstance(exts, set):
        exts.update(extensions)
    elif isinstance(exts, list):
        exts.extend(e for e in extensions if e not in exts)
    else:  # an immutable collection: rebuild the entry around the same folder list
        table[name] = (folders, set(exts) | set(extensions))


def register_folders() -> None:
    """Merge the pack's two folders into ComfyUI's ``folder_paths`` (inside ComfyUI only)."""
    import folder_paths

    models_dir = folder_paths.models_dir
    merge_folder(folder_paths.folder_names_and_paths, RESTORE_MODELS,
                 os.path.join(models_dir, RESTORE_MODELS), RESTORE_EXTENSIONS)
    merge_folder(folder_paths.folder_names_and_paths, DETECTION_MODELS,
                 os.path.join(models_dir, DETECTION_MODELS), DETECTION_EXTENSIONS)


def folders_of(name: str) -> list[str]:
    """The folders ComfyUI searches for ``name`` (after merging ours in)."""
    import folder_paths

    register_folders()
    return folder_paths.get_folder_paths(name)


def restore_model_files() -> list[str]:
    """Files in the ``facerestore_models`` folders (what is on disk)."""
    import folder_paths

    register_folders()
    return folder_paths.get_filename_list(RESTORE_MODELS)
