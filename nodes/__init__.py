"""ComfyUI node adapters over the host-independent ``gpen`` core.

``registry`` (the node table) and the node modules import ComfyUI; the root ``__init__.py`` loads
them only inside ComfyUI. ``folders`` and ``runtime`` import nothing from ComfyUI at module level.
"""
