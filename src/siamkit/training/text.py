"""Training text twins on pairs (text_a, text_b, label_or_score).

Text pairs do not fit the class-batch image loop (no classes, no miner, a tokenizer in
front of the encoder): this is a small loop of its own over shuffled pair batches. It
reuses the shared pieces: the optimiser from :func:`~siamkit.training.components.make_optimizer`,
the losses of :mod:`siamkit.losses`, the progress bar, and the model folder writer
(:meth:`~siamkit.text.TextTwin.save`, atomic safetensors + JSON) as its checkpoint.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.text import TextPairs
from ..errors import DataError, TrainingDivergedError
from ..losses import (
    angle_loss,
    contrastive_loss,
    cosent_loss,
    cosine_similarity_loss,
    multiple_negatives_ranking_loss,
)
from ..text.model import TextTwin
from ..tuples import pairs_from_pair_batch
from .averaging import choose_interpolation
from .components import make_optimizer
from .progress import ProgressBar

__all__ = ["TextTrainConfig", "TEXT_LOSSES", "fit_text_pairs", "text_pair_loss", "validation_score", "warmup_linear_schedule"]

TEXT_LOSSES = ("cosent", "angle", "cosine", "mnr", "contrastive")

logger = logging.getLogger(__name__)


@dataclass
class TextTrainConfig:
    """How to train a text twin on pairs.

    Attributes:
        loss: ``cosent`` (graded or binary targets, order only), ``angle`` (AnglE),
            ``cosine`` (MSE between the cosine and the target scaled to [0, 1]), ``mnr``
            (multiple-negatives ranking on the positive pairs only: the other pairs of the
            batch are the negatives) or ``contrastive`` (binary pairs, cosine distance).
        epochs, batch_size (pairs per step), lr, weight_decay, optimizer (adam / adamw).
        warmup: fraction of all steps with a linear learning-rate warm-up, then linear
            decay to 0 (the BERT schedule).
        scale: the similarity scale of cosent / angle / mnr.
        margin: the contrastive margin on the cosine distance.
        grad_clip: max gradient norm (None = off).
        max_steps: stop after this many steps (None = all epochs; for short timing runs).
        eval_every: with validation pairs, also score them every this many steps (None:
            after every epoch only); the best-scoring weights are kept either way.
        eval_at_start: with validation pairs, score the starting weights too, so that a
            fine-tune that only lowers the validation score returns the starting model.
        freeze_embeddings: keep the token / position embedding tables fixed (every
            ``nn.Embedding``): fewer parameters to move (faster steps on a CPU, and the
            vocabulary the pretrained model learnt is not drifted by a small data set).
        wise_ft: with validation pairs, after training mix the best weights with the
            starting ones, ``(1 - a) * start + a * tuned`` (WiSE-FT, Wortsman et al. 2022),
            ``a`` chosen on the validation pairs among :data:`~siamkit.training.averaging.WISE_ALPHAS`
            (1.0, the fine-tune as it is, wins ties); recorded in the evals as ``alpha``.
        seed: shuffling and initialisation seed.
    """

    loss: str = "cosent"
    epochs: int = 4
    batch_size: int = 16
    lr: float = 2e-5
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    warmup: float = 0.1
    scale: float = 20.0
    margin: float = 0.5
    grad_clip: float | None = 1.0
    max_steps: int | None = None
    eval_every: int | None = None
    eval_at_start: bool = False
    freeze_embeddings: bool = False
    wise_ft: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in TEXT_LOSSES:
            raise DataError(f"loss {self.loss!r} for text pairs; choose one of {list(TEXT_LOSSES)}")
        if self.epochs < 1 or self.batch_size < 2:
            raise DataError(f"epochs must be >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}")
        if not 0 <= self.warmup < 1 or self.lr <= 0:
            raise DataError(f"warmup must be in [0, 1) and lr > 0, got {self.warmup}, {self.lr}")
        if self.eval_every is not None and self.eval_every < 1:
            raise DataError(f"eval_every must be >= 1 step, got {self.eval_every}")


def warmup_linear_schedule(opt: torch.optim.Optimizer, *, total_steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup * total_steps`` steps, then linear decay to 0.

    Args:
        opt: the optimiser.
        total_steps: all steps of the run.
        warmup: the warm-up fraction.

    Returns:
        The scheduler (step it after every optimiser step).
    """
    warm = max(1, int(warmup * total_steps)) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def text_pair_loss(
    e1: torch.Tensor, e2: torch.Tensor, targets: torch.Tensor, config: TextTrainConfig, *, binary: bool
) -> torch.Tensor:
    """The loss of one batch of embedded pairs.

    Args:
        e1: the first texts' embeddings.
        e2: the second texts' embeddings.
        targets: 1/0 labels or scores in [0, 1] (graded scores scaled by the caller).
        config: the loss and its scale / margin.
        binary: the targets are labels.

    Shapes:
        e1 (B, D), e2 (B, D), targets (B,) -> ().

    Returns:
        The loss.
    """
    if config.loss == "cosent":
        return cosent_loss(e1, e2, targets, scale=config.scale)
    if config.loss == "angle":
        return angle_loss(e1, e2, targets, scale=config.scale)
    if config.loss == "cosine":
        return cosine_similarity_loss(e1, e2, targets)
    if config.loss == "mnr":
        pos = targets > 0.5
        return multiple_negatives_ranking_loss(e1[pos], e2[pos], scale=config.scale, symmetric=True)
    if not binary:
        raise DataError("the contrastive loss needs binary pairs; use cosent, angle or cosine for graded scores")
    same = targets > 0.5
    return contrastive_loss(torch.cat([e1, e2]), pairs_from_pair_batch(same), neg_margin=config.margin, distance="cosine")


