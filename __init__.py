"""ComfyUI-GPEN: GPEN blind face restoration nodes for ComfyUI.

ComfyUI imports this file as the pack's entry point. The node adapters in ``nodes/`` need
ComfyUI's own modules, so they are loaded only when ComfyUI's ``folder_paths`` is importable;
anywhere else (pytest, the command line) this package imports cleanly and registers nothing.
ComfyUI has a top-level module named ``nodes`` too: ours is always imported relatively.
"""

import importlib.util

WEB_DIRECTORY = "./js"
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

if importlib.util.find_spec("folder_paths") is not None:
    from .nodes.registry import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
