"""The helper networks a face restorer creates on first use and keeps: detector, parser, occluder.

:class:`NetworkCache` holds the built networks, one per choice (model name, folders). It does not
depend on the restoration model, so one cache can serve every restorer of a process (e.g. two
ComfyUI restore nodes with different GPEN models): switching models never rebuilds them, and
holding them keeps no restoration model alive. :class:`HelperNetworks` is the part of
:class:`gpen.pipeline.restorer.FaceRestorer` that uses them: given objects (stand-ins, preloaded networks)
are used as they are; otherwise each comes from its cache (its own, unless one is shared), and
:meth:`~HelperNetworks.offload` moves the torch networks off the GPU between runs. With a ``place``
hook (a host's memory manager, see :data:`gpen.pipeline.restorer.PlaceFn`) new networks are built on the CPU
and the hook, called by :meth:`~HelperNetworks.ready` right before each use, decides where they run.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch


class NetworkCache:
    """Detectors, face parsers and occluders built on first use, keyed by choice; safe to share."""

    def __init__(self) -> None:
        self.detectors: dict[tuple, object] = {}
        self.parsers: dict[tuple, object] = {}
        self.occluders: dict[tuple, object] = {}
        self.lock = threading.Lock()

    def get(self, table: dict, key: tuple, build):
        """``table[key]``, built by ``build()`` the first time."""
        with self.lock:
            if key not in table:
                table[key] = build()
            return table[key]

    def offload(self, device: torch.device | str = "cpu") -> None:
        """Move the torch networks (detectors, parsers) to ``device``, e.g. to free GPU memory
        between runs; they move back to the work device on next use. (onnxruntime sessions, the
        occluders, keep the provider they were created with.)"""
        for net in [*self.detectors.values(), *self.parsers.values()]:
            net.to(device)

    def __len__(self) -> int:
        return len(self.detectors) + len(self.parsers) + len(self.occluders)


class HelperNetworks:
    """Detector, face parser and occluder, given (``detector``, ``parser``, ``occluder``) or taken
    from ``networks`` (a :class:`NetworkCache`, by default one of this object's own)."""

    def __init__(self, detector=None, parser=None, occluder=None, networks: NetworkCache | None = None,
                 place=None) -> None:
        self.place = place
        self._detector = detector
        self._parser = parser
        self._occluder = occluder
        self.networks = networks if networks is not None else NetworkCache()

    def detector(self, name: str, device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The detector for ``name`` (created once, then reused)."""
        if self._detector is not None:
            return self._detector

        def build():
            from .detect import FaceDetector

            return FaceDetector(name, device=self._build_device(device), extra_dirs=extra_dirs,
                                allow_download=allow_download)

        key = (name, tuple(str(d) for d in extra_dirs))
        return self._placed(self.networks.get(self.networks.detectors, key, build), device)

    def parser(self, device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The face parser (created once, then reused)."""
        if self._parser is not None:
            return self._placed(self._parser, device)

        def build():
            from .parsing import FaceParser

            return FaceParser(device=self._build_device(device), extra_dirs=extra_dirs, allow_download=allow_download)

        key = (tuple(str(d) for d in extra_dirs),)
        return self._placed(self.networks.get(self.networks.parsers, key, build), device)

    def occluder(self, models: Sequence[str], device: torch.device, extra_dirs=(), allow_download: bool = True):
        """The occluder for the XSeg ``models`` (created once per choice, then reused)."""
        if self._occluder is not None:
            return self._occluder

        def build():
            from .occlusion import FaceOccluder

            return FaceOccluder(models, device=device, extra_dirs=extra_dirs, allow_download=allow_download)

        key = (tuple(models), tuple(str(d) for d in extra_dirs))
        return self.networks.get(self.networks.occluders, key, build)

    def prepare_masks(self, device: torch.device, parsing: bool, occlusion: Sequence[str], extra_dirs=(),
                      allow_download: bool = True) -> None:
        """Build (or take from the cache) the parser and occluder that the masks will need, so that
        a missing or broken file is reported before detection and the first network run."""
        if parsing and self._parser is None:
            self.parser(device, extra_dirs, allow_download)
        if occlusion and self._occluder is None:
            self.occluder(occlusion, device, extra_dirs, allow_download)

    def _build_device(self, device: torch.device) -> torch.device:
        """The CPU when a ``place`` hook will move new networks (the host makes room first), else ``device``."""
        return torch.device("cpu") if self.place is not None else device

    def _placed(self, network, device: torch.device):
        """``network`` moved to ``device``, unless a ``place`` hook decides where it runs."""
        return network if self.place is not None else network.to(device)

    def ready(self, role: str, network, inputs: torch.Tensor):
        """Hand ``network`` to the ``place`` hook right before it runs on ``inputs`` (without a hook
        the getters above have moved it already); returns ``network``."""
        if self.place is not None:
            self.place(role, network, inputs)
        return network

    def offload(self, device: torch.device | str = "cpu") -> None:
        """Move the detector and parser networks of the cache (and a given parser) to ``device``
        (e.g. to free GPU memory between runs); they move back to the work device on next use."""
        self.networks.offload(device)
        if self._parser is not None:
            self._parser.to(device)
