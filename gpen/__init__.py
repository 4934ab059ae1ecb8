"""GPEN blind face restoration, independent of any host application.

Public API:
    load_model(source, device="cpu", dtype=torch.float32) -> GPEN network (eval mode)
"""

from __future__ import annotations

import logging

from .errors import GPENError, InvalidInputError, MissingWeightsError, ModelLoadError

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["GPENError", "InvalidInputError", "MissingWeightsError", "ModelLoadError"]
