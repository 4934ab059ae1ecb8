"""The helper networks a face restorer creates on first use and keeps: detector, parser, occluder.

:class:`HelperNetworks` is the part of :class:`gpen.restorer.FaceRestorer` that owns them: given
objects (stand-ins, preloaded networks) are used as they are; otherwise each is built once per
choice (model name, folders) and reused across calls, and :meth:`~HelperNetworks.offload` moves
the torch networks off the GPU between runs. With a ``place`` hook (a host's memory manager, see
:data:`gpen.restorer.PlaceFn`) new networks are built on the CPU and the hook, called by
:meth:`~HelperNetworks.ready` right before each use, decides where they run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class HelperNetworks:
    """Detector, face parser and occluder, given (``detector``, ``parser``, ``occluder``) or built lazily."""

    def __init__(self, detector=None, parser=None, occluder=None, place=None) -> None:
        self.place = place
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

            self._detectors[key] = FaceDetector(name, device=self._build_device(device), extra_dirs=extra_dirs,
                                                allow_download=allow_download)
        return self._detectors[key] if self.place is not None else self._detectors[key].to(device)

    def parser(self, device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The face parser (created once, then reused)."""
        if self._parser is None:
            from .parsing import FaceParser

            self._parser = FaceParser(device=self._build_device(device), extra_dirs=extra_dirs,
                                      allow_download=allow_download)
        return self._parser if self.place is not None else self._parser.to(device)

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

    def _build_device(self, device: torch.device) -> torch.device:
        """The CPU when a ``place`` hook will move new networks (the host makes room first), else ``device``."""
        return torch.device("cpu") if self.place is not None else device

    def ready(self, role: str, network, inputs: torch.Tensor):
        """Hand ``network`` to the ``place`` hook right before it runs on ``inputs`` (without a hook
        the getters above have moved it already); returns ``network``."""
        if self.place is not None:
            self.place(role, network, inputs)
        return network

    def offload(self, device: torch.device | str = "cpu") -> None:
        """Move the detector and parser networks this restorer created to ``device`` (e.g. to free
        GPU memory between runs); they move back to the work device on next use."""
        for det in self._detectors.values():
            det.to(device)
        if self._parser is not None:
            self._parser.to(device)
        # onnxruntime sessions (the occluders) keep the provider they were created with.
