"""What the node schema of the running ComfyUI supports, for inputs declared once for every host.

ComfyUI 0.33.0's ``comfy_api`` inputs take ``advanced=True``: its frontend (1.49) folds those
widgets away behind the node's "advanced inputs" toggle, as core's MediaPipe face nodes do. ComfyUI
0.8.0's inputs have no such argument (passing it is a ``TypeError``), so there every input stays
visible. An input is marked by spreading :data:`ADVANCED` into it::

    io.Int.Input("max_gap", default=3, optional=True, tooltip="...", **ADVANCED)
"""

from __future__ import annotations

import inspect

from comfy_api.latest import io


def host_folds_advanced_inputs() -> bool:
    """Whether this host's schema inputs take ``advanced`` (ComfyUI 0.33.0 and newer)."""
    return "advanced" in inspect.signature(io.Input.__init__).parameters


ADVANCED: dict[str, bool] = {"advanced": True} if host_folds_advanced_inputs() else {}
"""Keyword arguments that mark an input as advanced where the host supports it (else none)."""
