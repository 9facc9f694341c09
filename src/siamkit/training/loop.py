"""The fit loop: batches -> embeddings -> miner -> loss -> optimiser step.

Determinism and resume: every epoch draws its batches, augmentation and dropout from
generators seeded by (seed, epoch). A checkpoint after each epoch stores the weights,
the optimiser and scheduler state, and the early-stopping state, so a resumed run
continues to exactly the same weights as an uninterrupted one (same seed, CPU).

Around the epochs, callbacks (:mod:`siamkit.training.callbacks`) choose the best epoch,
stop early and write the checkpoint (:mod:`siamkit.training.checkpoint`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ..data.augment import RandomAffine
from ..data.lighting import RandomLighting
from ..data.images import to_float
from ..data.splits import split_by_class
from ..errors import DataError, ModelFileError, TrainingDivergedError
from ..evaluation.metrics import verification_metrics
from ..inference import autocast_context, embed_all, pair_distances_of_embeddings
from ..network import SiameseNetwork
from ..tuples import Pairs, all_pairs, pairs_from_pair_batch
from .callbacks import Callback, CallbackLike, EarlyStopping, KeepBest, TrainState, as_callback
from .checkpoint import CHECKPOINT_DIR, Checkpoint, kept_checkpoint_note, read_checkpoint_state, restore_checkpoint
from .components import build_network, make_augment, make_miner, make_optimizer, make_sampler, make_scheduler, resolve_precision
from .config import TrainConfig
from .distributed import DistEnv, Embedder, barrier, check_shares, global_batch, init_from_env, wrap
from .health import TrainingHealth
from .init_weights import load_initial_weights
from .objective import Objective
from .progress import ProgressBar
from .weight_average import WeightAverage, averaged_weights

__all__ = ["fit", "FitResult", "build_network", "validate", "read_checkpoint_state", "CHECKPOINT_DIR"]

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        network: the best network (by validation ROC AUC; the last one without validation).
        history: one record per epoch (loss, validation metrics, lr, speed).
        best_epoch: 1-based epoch of ``network``.
        stopped_early: True when early stopping ended the run.
        members: with ``config.ensemble > 1``, each member's seed, best epoch and metric.
    """

    network: SiameseNetwork
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float | None = None
    stopped_early: bool = False
    members: list[dict[str, Any]] | None = None


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**62)


def validate(
    network: SiameseNetwork, x: torch.Tensor, y: torch.Tensor, *, precision: str = "fp32", max_pairs: int = 200_000
) -> dict[str, float]:
    """Verification metrics of all (or max_pairs random) pairs of a labelled set.

    Args:
        network: the network to score.
        x: the validation inputs.
        y: their classes (at least 2).
        precision: fp32 or bf16 (autocast) for the embeddings.
        max_pairs: score at most this many pairs (a seeded random subset).

    Shapes:
        x (N, ...), y (N,).

    Returns:
        ``{"val_roc_auc", "val_eer"}`` (NaN when a distance is not finite).
    """
    e = embed_all(network, x, precision=precision)
    a, b, same = all_pairs(y)
    if a.numel() > max_pairs:
        keep = torch.randperm(a.numel(), generator=torch.Generator().manual_seed(0))[:max_pairs]
        a, b, same = a[keep], b[keep], same[keep]
    d = pair_distances_of_embeddings(network, e, a, b)
    if not torch.isfinite(d).all():
        return {"val_roc_auc": float("nan"), "val_eer": float("nan")}
    r = verification_metrics(d, same)
    return {"val_roc_auc": r.roc_auc, "val_eer": r.eer}


# --------------------------------------------------------------------------- set-up


