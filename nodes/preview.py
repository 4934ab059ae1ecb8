"""The restore node's UI payload: before/after preview files and face counts for ``js/gpen_compare.js``.

The node returns ``{"ui": ui_payload(...), "result": ...}``; the frontend hands the ``ui`` dict to
the node's ``onExecuted``. Keys are our own (``gpen_*``), so the frontend's default image preview
does not draw the pictures a second time. Every value is a list, as ComfyUI merges ui dicts by
concatenating lists.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

PREVIEW_PREFIX = "GPEN_compare"


def _save_temp(images: torch.Tensor) -> list[dict]:
    c = images.shape[-1]
    images = images[..., :3] if c >= 3 else images.expand(-1, -1, -1, 3)  # grey / RGBA as RGB previews
    return ui.ImageSaveHelper.save_images(images, filename_prefix=PREVIEW_PREFIX,
                                          folder_type=io.FolderType.temp, cls=None, compress_level=1)


def ui_payload(before: torch.Tensor, after: torch.Tensor, faces_per_frame: list[int], mode: str,
               frame: int = 0) -> dict[str, list]:
    """Temp PNGs of one frame before and after restoration, plus the face count of every frame.

    ``frame`` picks the previewed frame of a batch (the first one with a face, by the caller's
    choice); only that frame is written, so video batches cost one preview, not one per frame.
    """
    frame = min(max(0, frame), before.shape[0] - 1)
    return {
        "gpen_before": _save_temp(before[frame:frame + 1]),
        "gpen_after": _save_temp(after[frame:frame + 1]),
        "gpen_faces": [int(n) for n in faces_per_frame],
        "gpen_frame": [frame],
        "gpen_mode": [mode],
    }
