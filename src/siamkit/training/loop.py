"""The fit loop: batches -> embeddings -> miner -> loss -> optimiser step.

Determinism and resume: every epoch draws its batches, augmentation and dropout from
generators seeded by (seed, epoch). A checkpoint after each epoch stores the weights,
the optimiser and scheduler state, and the early-stopping state, so a resumed run
continues to exactly the same weights as an uninterrupted one (same seed, CPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..data.augment import RandomAffine
from ..data.images import to_float
from ..data.samplers import BalancedPairSampler, MPerClassSampler
from ..data.splits import split_by_class
from ..encoders import create_encoder
from ..errors import DataError, ModelFileError
from ..evaluation.metrics import verification_metrics
from ..inference import autocast_context, embed_all, pair_distances_of_embeddings
from ..io import (
    flatten_optimizer_state,
    load_state_dict,
    save_model,
    save_state_dict,
    unflatten_optimizer_state,
    write_json_atomic,
)
from ..losses import (
    binary_pair_loss,
    contrastive_loss,
    multiple_negatives_ranking_loss,
    normalized_softmax_loss,
    triplet_loss,
)
from ..miners import MINERS, BaseMiner, HardPairMiner
from ..network import InputSpec, SiameseNetwork
from ..tuples import Pairs, Triplets, all_pairs, pairs_from_pair_batch
from .config import TrainConfig

__all__ = ["fit", "FitResult", "build_network", "CHECKPOINT_DIR"]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer.json"
METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        network: the best network (by validation ROC AUC; the last one without validation).
        history: one record per epoch (loss, validation metrics, lr, speed).
        best_epoch: 1-based epoch of ``network``.
        stopped_early: True when early stopping ended the run.
    """

    network: SiameseNetwork
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float | None = None
    stopped_early: bool = False


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**62)


def build_network(config: TrainConfig, sample_shape: Sequence[int]) -> SiameseNetwork:
    """Build the network a config describes, for inputs of ``sample_shape`` (no batch dim)."""
    kwargs = dict(config.encoder_kwargs)
    if config.encoder == "mlp":
        kwargs.setdefault("in_features", int(math.prod(sample_shape)))
        kwargs.setdefault("embedding_dim", config.embedding_dim or 64)
    else:
        if len(sample_shape) != 3:
            raise DataError(f"image encoders take (C, H, W) samples, got shape {tuple(sample_shape)}")
        kwargs.setdefault("in_channels", int(sample_shape[0]))
        kwargs.setdefault("embedding_dim", config.embedding_dim)
    encoder = create_encoder(config.encoder, **kwargs)
    spec = InputSpec.for_sample(sample_shape)
    return SiameseNetwork(
        encoder,
        distance=config.distance,
        normalize=config.normalize,
        head="l1" if config.loss == "binary" else None,
        input_spec=spec,
    )


def resolve_precision(config: TrainConfig, *, images: bool = True) -> tuple[str, bool]:
    """(precision, channels_last) actually used: ``auto`` is bf16 autocast with
    channels_last where the CPU has native bfloat16 kernels, fp32 elsewhere."""
    if config.precision != "auto":
        return config.precision, bool(config.channels_last and images)
    try:
        fast_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        fast_bf16 = False
    return ("bf16", images) if fast_bf16 else ("fp32", bool(config.channels_last and images))


def _make_miner(config: TrainConfig, network: SiameseNetwork) -> BaseMiner | None:
    if config.miner is None:
        return None
    if config.miner == "hard_pairs":
        return HardPairMiner(pos_margin=config.pos_margin, neg_margin=config.margin, distance=network.distance)
    return MINERS[config.miner](distance=network.distance)


def _batch_loss(
    config: TrainConfig,
    network: SiameseNetwork,
    miner: BaseMiner | None,
    e: torch.Tensor,
    y: torch.Tensor,
    given_pairs: Pairs | None = None,
    proxies: torch.Tensor | None = None,
    class_values: torch.Tensor | None = None,
) -> torch.Tensor:
    if config.loss == "normsoftmax":
        assert proxies is not None and class_values is not None
        return normalized_softmax_loss(
            e, torch.searchsorted(class_values, y), proxies, scale=config.classifier_scale, margin=config.margin
        )
    if config.loss == "mnr":
        m = config.m_per_class
        e = e.view(-1, m, e.shape[1])
        return multiple_negatives_ranking_loss(e[:, 0], e[:, 1], scale=config.mnr_scale, symmetric=True)
    if given_pairs is not None:
        tuples: Pairs | Triplets = given_pairs
    else:
        assert miner is not None
        tuples = miner.mine(e, y)
    if config.loss == "triplet":
        assert isinstance(tuples, Triplets)
        return triplet_loss(e, tuples, distance=network.distance, margin=config.margin)
    assert isinstance(tuples, Pairs)
    if config.loss == "contrastive":
        return contrastive_loss(
            e, tuples, distance=network.distance, pos_margin=config.pos_margin, neg_margin=config.margin
        )
    logits = network.pair_logits(e[tuples.a], e[tuples.b])
    # balance genuine and impostor pairs: in an m-per-class batch impostors dominate
    per = binary_pair_loss(logits, tuples.same, reduction="none")
    if per.numel() == 0:
        return e.sum() * 0.0
    same = tuples.same
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        return per.mean()
    return 0.5 * per[same].mean() + 0.5 * per[~same].mean()