def _check_data(
    train_x: torch.Tensor, train_y: torch.Tensor, config: TrainConfig, groups: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The labels (and groups) as long tensors, once the inputs are known to be usable."""
    train_y = torch.as_tensor(train_y).long()
    if train_x.shape[0] != train_y.numel():
        raise DataError(f"{train_x.shape[0]} samples but {train_y.numel()} labels")
    if train_x.shape[0] == 0:
        raise DataError("no training samples")
    if train_x.is_floating_point() and not torch.isfinite(train_x).all():
        raise DataError("training inputs contain NaN or infinity")
    if groups is not None:
        groups = torch.as_tensor(groups).long()
        if groups.shape != train_y.shape:
            raise DataError(f"groups must have one entry per training sample ({train_y.numel()}), got {tuple(groups.shape)}")
    if groups is not None and config.batching != "classes":
        raise DataError("groups shape class batches; pair batching (batching='pairs') does not use them")
    if config.classes_per_group is not None and groups is None:
        raise DataError("classes_per_group is set but no groups were given (fit(..., groups=...))")
    return train_y, groups


@dataclass
class _Data:
    """The training and validation samples of a run."""

    x: torch.Tensor
    y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    groups: torch.Tensor | None


def _prepare_data(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    config: TrainConfig,
    val_x: torch.Tensor | None,
    val_y: torch.Tensor | None,
    groups: torch.Tensor | None,
) -> _Data:
    """Check the inputs and hold out ``config.val_fraction`` of the classes when no
    validation set is given."""
    train_y, groups = _check_data(train_x, train_y, config, groups)
    if val_x is None and config.val_fraction > 0:
        tr, va = split_by_class(train_y, config.val_fraction, config.seed)
        train_x, train_y, val_x, val_y = train_x[tr], train_y[tr], train_x[va], train_y[va]
        if groups is not None:
            groups = groups[tr]
    if torch.unique(train_y).numel() < 2:
        raise DataError("training data has a single class: similarity needs at least 2 classes")
    return _Data(train_x, train_y, val_x, val_y, groups)


def _make_proxies(
    config: TrainConfig, network: SiameseNetwork, data: _Data, opt: torch.optim.Optimizer
) -> tuple[torch.nn.Parameter | None, torch.Tensor | None]:
    """The normsoftmax class proxies (trained with the network), and the classes they
    stand for; (None, None) for other losses."""
    if config.loss != "normsoftmax":
        return None, None
    class_values = torch.unique(data.y)
    network.eval()
    with torch.no_grad():
        dim = int(network.embed(to_float(data.x[:2])).shape[1])
    network.train()
    gp = torch.Generator().manual_seed(config.seed)
    proxies = torch.nn.Parameter(torch.randn(class_values.numel(), dim, generator=gp))
    opt.add_param_group({"params": [proxies]})
    return proxies, class_values


def _choose_sampler(config: TrainConfig, data: _Data, sampler: Any) -> Any:
    if sampler is None:
        return make_sampler(config, data.y, data.groups)
    if not callable(getattr(sampler, "batches", None)):
        raise TypeError(f"sampler must have a batches(generator) method, got {type(sampler).__name__}")
    if data.groups is not None:
        raise DataError("pass groups or your own sampler, not both")
    return sampler


@dataclass
class _Run:
    """What stays fixed while a run trains: the data, the sampler, the objective, the
    augmentation and the precision."""

    data: _Data
    sampler: Any
    objective: Objective
    augment: RandomAffine | None
    view_aug: RandomAffine
    precision: str
    channels_last: bool
    lighting: RandomLighting | None = None
    env: DistEnv | None = None
    embedder: torch.nn.Module | None = None

    def inputs(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The inputs of a batch, augmented (with two views: both views, one after the other).

        Args:
            idx: the batch's sample indices.
            g: the epoch's generator (the augmentation draws from it).

        Shapes:
            idx (B,) -> (B, ...) float, (2B, ...) with two views.

        Returns:
            The batch, in the run's memory format.
        """
        x = to_float(self.data.x[idx])
        if self.objective.two_views:
            x = torch.cat([self.view_aug(x, g), self.view_aug(x, g)])
        elif self.augment is not None:
            x = self.augment(x, g)
        if self.lighting is not None:
            x = self.lighting(x, g)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _set_up(config: TrainConfig, data: _Data, sampler: Any, init: Any = None) -> tuple[TrainState, Any, Objective]:
    """A fresh run: network (seeded, or ``init``'s weights), optimiser, loss parameters, sampler, schedule."""
    torch.manual_seed(config.seed)
    network = build_network(config, data.x.shape[1:])
    if init is not None:
        load_initial_weights(network, init)
    opt = make_optimizer(network.parameters(), optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay)
    proxies, class_values = _make_proxies(config, network, data, opt)
    sampler = _choose_sampler(config, data, sampler)
    steps = config.steps_per_epoch or len(sampler)
    state = TrainState(
        config=config,
        network=network,
        optimizer=opt,
        scheduler=make_scheduler(config, opt, steps),
        sample_shape=list(data.x.shape[1:]),
        steps_per_epoch=steps,
        proxies=proxies,
        averaged=WeightAverage(network, config.ema) if config.ema else None,
    )
    return state, sampler, Objective(config, network, None, proxies=proxies, class_values=class_values)


def _make_run(state: TrainState, data: _Data, sampler: Any, objective: Objective) -> _Run:
    """The precision, memory format, miner and augmentation of a (set-up or resumed) run."""
    config = state.config
    images = data.x.ndim == 4
    precision, channels_last = resolve_precision(config, images=images)
    if channels_last:
        state.network = state.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    objective.network = state.network
    objective.miner = make_miner(config, state.network)
    augment = make_augment(config) if config.augment and images else None
    if objective.two_views and not images:
        raise DataError("the views loss and instance_weight need image inputs (the views are random affine transforms)")
    view_aug = augment or make_augment(config)
    state.has_val = data.val_x is not None and data.val_y is not None and torch.unique(data.val_y).numel() >= 2
    lighting = RandomLighting(config.lighting) if config.lighting and images else None
    env = init_from_env()
    embedder = None
    if env is not None:
        check_shares(config, env)
        embedder = wrap(Embedder(state.network), env)
    return _Run(data, sampler, objective, augment, view_aug, precision, channels_last, lighting, env, embedder)


def _global_batch(run: _Run, batch: Any, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, Pairs | None, int]:
    """The distributed step's global batch (:func:`~siamkit.training.distributed.global_batch`)."""
    assert run.env is not None and run.embedder is not None
    return global_batch(
        batch, run.data.y, run.env, lambda local: run.inputs(local, g), run.embedder,
        parts=2 if run.objective.two_views else 1, precision=run.precision,
    )


# --------------------------------------------------------------------------- epochs


def _cycle(sampler: Any, g: torch.Generator) -> Iterator[Any]:
    while True:
        yield from sampler.batches(g)


def _train_step(state: TrainState, run: _Run, batch: Any, g: torch.Generator, where: str) -> tuple[float, int, float | None]:
    """One optimiser step on one batch; returns (the batch loss, images in the batch, the
    total gradient norm before clipping: None when neither clipping nor health needs it)."""
    config, network = state.config, state.network
    if run.env is not None:
        e, y, given_pairs, n_images = _global_batch(run, batch, g)
    else:
        given_pairs = None
        if isinstance(batch, tuple):  # explicit (i, j, same) pairs: embed cat([x_i, x_j])
            idx = torch.cat([batch[0], batch[1]])
            given_pairs = pairs_from_pair_batch(batch[2])
        else:
            idx = batch
        with autocast_context(run.precision):
            e = network.embed(run.inputs(idx, g)).float()
        y, n_images = run.data.y[idx], int(idx.numel())
    loss = run.objective(e, y, given_pairs)
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"the loss became {loss.item()} at {where}; lower the learning rate (--lr) or check the inputs for NaN"
        )
    opt = state.optimizer
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm: float | None = None
    if config.grad_clip is not None:  # measures the norm before clipping: no second pass
        grad_norm = float(torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip))
    elif config.health:
        grads = [p.grad for p in network.parameters() if p.grad is not None]
        grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
    if grad_norm is not None and config.health and not math.isfinite(grad_norm):
        raise TrainingDivergedError(
            f"the gradient norm became {grad_norm} at {where}; lower the learning rate (--lr) or clip gradients (--grad-clip)"
        )
    opt.step()
    if state.averaged is not None:
        state.averaged.update(network)
    if state.scheduler is not None and config.schedule == "cosine":
        state.scheduler.step()
    return loss.item(), n_images, grad_norm


