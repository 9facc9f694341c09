"""Exceptions siamkit raises for bad input: each message names what is wrong."""

from __future__ import annotations

__all__ = ["SiamkitError", "DataError", "ModelFileError"]


class SiamkitError(ValueError):
    """Base class: a problem with the user's input, data or files (not a bug)."""


class DataError(SiamkitError):
    """A dataset, image or pair file cannot be used as given."""


class ModelFileError(SiamkitError):
    """A model or checkpoint folder is missing, damaged or from an incompatible version."""
