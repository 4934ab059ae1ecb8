"""GPEN blind face restoration, independent of any host application.

Public API:
    load_model(source, device="cpu", dtype=torch.float32) -> GPEN network (eval mode)
    FaceRestorer(restorer).restore(images, landmarks=None, ...) -> RestoreResult
"""

from __future__ import annotations

import logging

from .compat import check_torch
from .errors import GPENError, InvalidInputError, MissingWeightsError, ModelLoadError
from .model.loader import load_model
from .model.network import GPEN, GPENConfig
from .pipeline.restorer import FaceRestorer
from .pipeline.results import Face, RestoreResult

logging.getLogger(__name__).addHandler(logging.NullHandler())
check_torch()

__all__ = [
    "GPEN", "GPENConfig", "GPENError", "Face", "FaceRestorer", "InvalidInputError", "MissingWeightsError",
    "ModelLoadError", "RestoreResult", "load_model",
]
