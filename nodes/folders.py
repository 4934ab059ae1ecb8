"""Model folders of the pack, merged into ComfyUI's ``folder_paths`` table.

Other face packs (ReActor, facerestore_cf) use the same two folder names, and some of them
replace the whole table entry when they load. We never replace what they registered: we add our
default folder and our file extensions to whatever entry exists. We never change a collection
that something else may share, though: ReActor and facerestore_cf register ``facerestore_models``
with ComfyUI's own ``folder_paths.supported_pt_extensions`` set, the very object ``checkpoints``,
``loras``, ``vae``, ``upscale_models``... use, so adding ``.onnx`` to it would make every core loader
list ``.onnx`` files. The entry gets a new extension set instead (its folder list is kept, unless
another entry shares that list too). Because a pack loaded after us may still replace the entry,
the nodes call ``register_folders()`` again whenever they list files (it is idempotent and cheap).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, MutableMapping

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
                 extensions: tuple[str, ...], shared: Collection[object] = ()) -> None:
    """Add ``default_dir`` and ``extensions`` to ``table[name]`` without dropping anything there and
    without mutating any collection another entry (or ``shared``, e.g. ComfyUI's
    ``supported_pt_extensions``) holds.

    ``table`` has ComfyUI's layout: ``name -> (list of folders, extensions)``. An absent entry is
    created; an existing one keeps its folders (ours is appended when missing) and its extensions
    plus ours. Extensions missing from the entry go into a new set that replaces the entry's
    collection, so the collection it had (often ComfyUI's shared set) is never changed; the
    folder list is extended in place (packs that hold it see our folder) unless another entry or
    ``shared`` holds the same list, which is then copied. An empty extension collection means
    "every file" to ComfyUI unless a pack chose it; the only empty entries ComfyUI itself creates
    come from ``extra_model_paths.yaml`` for unknown names, so those receive our extensions.
    """
    entry = table.get(name)
    if entry is None:
        table[name] = ([default_dir], set(extensions))
        return
    folders, exts = entry[0], entry[1]
    others = [e for key, e in table.items() if key != name and isinstance(e, tuple) and len(e) >= 2]
    used_elsewhere = lambda obj: any(obj is o for o in shared) or any(obj is e[0] or obj is e[1] for e in others)  # noqa: E731
    new_folders = folders
    if default_dir not in folders:
        if used_elsewhere(folders) or not isinstance(folders, list):
            new_folders = [*folders, default_dir]
        else:
            folders.append(default_dir)
    missing = [e for e in extensions if e not in exts]
    new_exts = (set(exts) | set(missing)) if missing else exts
    if new_folders is not folders or new_exts is not exts:
        table[name] = (new_folders, new_exts, *entry[2:])


def register_folders() -> None:
    """Merge the pack's two folders into ComfyUI's ``folder_paths`` (inside ComfyUI only)."""
    import folder_paths

    models_dir = folder_paths.models_dir
    shared = [getattr(folder_paths, "supported_pt_extensions", None)]
    merge_folder(folder_paths.folder_names_and_paths, RESTORE_MODELS,
                 os.path.join(models_dir, RESTORE_MODELS), RESTORE_EXTENSIONS, shared)
    merge_folder(folder_paths.folder_names_and_paths, DETECTION_MODELS,
                 os.path.join(models_dir, DETECTION_MODELS), DETECTION_EXTENSIONS, shared)


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
