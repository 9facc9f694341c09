"""Training health: statistics of a fixed probe batch after every epoch, and alarms that
name the likely cause of a failing run and its fix.

Embedding collapse (every input mapped to nearly the same point; batch-hard triplet
loss then sits at the margin) and a margin that no triplet violates any more do not
show in the training loss alone. :class:`TrainingHealth` (on by default,
``TrainConfig(health=False)`` turns it off) draws a probe batch once from the training
data with the run's seed (up to 256 samples, at least 2 per class), embeds it after every
epoch and writes into the epoch's record:

- ``record["health"]``: the positive / negative distance quantiles (5/50/95 %), the
  share of negative pairs closer than the median positive pair, the probe's ROC AUC,
  the fraction of active triplets (``d_ap - d_an + margin > 0``, triplet loss) or pairs
  (inside their margin, contrastive loss), the mean embedding norm, the std of the
  L2-normalised embeddings across the batch averaged over dimensions (and that times
  ``sqrt(D)``: about 1 for embeddings spread over the sphere, near 0 when collapsed), the
  effective rank (exp of the entropy of the normalised singular values, RankMe), and
  the mean total gradient norm of the epoch's steps (before clipping; measured by the loop);
- ``record["alarms"]``: ``{"kind", "message"}`` per alarm, also logged as warnings:
  ``collapse``, ``no_active`` and ``below_raw`` (validation ROC AUC below raw pixels'
  after ``raw_after`` epochs).

A NaN or infinite loss, gradient or probe embedding stops the run with
:class:`~siamkit.errors.TrainingDivergedError` before the epoch's checkpoint is written.
At the end of a run with an ``out_dir``, ``training.png`` plots the history.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from ..data.images import to_float
from ..errors import TrainingDivergedError
from ..evaluation.metrics import verification_metrics
from ..evaluation.plots import pyplot, save_figure
from ..inference import embed_all, network_pairwise
from ..tuples import all_pairs
from .callbacks import Callback, TrainState
from .config import TrainConfig

__all__ = [
    "PLOT_FILE",
    "TrainingHealth",
    "alarms_of",
    "effective_rank",
    "embedding_statistics",
    "probe_indices",
    "raw_input_auc",
    "summarize",
]

logger = logging.getLogger(__name__)

PLOT_FILE = "training.png"
COLLAPSE_RATIO = 0.1  # std of normalised embeddings below COLLAPSE_RATIO / sqrt(D): collapsed
# ... unless the probe's genuine pairs are still clearly closer than its impostor pairs and
# the loss is not stuck at the margin: a fresh network trained in short epochs (10 steps of
# batch-hard on signatures) can stay that concentrated for an epoch while it already
# separates the writers (probe ROC AUC 0.87, loss 0.16 against the margin 0.2)
SEPARATING_AUC = 0.75


def probe_indices(y: torch.Tensor, seed: int, size: int = 256) -> torch.Tensor:
    """A fixed probe batch: classes in a seeded random order, an equal number of samples
    from each (at least 2; classes with a single sample are left out), up to ``size``.

    Args:
        y: the training labels.
        seed: the run's seed.
        size: the most samples.

    Shapes:
        y (N,) -> (P,) indices, P <= size.

    Returns:
        The indices into the training set (empty when no class has 2 samples).
    """
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(y, return_counts=True)
    classes = classes[counts >= 2]
    if classes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    per = max(2, size // classes.numel())
    picked: list[torch.Tensor] = []
    total = 0
    for c in classes[torch.randperm(classes.numel(), generator=g)].tolist():
        members = torch.nonzero(y == c).flatten()
        take = members[torch.randperm(members.numel(), generator=g)[: min(per, size - total)]]
        if take.numel() < 2:
            break
        picked.append(take)
        total += take.numel()
        if total >= size:
            break
    return torch.cat(picked)


def effective_rank(e: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of a batch (RankMe, Garrido et al. 2023):
    1 when every row is a multiple of one vector, D for singular values all equal.

    Shapes:
        e (N, D) -> float.
    """
    s = torch.linalg.svdvals(e.double())
    if not s.sum() > 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _quantiles(d: torch.Tensor, prefix: str) -> dict[str, float | None]:
    if d.numel() == 0:
        return {f"{prefix}_q{q:02d}": None for q in (5, 50, 95)}
    qs = torch.quantile(d.double(), torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    return {f"{prefix}_q{q:02d}": float(v) for q, v in zip((5, 50, 95), qs)}


def _active_fraction(d: torch.Tensor, y: torch.Tensor, loss: str, margin: float, pos_margin: float) -> float | None:
    """Share of the probe's triplets (triplet loss) or pairs (contrastive) with a non-zero loss."""
    same = y[:, None] == y[None, :]
    eye = torch.eye(y.numel(), dtype=torch.bool)
    if loss == "triplet":
        a, p = torch.nonzero(same & ~eye, as_tuple=True)
        neg = ~same[a]  # (P, N): the negatives of each positive pair's anchor
        n = int(neg.sum())
        if n == 0:
            return None
        active = (d[a, p][:, None] - d[a] + margin > 0) & neg
        return int(active.sum()) / n
    if loss == "contrastive":
        i, j = torch.triu_indices(y.numel(), y.numel(), offset=1)
        dij, s = d[i, j], same[i, j]
        active = torch.where(s, dij > pos_margin, dij < margin)
        return float(active.double().mean()) if active.numel() else None
    return None


def embedding_statistics(
    e: torch.Tensor, y: torch.Tensor, d: torch.Tensor, *, loss: str, margin: float, pos_margin: float = 0.0
) -> dict[str, Any]:
    """The health statistics of one embedded probe batch.

    Args:
        e: the embeddings (as the network outputs them, normalised or not).
        y: their classes.
        d: the distance of every pair (lower = closer; the network's distance).
        loss: the training loss (the active share is for "triplet" and "contrastive"
            only; None for the others).
        margin: the triplet margin / the contrastive negative margin.
        pos_margin: the contrastive positive margin.

    Shapes:
        e (N, D), y (N,), d (N, N).

    Returns:
        ``pos_q05 .. pos_q95``, ``neg_q05 .. neg_q95`` (distances of genuine / impostor
        pairs), ``neg_closer_than_median_pos``, ``probe_auc``, ``active_fraction``,
        ``norm_mean``, ``std_normalized`` (population std over the batch, mean over
        dims), ``std_ratio`` (``std_normalized * sqrt(D)``), ``effective_rank``, ``dim``.
    """
    e, d = e.double(), d.double()
    i, j = torch.triu_indices(y.numel(), y.numel(), offset=1)
    dij, same = d[i, j], y[i] == y[j]
    pos, neg = dij[same], dij[~same]
    out: dict[str, Any] = {**_quantiles(pos, "pos"), **_quantiles(neg, "neg")}
    out["neg_closer_than_median_pos"] = (
        float((neg < torch.quantile(pos, 0.5)).double().mean()) if pos.numel() and neg.numel() else None
    )
    out["probe_auc"] = verification_metrics(dij, same).roc_auc if pos.numel() and neg.numel() else None
    out["active_fraction"] = _active_fraction(d, y, loss, margin, pos_margin)
    dim = int(e.shape[1])
    std = float(torch.nn.functional.normalize(e, dim=1).std(dim=0, unbiased=False).mean())
    out.update(
        norm_mean=float(e.norm(dim=1).mean()),
        std_normalized=std,
        std_ratio=std * math.sqrt(dim),
        effective_rank=effective_rank(e),
        dim=dim,
    )
    return out


def raw_input_auc(x: torch.Tensor, y: torch.Tensor, *, max_pairs: int = 200_000, chunk: int = 8192) -> float | None:
    """ROC AUC of the Euclidean distance between raw inputs (pixels in [0, 1]) over the
    pairs :func:`~siamkit.training.loop.validate` scores: the floor a trained network
    should beat.

    Args:
        x: the validation inputs.
        y: their classes.
        max_pairs: at most this many pairs (the same seeded subset as ``validate``).
        chunk: pairs compared at once.

    Shapes:
        x (N, ...), y (N,).

    Returns:
        The ROC AUC (None without both genuine and impostor pairs).
    """
    a, b, same = all_pairs(torch.as_tensor(y))
    if a.numel() > max_pairs:
        keep = torch.randperm(a.numel(), generator=torch.Generator().manual_seed(0))[:max_pairs]
        a, b, same = a[keep], b[keep], same[keep]
    if not bool(same.any()) or bool(same.all()):
        return None
    flat = to_float(x).reshape(x.shape[0], -1)
    d = torch.cat([(flat[a[s : s + chunk]] - flat[b[s : s + chunk]]).norm(dim=1) for s in range(0, a.numel(), chunk)])
    return verification_metrics(d, same).roc_auc


def alarms_of(
    health: dict[str, Any],
    record: dict[str, Any],
    config: TrainConfig,
    *,
    previous_std: float | None = None,
    raw_auc: float | None = None,
    raw_after: int = 3,
) -> list[dict[str, str]]:
    """The alarms one epoch's health raises.

    ``collapse``: the std of the normalised embeddings is below ``0.1 / sqrt(D)``, did
    not grow by a quarter since the previous epoch (a freshly initialised network is often
    that concentrated; a healthy run spreads it out, a collapsing one does not), unless the
    probe's ROC AUC is at least :data:`SEPARATING_AUC` and a triplet loss is not within 10%
    of the margin (concentrated, learning and still telling its classes apart is a slow
    start; batch-hard's partial collapse sits at the margin), or, for a
    margin loss, 95% of the impostor distances are below a tenth of the margin (with the
    triplet loss also stuck within 10% of the margin).

    Args:
        health: the epoch's statistics (:func:`embedding_statistics`).
        record: the epoch's record (``epoch``, ``train_loss``, ``val_roc_auc``).
        config: the run's options (loss, margin).
        previous_std: ``std_normalized`` of the previous epoch (or at initialisation).
        raw_auc: the raw-pixel validation ROC AUC (None: not compared).
        raw_after: compare with raw pixels from this epoch on.

    Returns:
        ``{"kind", "message"}`` per alarm: ``collapse``, ``no_active``, ``below_raw``.
    """
    alarms: list[dict[str, str]] = []
    fix = "lower the learning rate, normalise embeddings, or use semi-hard mining"
    floor = COLLAPSE_RATIO / math.sqrt(health["dim"])
    margin_loss = config.loss in ("triplet", "contrastive")
    near_zero = margin_loss and health["neg_q95"] is not None and health["neg_q95"] < 0.1 * config.margin
    stuck = config.loss != "triplet" or abs(record["train_loss"] - config.margin) <= 0.1 * config.margin
    std = health["std_normalized"]
    separating = health.get("probe_auc") is not None and health["probe_auc"] >= SEPARATING_AUC
    slow_start = separating and config.loss == "triplet" and not stuck
    if std < floor and (previous_std is None or std <= 1.25 * previous_std) and not slow_start:
        why = f"std of the normalised embeddings {health['std_normalized']:.2g} < {COLLAPSE_RATIO}/sqrt({health['dim']})"
        alarms.append({"kind": "collapse", "message": f"embeddings collapsed ({why}): {fix}"})
    elif near_zero and stuck:
        why = f"95% of impostor distances < {health['neg_q95']:.2g}, loss {record['train_loss']:.3g} at the margin {config.margin}"
        alarms.append({"kind": "collapse", "message": f"embeddings collapsed ({why}): {fix}"})
    if health["active_fraction"] == 0.0:
        unit = "triplets" if config.loss == "triplet" else "pairs"
        alarms.append({
            "kind": "no_active",
            "message": f"no active {unit} on the probe batch: the margin ({config.margin}) is too small or the task too "
            "easy; raise the margin, use harder mining or a harder task",
        })
    val = record.get("val_roc_auc")
    if raw_auc is not None and val is not None and val == val and record["epoch"] >= raw_after and val < raw_auc:
        alarms.append({
            "kind": "below_raw",
            "message": f"validation ROC AUC {val:.4f} is below raw pixels' {raw_auc:.4f} after {record['epoch']} epochs: "
            "check the labels and the inputs, lower the learning rate, or train longer",
        })
    return alarms


def summarize(record: dict[str, Any]) -> str:
    """One line about an epoch's record and its health, for a progress display.

    Args:
        record: a record of ``metrics.jsonl``.

    Returns:
        E.g. ``epoch 3: loss 0.1234, val AUC 0.9012 | d+ 0.41 d- 1.12 active 12% std 0.81/sqrt(D) rank 37 grad 0.52``.
    """
    parts = [f"epoch {record['epoch']}: loss {record['train_loss']:.4f}"]
    if record.get("val_roc_auc") is not None:
        parts.append(f", val AUC {record['val_roc_auc']:.4f}")
    h = record.get("health")
    if h:
        bits = []
        if h.get("pos_q50") is not None and h.get("neg_q50") is not None:
            bits.append(f"d+ {h['pos_q50']:.3g} d- {h['neg_q50']:.3g}")
        if h.get("active_fraction") is not None:
            bits.append(f"active {100 * h['active_fraction']:.0f}%")
        bits.append(f"std {h['std_ratio']:.2f}/sqrt(D) rank {h['effective_rank']:.1f}")
        if h.get("grad_norm") is not None:
            bits.append(f"grad {h['grad_norm']:.3g}")
        parts.append(" | " + " ".join(bits))
    if record.get("alarms"):
        parts.append(" | ALARM: " + ", ".join(a["kind"] for a in record["alarms"]))
    return "".join(parts)


def plot_history(history: list[dict[str, Any]], path: str | Path, *, raw_auc: float | None = None) -> Path:
    """``training.png``: loss, validation ROC AUC, learning rate, distance quantiles and
    the collapse indicators over the epochs.

    Args:
        history: the run's records.
        path: the image to write.
        raw_auc: the raw-pixel validation ROC AUC (a dashed line), if known.

    Returns:
        ``path``.
    """
    plt = pyplot()
    ep = [r["epoch"] for r in history]
    hs = [r.get("health") or {} for r in history]

    def col(key: str, rows: list[dict[str, Any]]) -> list[float]:
        return [float("nan") if r.get(key) is None else float(r[key]) for r in rows]

    fig, ax = plt.subplots(2, 3, figsize=(13, 7))
    ax[0, 0].plot(ep, col("train_loss", history), marker="o")
    ax[0, 0].set_title("training loss")
    ax[0, 1].plot(ep, col("val_roc_auc", history), marker="o", label="network")
    if raw_auc is not None:
        ax[0, 1].axhline(raw_auc, ls="--", color="grey", label="raw pixels")
    ax[0, 1].set_title("validation ROC AUC")
    ax[0, 1].legend()
    ax[0, 2].plot(ep, col("lr", history), marker="o")
    ax[0, 2].set_title("learning rate (epoch start)")
    for side, color in (("pos", "tab:green"), ("neg", "tab:red")):
        ax[1, 0].plot(ep, col(f"{side}_q50", hs), color=color, label=f"{side} median")
        ax[1, 0].fill_between(ep, col(f"{side}_q05", hs), col(f"{side}_q95", hs), color=color, alpha=0.2)
    ax[1, 0].set_title("probe distances (5-50-95%)")
    ax[1, 0].legend()
    ax[1, 1].plot(ep, col("std_ratio", hs), marker="o", label="std x sqrt(D)")
    ax[1, 1].plot(ep, col("active_fraction", hs), marker="s", label="active share")
    ax[1, 1].axhline(COLLAPSE_RATIO, ls="--", color="red", label="collapse")
    ax[1, 1].set_title("collapse indicators")
    ax[1, 1].legend()
    ax[1, 2].plot(ep, col("effective_rank", hs), marker="o", label="effective rank")
    ax[1, 2].plot(ep, col("grad_norm", hs), marker="s", label="grad norm")
    ax[1, 2].set_yscale("symlog")
    ax[1, 2].set_title("rank and gradient norm")
    ax[1, 2].legend()
    for a in ax.flat:
        a.set_xlabel("epoch")
    fig.tight_layout()
    return save_figure(fig, path)


class TrainingHealth(Callback):
    """The health statistics and alarms of every epoch (see the module doc); the loop's
    first callback, so the checkpoint stores what it adds to the record.

    Args:
        config: the run's options.
        x, y: the training samples (the probe batch is drawn from them).
        val_x, val_y: the validation set (for the raw-pixel floor), or None.
        out_dir: where ``training.png`` goes at the end (None: no plot).
        raw_after: raise ``below_raw`` from this epoch on.
        compare_raw: compare the validation ROC AUC with raw pixels' (off for a
            ``validate_fn``, whose metric is another protocol's).
    """

    def __init__(
        self,
        config: TrainConfig,
        x: torch.Tensor,
        y: torch.Tensor,
        val_x: torch.Tensor | None = None,
        val_y: torch.Tensor | None = None,
        *,
        out_dir: str | Path | None = None,
        raw_after: int = 3,
        compare_raw: bool = True,
    ) -> None:
        self.config = config
        idx = probe_indices(y, config.seed)
        self.probe_x, self.probe_y = x[idx], y[idx]
        self.val_x, self.val_y = val_x, val_y
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.raw_after = raw_after
        self.compare_raw = compare_raw
        self.raw_auc: float | None = None
        self.previous_std: float | None = None

    def _probe(self, state: TrainState, epoch: int) -> dict[str, Any]:
        network, cfg = state.network, self.config
        e = embed_all(network, self.probe_x)
        if not torch.isfinite(e).all():
            raise TrainingDivergedError(
                f"the embeddings became NaN or infinite after epoch {epoch}: lower the learning rate (--lr) "
                "or clip gradients (--grad-clip)"
            )
        d = network_pairwise(network, e, e)
        return embedding_statistics(e, self.probe_y, d, loss=cfg.loss, margin=cfg.margin, pos_margin=cfg.pos_margin)

    def on_train_begin(self, state: TrainState) -> None:
        if self.probe_y.numel() >= 2:  # the spread to compare the first epoch with
            last = (state.history[-1].get("health") or {}) if state.history else None
            self.previous_std = last.get("std_normalized") if last else self._probe(state, state.epoch)["std_normalized"]
        if self.compare_raw and state.has_val and self.val_x is not None and self.val_y is not None:
            self.raw_auc = raw_input_auc(self.val_x, self.val_y)

    def on_epoch_end(self, record: dict[str, Any], state: TrainState) -> None:
        """Add ``health`` and ``alarms`` to the record; log the alarms.

        Args:
            record: the epoch's record (its ``health`` may already hold ``grad_norm``).
            state: the run.

        Returns:
            None.

        Raises:
            TrainingDivergedError: the probe's embeddings are NaN or infinite.
        """
        if self.probe_y.numel() < 2:
            return
        health = self._probe(state, record["epoch"])
        health["grad_norm"] = (record.get("health") or {}).get("grad_norm")
        if self.raw_auc is not None:
            health["raw_val_roc_auc"] = self.raw_auc
        record["health"] = health
        record["alarms"] = alarms_of(
            health, record, self.config, previous_std=self.previous_std, raw_auc=self.raw_auc, raw_after=self.raw_after
        )
        self.previous_std = health["std_normalized"]
        for alarm in record["alarms"]:
            logger.warning("epoch %d: %s", record["epoch"], alarm["message"])

    def on_train_end(self, state: TrainState) -> None:
        if self.out_dir is not None and state.history:
            try:
                plot_history(state.history, self.out_dir / PLOT_FILE, raw_auc=self.raw_auc)
            except OSError as e:  # the run itself is saved; a plot is not worth failing it
                logger.warning("could not write %s: %s", self.out_dir / PLOT_FILE, e)