def _train_epoch(state: TrainState, run: _Run, progress: ProgressBar, epoch: int) -> dict[str, Any]:
    """Train one epoch from its own seeds; returns its record (loss, lr, speed; with
    health on, ``health.grad_norm``: the mean total gradient norm of its steps)."""
    config = state.config
    seed = _epoch_seed(config.seed, epoch)
    g = torch.Generator().manual_seed(seed)
    # every rank draws the same global batches from g; augmentation differs per rank
    g_aug = g if run.env is None else torch.Generator().manual_seed(seed + 1_000_003 * (run.env.rank + 1))
    torch.manual_seed(seed + 1)
    state.network.train()
    task = progress.task(f"epoch {epoch}/{config.epochs}", state.steps_per_epoch)
    t0 = time.perf_counter()
    total, n_batches, n_images, grad_total = 0.0, 0, 0, 0.0
    lr = state.optimizer.param_groups[0]["lr"]  # at the epoch's start (cosine changes it every step)
    for step, batch in enumerate(islice(_cycle(run.sampler, g), state.steps_per_epoch), start=1):
        loss, n, grad_norm = _train_step(state, run, batch, g_aug, f"epoch {epoch}, step {step}")
        total += loss
        n_batches += 1
        n_images += n
        grad_total += grad_norm or 0.0
        progress.advance(task, f"loss {total / n_batches:.4f}")
    seconds = time.perf_counter() - t0
    if state.scheduler is not None and config.schedule != "cosine":
        state.scheduler.step()
    record: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": total / max(1, n_batches),
        "lr": lr,
        "seconds": round(seconds, 3),
        "images_per_s": round(n_images / seconds, 1) if seconds > 0 else None,
    }
    if config.health:
        record["health"] = {"grad_norm": grad_total / max(1, n_batches)}
    return record


