"""Exceptions raised by the GPEN pack. Their messages are written for users: what is wrong and what to do."""

from __future__ import annotations


class GPENError(Exception):
    """Base class of every error the pack raises on purpose."""


class ModelLoadError(GPENError, ValueError):
    """A weights file cannot be used as a GPEN model (wrong architecture, corrupt, incomplete)."""


class MissingWeightsError(GPENError, FileNotFoundError):
    """A weights file is absent and cannot be downloaded here; the message names the file and folder."""


class InvalidInputError(GPENError, ValueError):
    """An input image, mask or landmark array has the wrong shape, type or values."""


class MissingDependencyError(GPENError, ImportError):
    """An optional package (PyAV for video, Ray for distributed runs) is needed and not installed; the
    message names the pip command."""
