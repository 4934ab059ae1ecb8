"""The helper networks of the face pipeline (detectors, face parser), built once and shared.

They do not depend on the restoration model, so one :class:`HelperNetworks` can serve every
:class:`gpen.FaceRestorer` of a process (e.g. two ComfyUI restore nodes with different GPEN
models): switching models never rebuilds them, and holding them keeps no restoration model alive.
"""

from __future__ import annotations

import logging
import threading

import torch

log = logging.getLogger(__name__)

__all__ = ["HelperNetworks"]


class HelperNetworks:
    """Face detectors (one per detector name and weights folders) and the face parser, created on first use."""

    def __init__(self) -> None:
        self._detectors: dict[tuple, object] = {}
        self._parser = None
        self._lock = threading.Lock()

    def detector(self, name: str, device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The detector for ``name`` on ``device`` (created once, then reused)."""
        key = (name, tuple(str(d) for d in extra_dirs))
        with self._lock:
            if key not in self._detectors:
                from .detect import FaceDetector

                self._detectors[key] = FaceDetector(name, device=device, extra_dirs=extra_dirs,
                                                    allow_download=allow_download)
            det = self._detectors[key]
        return det.to(device)

    def parser(self, device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The face parser on ``device`` (created once, then reused)."""
        with self._lock:
            if self._parser is None:
                from .parsing import FaceParser

                self._parser = FaceParser(device=device, extra_dirs=extra_dirs, allow_download=allow_download)
            parser = self._parser
        return parser.to(device)

    def offload(self, device: torch.device | str = "cpu") -> None:
        """Move every network built here to ``device``, e.g. to free GPU memory between runs; they
        move back to the work device on next use."""
        for det in list(self._detectors.values()):
            det.to(device)
        if self._parser is not None:
            self._parser.to(device)

    def __len__(self) -> int:
        return len(self._detectors) + (self._parser is not None)