def _make_optimizer(config: TrainConfig, network: SiameseNetwork) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(
    config: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.schedule == "cosine":  # stepped after every batch: reaches 0 at the last step
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=config.step_size, gamma=config.gamma)
    return None


def validate(
    network: SiameseNetwork, x: torch.Tensor, y: torch.Tensor, *, precision: str = "fp32", max_pairs: int = 200_000
) -> dict[str, float]:
    """Verification metrics of all (or max_pairs random) pairs of a labelled set."""
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


class _Progress:
    """A rich progress bar on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), transient=False,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def task(self, description: str, total: int) -> Any:
        return self._bar.add_task(description, total=total, info="") if self._bar else None

    def advance(self, task: Any, info: str = "") -> None:
        if self._bar is not None:
            self._bar.update(task, advance=1, info=info)


def _save_checkpoint(
    ckpt: Path,
    epoch: int,
    network: SiameseNetwork,
    opt: torch.optim.Optimizer,
    sched: Any,
    state: dict[str, Any],
    loss_state: dict[str, torch.Tensor] | None = None,
) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    model_file = f"epoch-{epoch:04d}.model.safetensors"
    opt_file = f"epoch-{epoch:04d}.optimizer.safetensors"
    save_state_dict(network.state_dict(), ckpt / model_file)
    if loss_state:  # parameters of the loss (the normsoftmax proxies): training state, not the model
        loss_file = f"epoch-{epoch:04d}.loss.safetensors"
        save_state_dict({k: v.detach() for k, v in loss_state.items()}, ckpt / loss_file)
        state = dict(state, loss_file=loss_file)
    tensors, opt_meta = flatten_optimizer_state(opt.state_dict())
    save_state_dict(tensors, ckpt / opt_file)
    record = dict(
        state,
        epoch=epoch,
        model_file=model_file,
        optimizer_file=opt_file,
        optimizer_meta=opt_meta,
        scheduler=sched.state_dict() if sched is not None else None,
    )
    write_json_atomic(ckpt / STATE_FILE, record)  # the commit point: older files are now stale
    for old in ckpt.glob("epoch-*.safetensors"):
        if not old.name.startswith(f"epoch-{epoch:04d}."):
            old.unlink(missing_ok=True)


def read_checkpoint_state(out_dir: str | Path) -> dict[str, Any]:
    """The trainer state of a run folder's checkpoint (for --resume)."""
    path = Path(out_dir) / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        raise ModelFileError(f"no checkpoint to resume in {out_dir} ({path} is missing)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelFileError(f"checkpoint state {path} is damaged: {e}") from None


def fit(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    config: TrainConfig,
    *,
    val_x: torch.Tensor | None = None,
    val_y: torch.Tensor | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    groups: torch.Tensor | None = None,
    sampler: Any = None,
    validate_fn: Callable[..., dict[str, float]] | None = None,
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
        callbacks: called with each epoch's record after its checkpoint is written.
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

    Returns:
        FitResult with the best network.

    Example:
        >>> import torch
        >>> from siamkit import TrainConfig, fit
        >>> x, y = torch.rand(64, 1, 16, 16), torch.arange(8).repeat_interleave(8)
        >>> result = fit(x, y, TrainConfig(epochs=1, batch_size=16, val_fraction=0, progress=False))
    """
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
    if val_x is None and config.val_fraction > 0:
        tr, va = split_by_class(train_y, config.val_fraction, config.seed)
        train_x, train_y, val_x, val_y = train_x[tr], train_y[tr], train_x[va], train_y[va]
        if groups is not None:
            groups = groups[tr]
    if torch.unique(train_y).numel() < 2:
        raise DataError("training data has a single class: similarity needs at least 2 classes")

    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / CHECKPOINT_DIR if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)
    network = build_network(config, train_x.shape[1:])
    opt = _make_optimizer(config, network)
    proxies: torch.nn.Parameter | None = None
    class_values: torch.Tensor | None = None
    if config.loss == "normsoftmax":
        class_values = torch.unique(train_y)
        network.eval()
        with torch.no_grad():
            dim = int(network.embed(to_float(train_x[:2])).shape[1])
        network.train()
        gp = torch.Generator().manual_seed(config.seed)
        proxies = torch.nn.Parameter(torch.randn(class_values.numel(), dim, generator=gp))
        opt.add_param_group({"params": [proxies]})
    if sampler is not None:
        if not callable(getattr(sampler, "batches", None)):
            raise TypeError(f"sampler must have a batches(generator) method, got {type(sampler).__name__}")
        if groups is not None:
            raise DataError("pass groups or your own sampler, not both")
    elif config.batching == "pairs":
        sampler = BalancedPairSampler(
            train_y, batch_size=config.batch_size // 2, pairs_per_epoch=max(1, train_y.numel() // 2)
        )
    else:
        sampler = MPerClassSampler(
            train_y,
            m=config.m_per_class,
            batch_size=config.batch_size,
            groups=groups,
            classes_per_group=config.classes_per_group,
        )
    steps = config.steps_per_epoch or len(sampler)
    sched = _make_scheduler(config, opt, steps)
    history: list[dict[str, Any]] = []
    best_metric: float | None = None
    best_epoch = 0
    bad_epochs = 0
    start_epoch = 1
    best_state: dict[str, torch.Tensor] | None = None

    if resume:
        if ckpt is None:
            raise ModelFileError("resume needs out_dir")
        st = read_checkpoint_state(out)
        saved = TrainConfig.from_dict(st["config"])
        ignore = {"progress"}  # display only: it does not change the result
        if {k: v for k, v in saved.to_dict().items() if k not in ignore} != {
            k: v for k, v in config.to_dict().items() if k not in ignore
        }:
            raise ModelFileError(f"the checkpoint in {out} was trained with other options; resume with the same ones")
        if list(st.get("sample_shape", [])) != list(train_x.shape[1:]):
            raise DataError(
                f"the checkpoint in {out} was trained on inputs of shape {st.get('sample_shape')}, "
                f"the data has {list(train_x.shape[1:])} (channel count or image size differ)"
            )
        network.load_state_dict(load_state_dict(ckpt / st["model_file"]))
        if proxies is not None:
            if "loss_file" not in st:
                raise ModelFileError(f"the checkpoint in {out} has no loss state (proxies) to resume")
            with torch.no_grad():
                proxies.copy_(load_state_dict(ckpt / st["loss_file"])["proxies"])
        opt.load_state_dict(unflatten_optimizer_state(load_state_dict(ckpt / st["optimizer_file"]), st["optimizer_meta"]))
        if sched is not None and st.get("scheduler") is not None:
            sched.load_state_dict(st["scheduler"])
            if config.schedule == "cosine" and getattr(sched, "T_max", None) != config.epochs * steps:
                raise ModelFileError(
                    f"the checkpoint in {out} anneals the learning rate over {getattr(sched, 'T_max', '?')} steps, "
                    f"this run over {config.epochs * steps} (checkpoints written before cosine annealing was stepped "
                    "every batch count epochs; or the number of batches per epoch changed): start a new run"
                )
        history, best_metric, best_epoch, bad_epochs = st["history"], st["best_metric"], st["best_epoch"], st["bad_epochs"]
        start_epoch = int(st["epoch"]) + 1
        if best_epoch and out is not None and (out / MODEL_DIR / "model.safetensors").is_file():
            best_state = load_state_dict(out / MODEL_DIR / "model.safetensors")
        logger.info("resuming %s at epoch %d", out, start_epoch)

    precision, channels_last = resolve_precision(config, images=train_x.ndim == 4)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    miner = _make_miner(config, network)
    augment = (
        RandomAffine(
            degrees=config.rotation, shear=config.shear, scale=config.scale, translate=config.translate, fill=config.fill
        )
        if config.augment and train_x.ndim == 4
        else None
    )
    two_views = config.loss == "views" or config.instance_weight > 0
    if two_views and train_x.ndim != 4:
        raise DataError("the views loss and instance_weight need image inputs (the views are random affine transforms)")
    view_aug = augment or RandomAffine(
        degrees=config.rotation, shear=config.shear, scale=config.scale, translate=config.translate, fill=config.fill
    )
    has_val = val_x is not None and val_y is not None and torch.unique(val_y).numel() >= 2
    stopped_early = False
    with _Progress(config.progress) as progress:
        for epoch in range(start_epoch, config.epochs + 1):
            if config.patience is not None and has_val and bad_epochs >= config.patience:
                stopped_early = True
                break
            seed = _epoch_seed(config.seed, epoch)
            g = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed + 1)
            network.train()
            task = progress.task(f"epoch {epoch}/{config.epochs}", steps)
            t0 = time.perf_counter()
            total, n_batches, n_images = 0.0, 0, 0
            lr = opt.param_groups[0]["lr"]  # at the epoch's start (cosine changes it every step)
            batches = _take(_cycle(sampler, g), steps)
            for batch in batches:
                given_pairs: Pairs | None = None
                if isinstance(batch, tuple):  # explicit (i, j, same) pairs: embed cat([x_i, x_j])
                    idx = torch.cat([batch[0], batch[1]])
                    given_pairs = pairs_from_pair_batch(batch[2])
                else:
                    idx = batch
                x = to_float(train_x[idx])
                y = train_y[idx]
                if two_views:
                    x = torch.cat([view_aug(x, g), view_aug(x, g)])
                elif augment is not None:
                    x = augment(x, g)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast_context(precision):
                    e = network.embed(x)
                e = e.float()
                if two_views:
                    e, e2 = e[: idx.numel()], e[idx.numel() :]
                    views = multiple_negatives_ranking_loss(
                        e, e2, scale=config.instance_scale, labels=y, symmetric=True
                    )
                    if config.loss == "views":
                        loss = views
                    else:
                        loss = (
                            _batch_loss(config, network, miner, e, y, None, proxies, class_values)
                            + config.instance_weight * views
                        )
                else:
                    loss = _batch_loss(config, network, miner, e, y, given_pairs, proxies, class_values)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss became {loss.item()} at epoch {epoch}; lower the learning rate (--lr) "
                        "or check the inputs for NaN"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
                opt.step()
                if sched is not None and config.schedule == "cosine":
                    sched.step()
                total += loss.item()
                n_batches += 1
                n_images += int(idx.numel())
                progress.advance(task, f"loss {total / n_batches:.4f}")
            seconds = time.perf_counter() - t0
            if sched is not None and config.schedule != "cosine":
                sched.step()
            record: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": total / max(1, n_batches),
                "lr": lr,
                "seconds": round(seconds, 3),
                "images_per_s": round(n_images / seconds, 1) if seconds > 0 else None,
            }
            improved = False
            if has_val:
                assert val_x is not None and val_y is not None
                scores = (validate_fn or validate)(network, val_x, val_y, precision=precision)
                if "val_roc_auc" not in scores:
                    raise KeyError(f"validate_fn must return a dict with 'val_roc_auc', got keys {sorted(scores)}")
                record.update(scores)
                metric = record["val_roc_auc"]
                if best_metric is None:
                    better = True
                elif metric != metric:  # NaN never wins
                    better = False
                else:
                    better = metric >= best_metric if config.tie_break == "later" else metric > best_metric
                if better:
                    best_metric, best_epoch, bad_epochs, improved = metric, epoch, 0, True
                else:
                    bad_epochs += 1
            else:
                best_epoch, improved = epoch, True
            if improved:
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            history.append(record)
            logger.info("epoch %d: %s", epoch, record)
            if out is not None and ckpt is not None:
                if improved:
                    save_model(network, out / MODEL_DIR, extra={"train_config": config.to_dict(), "epoch": epoch})
                # rewritten whole from the history (which the checkpoint also holds), so a
                # resumed run never duplicates or drops an epoch's line
                _write_text_atomic(out / METRICS_FILE, "".join(json.dumps(h) + "\n" for h in history))
                _save_checkpoint(
                    ckpt,
                    epoch,
                    network,
                    opt,
                    sched,
                    {
                        "config": config.to_dict(),
                        "sample_shape": list(train_x.shape[1:]),
                        "history": history,
                        "best_metric": best_metric,
                        "best_epoch": best_epoch,
                        "bad_epochs": bad_epochs,
                    },
                    {"proxies": proxies} if proxies is not None else None,
                )
            for cb in callbacks:
                cb(record)
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    return FitResult(network, history, best_epoch, best_metric, stopped_early)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cycle(sampler: Any, g: torch.Generator):  # type: ignore[no-untyped-def]
    while True:
        yield from sampler.batches(g)


def _take(it, n: int):  # type: ignore[no-untyped-def]
    for _, item in zip(range(n), it):
        yield item
