"""Run folders: the best model, the per-epoch checkpoint and the metrics log.

``out_dir/``:

- ``model/``: the best epoch's model (rewritten whenever an epoch improves);
- ``metrics.jsonl``: one JSON line per finished epoch;
- ``checkpoint/``: ``trainer.json`` (the commit point: options, history, early-stopping
  state, scheduler state and the names of the tensor files) and the newest epoch's
  ``epoch-NNNN.model.safetensors``, ``epoch-NNNN.optimizer.safetensors`` (and
  ``epoch-NNNN.loss.safetensors`` for a loss with parameters, ``epoch-NNNN.average.safetensors``
  for the weight average of ``ema``).

Every file is written atomically (:mod:`siamkit._atomic`), ``trainer.json`` last, so an
interrupted run resumes from the last complete checkpoint, to exactly the same weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from .._atomic import write_json_atomic, write_text_atomic
from ..errors import DataError, ModelFileError
from ..io import flatten_optimizer_state, load_state_dict, save_model, save_state_dict, unflatten_optimizer_state
from .callbacks import Callback, TrainState
from .config import TrainConfig

__all__ = [
    "CHECKPOINT_DIR",
    "METRICS_FILE",
    "MODEL_DIR",
    "STATE_FILE",
    "Checkpoint",
    "kept_checkpoint_note",
    "read_checkpoint_state",
    "restore_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer.json"
METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"


def save_checkpoint(ckpt: Path, state: TrainState) -> None:
    """Write the checkpoint of ``state.epoch`` into ``ckpt`` and drop older epochs' files.

    Args:
        ckpt: the checkpoint folder (created when missing).
        state: the run after its epoch.

    Returns:
        None.
    """
    ckpt.mkdir(parents=True, exist_ok=True)
    epoch = state.epoch
    model_file = f"epoch-{epoch:04d}.model.safetensors"
    opt_file = f"epoch-{epoch:04d}.optimizer.safetensors"
    weights = state.training_weights if state.training_weights is not None else state.network.state_dict()
    save_state_dict(weights, ckpt / model_file)  # the training weights, also while the average is swapped in
    record: dict[str, Any] = {
        "config": state.config.to_dict(),
        "sample_shape": list(state.sample_shape),
        "history": state.history,
        "best_metric": state.best_metric,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
    }
    if state.proxies is not None:  # parameters of the loss (the normsoftmax proxies): training state, not the model
        loss_file = f"epoch-{epoch:04d}.loss.safetensors"
        save_state_dict({"proxies": state.proxies.detach()}, ckpt / loss_file)
        record["loss_file"] = loss_file
    if state.averaged is not None:  # config.ema: the running average, to resume it
        average_file = f"epoch-{epoch:04d}.average.safetensors"
        save_state_dict(state.averaged.state_dict(), ckpt / average_file)
        record["average_file"] = average_file
    tensors, opt_meta = flatten_optimizer_state(state.optimizer.state_dict())
    save_state_dict(tensors, ckpt / opt_file)
    record.update(
        epoch=epoch,
        model_file=model_file,
        optimizer_file=opt_file,
        optimizer_meta=opt_meta,
        scheduler=state.scheduler.state_dict() if state.scheduler is not None else None,
    )
    write_json_atomic(ckpt / STATE_FILE, record)  # the commit point: older files are now stale
    for old in ckpt.glob("epoch-*.safetensors"):
        if not old.name.startswith(f"epoch-{epoch:04d}."):
            old.unlink(missing_ok=True)


def read_checkpoint_state(out_dir: str | Path) -> dict[str, Any]:
    """The trainer state of a run folder's checkpoint (for --resume).

    Args:
        out_dir: the run folder.

    Returns:
        The content of ``checkpoint/trainer.json``.

    Raises:
        ModelFileError: no checkpoint, or a damaged ``trainer.json``.
    """
    path = Path(out_dir) / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        raise ModelFileError(f"no checkpoint to resume in {out_dir} ({path} is missing)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelFileError(f"checkpoint state {path} is damaged: {e}") from None


def kept_checkpoint_note(out: Path | None) -> str:
    """Where the last good checkpoint of a diverged run is, for its error message.

    Args:
        out: the run folder (None: a run kept in memory).

    Returns:
        "; the last good checkpoint (epoch N) is kept in ..." or "" without one.
    """
    if out is None or not (out / CHECKPOINT_DIR / STATE_FILE).is_file():
        return ""
    epoch = read_checkpoint_state(out).get("epoch")
    return f"; the last good checkpoint (epoch {epoch}) is kept in {out / CHECKPOINT_DIR}, the best model in {out / MODEL_DIR}"


def _check_same_run(st: dict[str, Any], state: TrainState, out: Path) -> None:
    """The checkpoint was written by a run with these options and this input shape."""
    saved = TrainConfig.from_dict(st["config"])
    ignore = {"progress", "health"}  # display and diagnostics only: they do not change the weights
    if {k: v for k, v in saved.to_dict().items() if k not in ignore} != {
        k: v for k, v in state.config.to_dict().items() if k not in ignore
    }:
        raise ModelFileError(f"the checkpoint in {out} was trained with other options; resume with the same ones")
    if list(st.get("sample_shape", [])) != list(state.sample_shape):
        raise DataError(
            f"the checkpoint in {out} was trained on inputs of shape {st.get('sample_shape')}, "
            f"the data has {list(state.sample_shape)} (channel count or image size differ)"
        )


def _restore_scheduler(st: dict[str, Any], state: TrainState, out: Path) -> None:
    sched, config = state.scheduler, state.config
    if sched is None or st.get("scheduler") is None:
        return
    sched.load_state_dict(st["scheduler"])
    total = config.epochs * state.steps_per_epoch
    if config.schedule == "cosine" and getattr(sched, "T_max", None) != total:
        raise ModelFileError(
            f"the checkpoint in {out} anneals the learning rate over {getattr(sched, 'T_max', '?')} steps, "
            f"this run over {total} (checkpoints written before cosine annealing was stepped "
            "every batch count epochs; or the number of batches per epoch changed): start a new run"
        )


def restore_checkpoint(out_dir: str | Path, state: TrainState) -> None:
    """Load a run folder's checkpoint into ``state``: weights, loss parameters, the weight
    average (``config.ema``), optimiser, scheduler, history, early-stopping state, the best weights so far, and the epoch.

    Args:
        out_dir: the run folder.
        state: a freshly set-up run with the same options.

    Returns:
        None; ``state`` continues after the checkpoint's epoch.

    Raises:
        ModelFileError: no or a damaged checkpoint, other options, another schedule length.
        DataError: the checkpoint was trained on inputs of another shape.
    """
    out = Path(out_dir)
    ckpt = out / CHECKPOINT_DIR
    st = read_checkpoint_state(out)
    _check_same_run(st, state, out)
    state.network.load_state_dict(load_state_dict(ckpt / st["model_file"]))
    if state.proxies is not None:
        if "loss_file" not in st:
            raise ModelFileError(f"the checkpoint in {out} has no loss state (proxies) to resume")
        with torch.no_grad():
            state.proxies.copy_(load_state_dict(ckpt / st["loss_file"])["proxies"])
    if state.averaged is not None:
        if "average_file" not in st:
            raise ModelFileError(f"the checkpoint in {out} has no weight average (ema) to resume")
        state.averaged.load_state_dict(load_state_dict(ckpt / st["average_file"]))
    state.optimizer.load_state_dict(
        unflatten_optimizer_state(load_state_dict(ckpt / st["optimizer_file"]), st["optimizer_meta"])
    )
    _restore_scheduler(st, state, out)
    state.history, state.best_metric = st["history"], st["best_metric"]
    state.best_epoch, state.bad_epochs = st["best_epoch"], st["bad_epochs"]
    state.epoch = int(st["epoch"])
    best_file = out / MODEL_DIR / "model.safetensors"
    if state.best_epoch and best_file.is_file():
        state.best_state = load_state_dict(best_file)
    logger.info("resuming %s at epoch %d", out, state.epoch + 1)


class Checkpoint(Callback):
    """After every epoch: the best model (when the epoch improved), ``metrics.jsonl`` and
    the checkpoint, in a run folder (see the module doc).

    Args:
        out_dir: the run folder (created when missing).
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)

    def on_epoch_end(self, record: dict[str, Any], state: TrainState) -> None:
        """Write the best model (if this epoch improved), the metrics and the checkpoint.

        Args:
            record: unused (``state.history`` holds it, and every earlier epoch's).
            state: the run after the epoch, the best epoch already chosen.

        Returns:
            None.
        """
        out = self.out_dir
        if state.improved:
            save_model(state.network, out / MODEL_DIR, extra={"train_config": state.config.to_dict(), "epoch": state.epoch})
        # rewritten whole from the history (which the checkpoint also holds), so a
        # resumed run never duplicates or drops an epoch's line
        write_text_atomic(out / METRICS_FILE, "".join(json.dumps(h) + "\n" for h in state.history))
        save_checkpoint(out / CHECKPOINT_DIR, state)
