"""Host-side state of the nodes: the loaded-model cache.

Nothing here imports ComfyUI, so it can be tested with small stand-ins. (The out-of-memory
back-off lives in the core: ``gpen.FaceRestorer.run_network`` halves its chunk on CUDA OOM.)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def file_identity(path: str) -> tuple[str, int, int]:
    """What tells one weights file version from another: resolved path, mtime (ns) and size."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, st.st_mtime_ns, st.st_size


class ModelCache:
    """Keeps the most recently loaded models, keyed by file identity and precision.

    A model is reloaded when its file is replaced (path, mtime or size changes) or another
    precision is asked for. ``capacity`` bounds how many stay in memory (on the offload device).
    """

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = max(1, capacity)
        self._items: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def get_or_load(self, path: str, precision: str, load: Callable[[str], Any]) -> Any:
        """The cached model for (``path``, ``precision``), or ``load(path)`` stored for next time."""
        key = (*file_identity(path), precision)
        with self._lock:
            if key in self._items:
                self._items[key] = self._items.pop(key)  # most recent last
                return self._items[key]
        model = load(path)
        with self._lock:
            self._items = {k: v for k, v in self._items.items() if k[0] != key[0]}  # stale versions of this file
            self._items[key] = model
            while len(self._items) > self.capacity:
                self._items.pop(next(iter(self._items)))
        return model

    def clear(self) -> None:
        """Forget every cached model."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