def _scaled_targets(pairs: TextPairs) -> np.ndarray:
    if pairs.binary:
        return pairs.targets.astype(np.float64)
    lo, hi = float(pairs.targets.min()), float(pairs.targets.max())
    return (pairs.targets - lo) / (hi - lo) if hi > lo else np.zeros_like(pairs.targets)


def validation_score(twin: TextTwin, pairs: TextPairs) -> float:
    """Spearman correlation (graded) or ROC AUC (binary) of the twin's cosine on ``pairs``.

    Args:
        twin: the model.
        pairs: validation pairs.

    Returns:
        The score (higher = better).
    """
    from ..evaluation.text import text_pair_metrics

    metrics = text_pair_metrics(twin.similarity(pairs.texts_a, pairs.texts_b), pairs)
    return float(metrics["roc_auc"] if pairs.binary else metrics["spearman"])


class _BestKeeper:
    """Scores the validation pairs, keeps the best weights and writes them to ``out_dir``."""

    def __init__(self, twin: TextTwin, val: TextPairs | None, out_dir: str | Path | None, config: TextTrainConfig,
                 monitor: TextPairs | None = None) -> None:
        self.twin, self.val, self.config, self.monitor = twin, val, config, monitor
        self.out = None if out_dir is None else Path(out_dir) / "model"
        self.best: tuple[float, dict[str, torch.Tensor]] | None = None
        self.evals: list[dict[str, Any]] = []

    def score(self, step: int, history: list[dict[str, Any]]) -> float | None:
        """Score the current weights (None without validation pairs); keep and save them when best."""
        if self.val is None:
            return None
        value = validation_score(self.twin, self.val)
        record: dict[str, Any] = {"step": step, "val_score": value}
        if self.monitor is not None:  # recorded only: never used to choose the weights
            record["monitor_score"] = validation_score(self.twin, self.monitor)
        self.evals.append(record)
        logger.info("step %d: validation score %.4f%s", step, value,
                    f" (monitor {record['monitor_score']:.4f})" if "monitor_score" in record else "")
        if self.best is None or value > self.best[0]:
            self.best = (value, copy.deepcopy(self.twin.network.state_dict()))
            self.save(history)
        return value

    def save(self, history: list[dict[str, Any]]) -> None:
        if self.out is not None:
            self.twin.save(self.out, extra={"train": asdict(self.config), "history": history, "evals": self.evals})

    def restore(self) -> None:
        if self.best is not None:
            self.twin.network.load_state_dict(self.best[1])


def _wise_ft(keeper: _BestKeeper, start: dict[str, torch.Tensor], history: list[dict[str, Any]]) -> None:
    """Mix the kept best weights with the starting ones, the mix chosen on the validation
    pairs; each mix's scores go into the evals as {step, alpha, val_score[, monitor_score]}."""
    twin, val, monitor = keeper.twin, keeper.val, keeper.monitor
    assert val is not None
    step = keeper.evals[-1]["step"] if keeper.evals else 0
    monitored: list[float] = []

    def score() -> float:
        if monitor is not None:  # recorded only: never used to choose the mix
            monitored.append(validation_score(twin, monitor))
        return validation_score(twin, val)

    alpha, tried = choose_interpolation(twin.network, start, score)
    by_alpha = dict(zip(sorted((r["alpha"] for r in tried), reverse=True), monitored))  # tried from 1.0 down
    for r in tried:
        keeper.evals.append({"step": step, **r, **({"monitor_score": by_alpha[r["alpha"]]} if monitored else {})})
    logger.info("WiSE-FT: alpha %.1f chosen on the validation pairs (%s)", alpha,
                ", ".join(f"{r['alpha']:.1f}: {r['val_score']:.4f}" for r in tried))
    keeper.best = (max(r["val_score"] for r in tried), copy.deepcopy(twin.network.state_dict()))
    keeper.save(history)


