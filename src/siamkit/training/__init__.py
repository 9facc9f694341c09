"""Training: the fit loop, its configuration, checkpoints and early stopping."""

from __future__ import annotations

from .config import TrainConfig
from .loop import FitResult, build_network, fit

__all__ = ["FitResult", "TrainConfig", "build_network", "fit"]
