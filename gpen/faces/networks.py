"""The helper networks a face restorer creates on first use and keeps: detector, parser, occluder.

:class:`HelperNetworks` is the part of :class:`gpen.restorer.FaceRestorer` that owns them: given
objects (stand-ins, preloaded networks) are used as they are; otherwise each is built once per
choice (model name, folders) and reused across calls, and :meth:`~HelperNetworks.offload` moves
the torch networks off the GPU between runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class HelperNetworks:
    """Detector, face parser and occluder, given (``detector``, ``parser``, ``occluder``) or built lazily."""

    def __init__(self, detector=None, parser=None, occluder=None) -> None:
        self._detector = detector
        self._detectors: dict[tuple, object] = {}
        self._parser = parser
        self._occluder = occluder
        self._occluders: dict[tuple, object] = {}

    def detector(self, name: str, device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The detector for ``name`` (created once, then reused)."""
        if self._detector is not None:
            return self._detector
        key = (name, tuple(str(d) for d in extra_dirs))
        if key not in self._detectors:
            from .detect import FaceDetector

            self._detectors[key] = FaceDetector(name, device=device, extra_dirs=extra_dirs,
                                                allow_download=allow_download)
        return self._detectors[key].to(device)

    def parser(self, device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The face parser (created once, then reused)."""
        if self._parser is None:
            from .parsing import FaceParser

            self._parser = FaceParser(device=device, extra_dirs=extra_dirs, allow_download=allow_download)
        return self._parser.to(device)

    def occluder(self, models: Sequence[str], device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The occluder for the XSeg ``models`` (created once per choice, then reused)."""
        if self._occluder is not None:
            return self._occluder
        key = (tuple(models), tuple(str(d) for d in extra_dirs))
        if key not in self._occluders:
            from .occlusion import FaceOccluder

            self._occluders[key] = FaceOccluder(models, device=device, extra_dirs=extra_dirs,
                                                allow_download=allow_download)
        return self._occluders[key]

    def offload(self, device: torch.device | str = "cpu") -> None:
        """Move the detector and parser networks this restorer created to ``device`` (e.g. to free
        GPU memory between runs); they move back to the work device on next use."""
        for det in self._detectors.values():
            det.to(device)
        if self._parser is not None:
            self._parser.to(device)
        # onnxruntime sessions (the occluders) keep the provider they were created with.