def _validation_scores(
    state: TrainState, run: _Run, validate_fn: Callable[..., dict[str, float]] | None
) -> dict[str, float]:
    assert run.data.val_x is not None and run.data.val_y is not None
    scores = (validate_fn or validate)(state.network, run.data.val_x, run.data.val_y, precision=run.precision)
    if "val_roc_auc" not in scores:
        raise KeyError(f"validate_fn must return a dict with 'val_roc_auc', got keys {sorted(scores)}")
    return scores


def _callbacks(
    config: TrainConfig, out: Path | None, user: Sequence[CallbackLike], data: _Data, own_validation: bool
) -> list[Callback]:
    """The loop's own callbacks (health, best epoch, early stopping, checkpoint), then the user's."""
    own: list[Callback] = []
    if config.health:
        own.append(TrainingHealth(config, data.x, data.y, data.val_x, data.val_y, out_dir=out, compare_raw=own_validation))
    own += [KeepBest(config.tie_break), EarlyStopping(config.patience)]
    if out is not None:
        own.append(Checkpoint(out))
    return own + [as_callback(cb) for cb in user]


def _epochs(
    state: TrainState, run: _Run, hooks: list[Callback], validate_fn: Callable[..., dict[str, float]] | None
) -> bool:
    """Train the remaining epochs, the callbacks after each; True when a callback stopped the run."""
    with ProgressBar(state.config.progress if run.env is None or run.env.is_main else False) as progress:
        for epoch in range(state.epoch + 1, state.config.epochs + 1):
            if state.stop:
                return True
            record = _train_epoch(state, run, progress, epoch)
            with averaged_weights(state):  # config.ema: validation and callbacks see the average
                if state.has_val:
                    record.update(_validation_scores(state, run, validate_fn))
                state.epoch = epoch
                state.history.append(record)
                logger.info("epoch %d: %s", epoch, record)
                for cb in hooks:
                    cb.on_epoch_end(record, state)
    return False


