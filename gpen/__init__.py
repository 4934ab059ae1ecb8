"""GPEN blind face restoration, independent of any host application.

Public API:
    load_model(source, device="cpu", dtype=torch.float32) -> GPEN network (eval mode)
"""

from __future__ import annotations

import logging

from .errors import GPENError, InvalidInputError, MissingWeightsError, ModelLoadError
from .loader import load_model
from .network import GPEN, GPENConfig

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "GPEN", "GPENConfig", "GPENError", "InvalidInputError", "MissingWeightsError", "ModelLoadError", "load_model",
]