def fit_text_pairs(
    twin: TextTwin,
    train: TextPairs,
    *,
    config: TextTrainConfig,
    val: TextPairs | None = None,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    monitor: TextPairs | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune (or train) ``twin`` on text pairs; keeps the best validation score's weights.

    Args:
        twin: the model, trained in place (its network's weights end as the best
            validation score's when ``val`` is given, else the last step's).
        train: the training pairs.
        config: the options (``eval_every``: also score ``val`` every N steps;
            ``eval_at_start``: score the starting weights too).
        val: validation pairs (Spearman or ROC AUC after every epoch), or None.
        out_dir: when given, the best model so far is written to ``out_dir/model`` (after
            every epoch without ``val``; atomic files: an interrupted run leaves the last good one).
        progress: show a progress bar (None = on a terminal).
        on_epoch: called with each epoch's record.
        monitor: pairs scored beside ``val`` at every evaluation and recorded as
            ``monitor_score`` in the evals, never used to choose the weights (a benchmark's
            learning curve on its test split); ignored without ``val``.

    Returns:
        One record per epoch: epoch, loss (mean), val_score (the epoch's last), seconds,
        steps; with ``eval_every``, the epoch's scores as ``evals`` [{step, val_score}].

    Raises:
        DataError: too few pairs, or a loss that does not fit the targets.
        TrainingDivergedError: the loss became NaN / infinite.
    """
    if len(train) < config.batch_size:
        raise DataError(f"{len(train)} training pairs, fewer than one batch of {config.batch_size}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = twin.network
    frozen = [m.weight for m in net.modules() if isinstance(m, torch.nn.Embedding) and m.weight.requires_grad] \
        if config.freeze_embeddings else []
    for w in frozen:
        w.requires_grad_(False)
    opt = make_optimizer([p for p in net.parameters() if p.requires_grad], optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(train) // config.batch_size
    total = config.epochs * steps_per_epoch if config.max_steps is None else min(config.max_steps, config.epochs * steps_per_epoch)
    sched = warmup_linear_schedule(opt, total_steps=total, warmup=config.warmup)
    targets = torch.as_tensor(_scaled_targets(train))
    history: list[dict[str, Any]] = []
    keeper = _BestKeeper(twin, val, out_dir, config, monitor)
    start = copy.deepcopy(net.state_dict()) if config.wise_ft and val is not None else None
    if config.eval_at_start:
        keeper.score(0, history)
    step = 0
    with ProgressBar(progress) as bar:
        for epoch in range(1, config.epochs + 1):
            if step >= total:
                break
            t0, losses, first_eval = time.perf_counter(), [], len(keeper.evals)
            net.train()
            perm = rng.permutation(len(train))
            n_batches = min(steps_per_epoch, total - step)
            task = bar.task(f"epoch {epoch}/{config.epochs}", n_batches)
            for b in range(n_batches):
                idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
                ids = twin.tokenize([train.texts_a[i] for i in idx] + [train.texts_b[i] for i in idx])
                e = net.embed(ids)
                loss = text_pair_loss(e[: len(idx)], e[len(idx) :], targets[idx].to(e.dtype), config, binary=train.binary)
                if not math.isfinite(loss.item()):
                    raise TrainingDivergedError(f"the loss became {loss.item()} at step {step + 1}; lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                opt.step()
                sched.step()
                step += 1
                losses.append(loss.item())
                bar.advance(task, f"loss {np.mean(losses[-50:]):.4f}")
                if config.eval_every and step % config.eval_every == 0 and b < n_batches - 1:
                    keeper.score(step, history)
                    net.train()
            record: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)), "steps": step}
            value = keeper.score(step, history + [record])
            if value is not None:
                record["val_score"] = value
                if config.eval_every:
                    record["evals"] = keeper.evals[first_eval:]
            record["seconds"] = round(time.perf_counter() - t0, 2)
            history.append(record)
            if val is None:
                keeper.save(history)
            if on_epoch is not None:
                on_epoch(record)
    keeper.restore()
    if start is not None:
        _wise_ft(keeper, start, history)
    for w in frozen:  # frozen for this run only
        w.requires_grad_(True)
    net.eval()
    return history
