"""The fit loop's callbacks: what happens around the epochs, outside the optimisation.

A callback has three hooks, each given the run's :class:`TrainState`:

- ``on_train_begin(state)``: after the run is set up (and resumed);
- ``on_epoch_end(record, state)``: after every epoch, with the epoch's record (loss,
  validation metrics, lr, speed), already appended to ``state.history``;
- ``on_train_end(state)``: after the last epoch (not when an exception ends the run).

A callback may set ``state.stop = True`` to end the run before the next epoch. The loop
runs its own callbacks first, in this order: the health statistics and alarms
(:class:`~siamkit.training.health.TrainingHealth`, unless ``health=False``; they go into the
record before it is saved), :class:`KeepBest` (which epoch is the best),
:class:`EarlyStopping`, the checkpoint (:class:`~siamkit.training.checkpoint.Checkpoint`,
with an ``out_dir``), then the user's. A plain function ``f(record)`` is a callback too
(its ``on_epoch_end``). With ``TrainConfig.ema``, ``state.network`` holds the averaged
weights during ``on_epoch_end`` (:mod:`siamkit.training.weight_average`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch

from ..network import SiameseNetwork
from .config import TrainConfig

__all__ = ["Callback", "CallbackLike", "EarlyStopping", "KeepBest", "TrainState", "as_callback"]


@dataclass
class TrainState:
    """Everything a run carries from epoch to epoch (what a checkpoint saves).

    Attributes:
        config: the options.
        network: the network being trained.
        optimizer, scheduler: the optimiser and its schedule (None: no schedule).
        sample_shape: the shape of one input (no batch dimension).
        steps_per_epoch: batches per epoch.
        has_val: a validation set of at least 2 classes is scored after every epoch.
        proxies: the normsoftmax class proxies (training state, not the model), else None.
        epoch: the last finished epoch (0 before the first).
        history: one record per finished epoch.
        best_metric, best_epoch: the best validation ROC AUC and its epoch (without
            validation: None and the last epoch).
        bad_epochs: epochs since the best one.
        improved: the last epoch is the new best.
        best_state: the best epoch's weights (in memory).
        stop: end the run before the next epoch.
        averaged: the running weight average (``config.ema``), else None.
        training_weights: while the average is swapped into ``network`` (the epoch's
            validation and callbacks), the training weights; else None.
    """

    config: TrainConfig
    network: SiameseNetwork
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sample_shape: list[int]
    steps_per_epoch: int
    has_val: bool = False
    proxies: torch.nn.Parameter | None = None
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    improved: bool = False
    best_state: dict[str, torch.Tensor] | None = None
    stop: bool = False
    averaged: Any = None
    training_weights: dict[str, torch.Tensor] | None = None


class Callback:
    """The hooks of the fit loop (see the module doc); each does nothing until a
    subclass overrides it."""

    def on_train_begin(self, state: TrainState) -> None:
        """Called once the run is set up (and resumed), before the first epoch."""

    def on_epoch_end(self, record: dict[str, Any], state: TrainState) -> None:
        """Called after every epoch with its record (already in ``state.history``).

        Args:
            record: the epoch's record (epoch, train_loss, lr, seconds, images_per_s,
                validation metrics).
            state: the run.

        Returns:
            None; set ``state.stop`` to end the run before the next epoch.
        """

    def on_train_end(self, state: TrainState) -> None:
        """Called after the last epoch."""


CallbackLike = Union[Callback, Callable[[dict[str, Any]], None], Any]

_HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")


class _Adapter(Callback):
    """A callback made of another object's hooks, or of a function of the record."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def on_train_begin(self, state: TrainState) -> None:
        if hasattr(self.target, "on_train_begin"):
            self.target.on_train_begin(state)

    def on_epoch_end(self, record: dict[str, Any], state: TrainState) -> None:
        """Call the target's ``on_epoch_end(record, state)``, or the function ``target(record)``.

        Args:
            record: passed on.
            state: passed on to a target with hooks; not to a function.

        Returns:
            None.
        """
        if hasattr(self.target, "on_epoch_end"):
            self.target.on_epoch_end(record, state)
        elif not any(hasattr(self.target, h) for h in _HOOKS):
            self.target(record)

    def on_train_end(self, state: TrainState) -> None:
        if hasattr(self.target, "on_train_end"):
            self.target.on_train_end(state)


def as_callback(cb: CallbackLike) -> Callback:
    """A :class:`Callback` for ``cb``.

    Args:
        cb: a :class:`Callback`, any object with some of its hooks (the others do
            nothing), or a function ``f(record)`` called after every epoch.

    Returns:
        A callback with all three hooks.

    Raises:
        TypeError: ``cb`` is none of these.
    """
    if isinstance(cb, Callback):
        return cb
    if not callable(cb) and not any(hasattr(cb, h) for h in _HOOKS):
        raise TypeError(f"a callback is a function of the epoch record or has on_epoch_end, got {type(cb).__name__}")
    return _Adapter(cb)


class KeepBest(Callback):
    """Chooses the best epoch by validation ROC AUC (``val_roc_auc``, higher is better; NaN
    never wins; a tie keeps the earlier epoch, or with ``tie_break="later"`` the later one
    and resets the patience) and restores its weights when the run ends. Without
    validation the last epoch is the best.

    Args:
        tie_break: "earlier" or "later".
    """

    def __init__(self, tie_break: str = "earlier") -> None:
        self.tie_break = tie_break

    def on_epoch_end(self, record: dict[str, Any], state: TrainState) -> None:
        """Update ``state``'s best epoch, metric, patience count and best weights.

        Args:
            record: the epoch's record (``val_roc_auc`` with validation).
            state: the run.

        Returns:
            None; ``state.improved`` says whether this epoch is the new best.
        """
        state.improved = False
        if state.has_val:
            metric = record["val_roc_auc"]
            if state.best_metric is None:
                better = True
            elif metric != metric:  # NaN never wins
                better = False
            else:
                better = metric >= state.best_metric if self.tie_break == "later" else metric > state.best_metric
            if better:
                state.best_metric, state.best_epoch, state.bad_epochs, state.improved = metric, record["epoch"], 0, True
            else:
                state.bad_epochs += 1
        else:
            state.best_epoch, state.improved = record["epoch"], True
        if state.improved:
            state.best_state = {k: v.detach().clone() for k, v in state.network.state_dict().items()}

    def on_train_end(self, state: TrainState) -> None:
        if state.best_state is not None:
            state.network.load_state_dict(state.best_state)


class EarlyStopping(Callback):
    """Stops the run after ``patience`` epochs without a better validation ROC AUC (as
    :class:`KeepBest` counts them); never without validation or with ``patience`` None.

    Args:
        patience: epochs without improvement before stopping (None = never).
    """

    def __init__(self, patience: int | None) -> None:
        self.patience = patience

    def _check(self, state: TrainState) -> None:
        if self.patience is not None and state.has_val and state.bad_epochs >= self.patience:
            state.stop = True

    def on_train_begin(self, state: TrainState) -> None:
        self._check(state)  # a resumed run may already have run out of patience

    def on_epoch_end(self, record: dict[str, Any], state: TrainState) -> None:
        """Set ``state.stop`` once the patience is used up.

        Args:
            record: unused (the count is ``state.bad_epochs``, which :class:`KeepBest` keeps).
            state: the run; ``stop`` is set when ``bad_epochs`` reaches the patience.

        Returns:
            None.
        """
        self._check(state)
