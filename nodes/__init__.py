"""ComfyUI node adapters over the host-independent ``gpen`` core (loaded only inside ComfyUI)."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
