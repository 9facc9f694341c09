"""Training: the fit loop, its configuration, callbacks (health, best epoch, early stopping,
checkpoints), and fine-tuning a trained model on feedback."""

from __future__ import annotations

from ..errors import FinetuneRefused
from .callbacks import Callback, EarlyStopping, KeepBest, TrainState, as_callback
from .checkpoint import Checkpoint, read_checkpoint_state
from .components import build_network, make_optimizer, resolve_precision
from .config import TrainConfig
from .finetune import FinetuneConfig, finetune
from .health import TrainingHealth
from .loop import FitResult, fit, validate

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "FinetuneConfig",
    "FinetuneRefused",
    "FitResult",
    "KeepBest",
    "TrainConfig",
    "TrainState",
    "TrainingHealth",
    "as_callback",
    "build_network",
    "finetune",
    "fit",
    "make_optimizer",
    "read_checkpoint_state",
    "resolve_precision",
    "validate",
]