def fit(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    config: TrainConfig,
    *,
    val_x: torch.Tensor | None = None,
    val_y: torch.Tensor | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[CallbackLike] = (),
    groups: torch.Tensor | None = None,
    sampler: Any = None,
    validate_fn: Callable[..., dict[str, float]] | None = None,
    init: Any = None,
) -> FitResult:
    """Train a Siamese network on labelled samples.

    Args:
        train_x: (N, C, H, W) uint8 or float images, or (N, F) vectors.
        train_y: (N,) integer class labels.
        config: the options (see :class:`TrainConfig`).
        val_x, val_y: a validation set of other classes; if None and
            ``config.val_fraction > 0``, that fraction of the training classes is held out.
        out_dir: where to write ``model/`` (the best model), ``checkpoint/`` (after every
            epoch) and ``metrics.jsonl``; None = keep everything in memory.
        resume: continue from ``out_dir/checkpoint``.
        callbacks: functions called with each epoch's record after its checkpoint is
            written, or :class:`~siamkit.training.callbacks.Callback` objects (their
            ``on_train_begin(state)``, ``on_epoch_end(record, state)`` and
            ``on_train_end(state)``; setting ``state.stop`` ends the run).
        groups: (N,) a group per training sample, constant within a class (e.g. the
            alphabet of an Omniglot character): batches are then filled group by group,
            at most ``config.classes_per_group`` classes from each (see
            :class:`MPerClassSampler`); class batching only.
        sampler: your own batch sampler instead of the one the config implies: an
            object with ``batches(generator)`` yielding index tensors (class batching)
            or ``(i, j, same)`` tuples (pair batching), and ``__len__`` (batches per
            epoch). It must draw only from ``generator`` for resume to stay exact.
        validate_fn: your own validation, ``validate_fn(network, val_x, val_y,
            precision=...) -> dict`` holding at least ``"val_roc_auc"`` (the metric that
            picks the best epoch; higher is better), e.g. a task's own pair protocol.
            Default: ROC AUC / EER over all pairs of the validation set.
        init: start from these weights instead of random ones: a saved model folder, a
            network or a state dict of the same architecture (:mod:`siamkit.training.init_weights`).

    Returns:
        FitResult with the best network.

    Example:
        >>> import torch
        >>> from siamkit import TrainConfig, fit
        >>> x, y = torch.rand(64, 1, 16, 16), torch.arange(8).repeat_interleave(8)
        >>> result = fit(x, y, TrainConfig(epochs=1, batch_size=16, val_fraction=0, progress=False))
    """
    if config.ensemble > 1:  # n networks, seeds apart, joined into one (training/ensemble.py)
        from .ensemble import fit_ensemble
        return fit_ensemble(train_x, train_y, config, out_dir=out_dir, resume=resume, val_x=val_x, val_y=val_y,
                            callbacks=callbacks, groups=groups, sampler=sampler, validate_fn=validate_fn, init=init)
    data = _prepare_data(train_x, train_y, config, val_x, val_y, groups)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    state, batch_sampler, objective = _set_up(config, data, sampler, init)
    if resume:
        if out is None:
            raise ModelFileError("resume needs out_dir")
        restore_checkpoint(out, state)
    run = _make_run(state, data, batch_sampler, objective)
    writes = out if run.env is None or run.env.is_main else None  # files from rank 0 only
    hooks = _callbacks(config, writes, callbacks, data, validate_fn is None)
    for cb in hooks:
        cb.on_train_begin(state)
    stopped_early = False
    try:
        stopped_early = _epochs(state, run, hooks, validate_fn)
    except TrainingDivergedError as e:
        raise TrainingDivergedError(f"{e}{kept_checkpoint_note(out)}") from None
    for cb in hooks:
        cb.on_train_end(state)
    if run.env is not None:
        barrier()  # no rank returns before rank 0 has written the run's files
    state.network.eval()
    return FitResult(state.network, state.history, state.best_epoch, state.best_metric, stopped_early)
