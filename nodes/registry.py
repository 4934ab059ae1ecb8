"""The pack's node table for ComfyUI (imported by the root ``__init__.py`` inside ComfyUI only)."""

from __future__ import annotations

from ..gpen.runtime import tune_from_environment
from .downloads import install_download_progress
from .face_restore import GPENFaceRestore
from .folders import register_folders
from .model_loader import GPENModelLoader

register_folders()
install_download_progress()
tune_from_environment()  # GPEN_TUNE_MALLOC=1: the faster CPU allocator setting (gpen/runtime.py), opt-in here

NODE_CLASS_MAPPINGS = {
    "GPENModelLoader": GPENModelLoader,
    "GPENFaceRestore": GPENFaceRestore,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "GPENModelLoader": "Load GPEN Model",
    "GPENFaceRestore": "GPEN Face Restore",
}
