"""Continuous learning: fine-tune a model on reported mistakes without forgetting.

``finetune(model_dir, feedback_db, out_dir, replay=...)``:

1. **Hard examples from feedback** (:class:`~siamkit.feedback.FeedbackStore`, status
   ``new``), turned into labelled pairs by :func:`siamkit.feedback.feedback_pairs`
   (``identify`` and ``identity_verify`` reports need the gallery, ``gallery=``, to read
   the stored samples).
2. **Replay** of the original training data (an image folder, one sub-folder per class):
   its classes are split (seeded, :func:`siamkit.data.splits.permute_classes`) into
   *replay-train*, *calibration* and *test* classes. Every step mixes
   ``feedback_per_batch`` hard pairs (drawn with replacement) with ``replay_per_batch``
   random genuine / impostor pairs of the replay-train classes
   (:func:`siamkit.tuples.random_pairs`), so the model keeps what it knew.
3. **Loss**: the contrastive loss (:func:`siamkit.losses.contrastive_loss`) in the
   model's own distance units, anchored on the old calibrated threshold ``t``: genuine
   pairs are pulled below ``pos_margin * t``, impostors pushed beyond ``neg_margin * t``
   (pair-head models: binary cross-entropy on the logit). Feedback pairs weigh
   ``feedback_weight`` times a replay pair. Plus a distillation term
   (``distill_weight``): the squared distance, in units of ``t``, between the new and the
   old model's embeddings of the replay images, so what the model knew stays where it
   was while the reported pairs move.
4. **Re-calibration** on the calibration classes (same threshold / confidence method as
   the old calibration), then **old vs new on the test classes** (ROC AUC, EER, accuracy
   at each model's own threshold) and on the feedback pairs (fraction decided right).
5. **Refusal**: when the new model's held-out ROC AUC or accuracy is lower than the old
   one's by more than ``max_regression``, :class:`~siamkit.errors.FinetuneRefused` is
   raised and nothing is written. Otherwise the new model folder (weights, config with
   the report under ``extra.finetune``, calibration.json, finetune_report.json) is
   written, the feedback rows used are marked ``used`` (audited), and when asked the
   gallery is re-embedded with the new model (:meth:`siamkit.gallery.Gallery.migrate`).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .._atomic import write_json_atomic
from ..calibration import Calibrator
from ..data.images import to_float
from ..data.splits import permute_classes
from ..errors import DataError, FinetuneRefused, SiamkitError
from ..evaluation.metrics import verification_metrics
from ..feedback import FeedbackPairs, Screening, feedback_pairs, open_feedback, screen_reports
from ..gallery import Gallery
from ..inference import embed_all, pair_distances_of_embeddings
from ..io import load_model, save_model
from ..losses import binary_pair_loss, contrastive_loss
from ..matryoshka import prefix
from ..network import SiameseNetwork
from ..tuples import Pairs, pairs_from_pair_batch, random_pairs
from .components import make_optimizer

__all__ = ["FinetuneConfig", "FinetuneRefused", "finetune", "rollback"]

_BATCH_NORMS = (torch.nn.modules.batchnorm._BatchNorm,)  # 1d / 2d / 3d, SyncBatchNorm and GlobalBatchNorm


@dataclass
class FinetuneConfig:
    """Fine-tuning options (see the module doc).

    Attributes:
        steps: optimiser (AdamW) steps.
        lr, weight_decay: AdamW's learning rate and decoupled weight decay.
        feedback_per_batch: feedback pairs per step (drawn with replacement).
        replay_per_batch: random replay pairs per step (half genuine).
        feedback_weight: weight of a feedback pair relative to a replay pair.
        distill_weight: weight of the distillation term (0 = off).
        pos_margin, neg_margin: genuine pairs are pulled below ``pos_margin``, impostors
            pushed beyond ``neg_margin``, times the old calibrated threshold.
        holdout_fraction: share of the replay classes held out for calibration and test
            (half each).
        eval_pairs: random pairs of the calibration classes, and of the test classes.
        max_regression: largest allowed drop of held-out ROC AUC / accuracy.
        min_reporters: distinct reporters (actors) needed behind a report before it may
            teach the model (:func:`siamkit.feedback.screen_reports`); contradicted
            reports are held for review whatever this is.
        seed: seed of the class split and of the batches.
    """

    steps: int = 300
    lr: float = 2e-4
    weight_decay: float = 0.0
    feedback_per_batch: int = 16
    replay_per_batch: int = 48
    feedback_weight: float = 2.0
    distill_weight: float = 1.0
    pos_margin: float = 0.5
    neg_margin: float = 1.5
    holdout_fraction: float = 0.4
    eval_pairs: int = 4000
    max_regression: float = 0.005
    min_reporters: int = 2
    seed: int = 0


    def check(self) -> None:
        """Raise ValueError naming the first invalid option."""
        for name in ("steps", "feedback_per_batch", "replay_per_batch", "eval_pairs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if int(self.min_reporters) < 1:
            raise ValueError("min_reporters must be >= 1")
        if not (0.0 < self.holdout_fraction < 1.0):
            raise ValueError("holdout_fraction must be in (0, 1)")
        if not (self.lr > 0 and self.pos_margin >= 0 and self.neg_margin > self.pos_margin):
            raise ValueError("need lr > 0 and 0 <= pos_margin < neg_margin")


# --------------------------------------------------------------------------- inputs


def _load_old(model_dir: Path, replay_images: torch.Tensor) -> tuple[SiameseNetwork, Calibrator]:
    """The current model and its calibration; the replay images must fit it."""
    old = load_model(model_dir)
    old_cal = Calibrator.load(model_dir, expected_fingerprint=old.fingerprint)
    if old_cal is None:
        raise SiamkitError(f"{model_dir} is not calibrated: fine-tuning needs its threshold (run `siamkit calibrate`)")
    shape = old.input_spec.shape
    if replay_images.dtype != torch.uint8 or tuple(replay_images.shape[1:]) != shape:
        raise DataError(
            f"replay images must be uint8 (N, {', '.join(map(str, shape))}), "
            f"got {replay_images.dtype} {tuple(replay_images.shape)}"
        )
    return old, old_cal


def _load_feedback(
    feedback_db: str | Path, old: SiameseNetwork, gallery: str | Path | None, min_reporters: int, actor: str
) -> tuple[int, FeedbackPairs, Screening]:
    """The number of candidate reports (``new`` or ``held``), the pairs of those that may
    teach (:func:`~siamkit.feedback.screen_reports`), and the screening. Reports newly
    found contradicted are marked ``held`` (audited) whatever happens next."""
    with open_feedback(feedback_db, create=False) as store:
        records = store.list(status="new") + store.list(status="held")
        screening = screen_reports(records, min_reporters=min_reporters)
        newly_held = [r.id for r in records if r.id in set(screening.held) and r.status != "held"]
        if newly_held:
            store.set_status(newly_held, "held", actor=actor)
    if not records:
        raise SiamkitError(f"{feedback_db} holds no new feedback")
    if not screening.teach:
        raise SiamkitError(
            f"none of the {len(records)} feedback reports may teach the model yet: "
            f"{len(screening.waiting)} wait for {min_reporters} independent reporters, "
            f"{len(screening.held)} are held as contradicted (review them with `siamkit feedback review`)"
        )
    g = Gallery.open(gallery, None, create=False) if gallery is not None else None
    try:
        fb = feedback_pairs(screening.teach, old, gallery=g)
    finally:
        if g is not None:
            g.close()
    if len(fb) == 0:
        raise SiamkitError(f"none of the {len(screening.teach)} feedback claims gave a usable pair: {fb.skipped}")
    fb.used_ids = sorted(i for rep in fb.used_ids for i in screening.members.get(rep, [rep]))
    return len(records), fb, screening


class _LabelledSet(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor
    n_classes: int


class _ReplaySplit(NamedTuple):
    train: _LabelledSet
    cal: _LabelledSet
    test: _LabelledSet


def _split_replay(images: torch.Tensor, labels: torch.Tensor, cfg: FinetuneConfig, gen: torch.Generator) -> _ReplaySplit:
    """Class-disjoint replay-train / calibration / test parts (classes drawn from ``gen``)."""
    labels = labels.long()
    n_classes = len(torch.unique(labels))
    if n_classes < 6:
        raise DataError(f"the replay data needs at least 6 classes, got {n_classes}")
    perm = permute_classes(labels, gen)
    n_hold = max(4, int(round(cfg.holdout_fraction * n_classes)))
    parts = []
    for classes in (perm[n_hold:], perm[: n_hold // 2], perm[n_hold // 2 : n_hold]):
        m = torch.isin(labels, classes)
        parts.append(_LabelledSet(images[m], labels[m], len(classes)))
    return _ReplaySplit(*parts)


# --------------------------------------------------------------------------- training


def _trainable_copy(old: SiameseNetwork) -> SiameseNetwork:
    """A copy of ``old`` in training mode, its normalisation statistics frozen."""
    net = copy.deepcopy(old).train()
    for mod in net.modules():  # keep the normalisation statistics of the original training
        if isinstance(mod, _BATCH_NORMS):
            mod.eval()
    return net


def _pair_loss(net: SiameseNetwork, e: torch.Tensor, pairs: Pairs, cfg: FinetuneConfig, scale: float) -> torch.Tensor:
    """Per-pair loss in units of the old threshold: contrastive with the margins
    ``pos_margin * t`` / ``neg_margin * t``, or a pair head's cross-entropy. A Matryoshka
    model learns the feedback at every size it was trained for: the mean of the loss over
    its prefixes (each re-normalised as at training), so its small sizes are corrected too
    and are not left to drift under a full-size-only update."""
    if net.pair_head is not None:
        return binary_pair_loss(net.pair_logits(e[pairs.a], e[pairs.b]), pairs.same, reduction="none")
    dims = net.matryoshka_dims or (e.shape[1],)
    per = sum(
        contrastive_loss(prefix(e, d, normalize=net.normalize) if d < e.shape[1] else e, pairs, distance=net.distance,
                         pos_margin=cfg.pos_margin * scale, neg_margin=cfg.neg_margin * scale, reduction="none")
        for d in dims
    ) / len(dims)
    return per / scale**2


def _step_loss(
    net: SiameseNetwork,
    old: SiameseNetwork,
    fb: FeedbackPairs,
    replay: _LabelledSet,
    cfg: FinetuneConfig,
    scale: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """The loss of one step: weighted feedback + replay pairs, plus distillation."""
    k = torch.randint(len(fb), (cfg.feedback_per_batch,), generator=gen)
    ri, rj, rs = random_pairs(replay.y, cfg.replay_per_batch, gen)
    a = torch.cat([fb.a[k], replay.x[ri]])
    b = torch.cat([fb.b[k], replay.x[rj]])
    same = torch.cat([fb.same[k], rs])
    w = torch.cat([torch.full((len(k),), cfg.feedback_weight), torch.ones(len(ri))])
    e = net.embed(to_float(torch.cat([a, b])))
    n_pairs = a.shape[0]
    loss = (w * _pair_loss(net, e, pairs_from_pair_batch(same), cfg, scale)).sum() / w.sum()
    if cfg.distill_weight > 0:
        # keep the replay images' embeddings where the old model put them (no forgetting)
        rows = torch.cat([torch.arange(len(k), n_pairs), torch.arange(n_pairs + len(k), 2 * n_pairs)])
        with torch.no_grad():
            e_old = old.embed(to_float(torch.cat([a[len(k) :], b[len(k) :]])))
        loss = loss + cfg.distill_weight * ((e[rows] - e_old) ** 2).sum(1).mean() / scale**2
    return loss


def _train(
    old: SiameseNetwork, fb: FeedbackPairs, replay: _LabelledSet, cfg: FinetuneConfig, threshold: float, gen: torch.Generator
) -> tuple[SiameseNetwork, list[float]]:
    """The fine-tuned copy of ``old`` (in eval mode) and the loss of every step."""
    net = _trainable_copy(old)
    opt = make_optimizer(net.parameters(), optimizer="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    scale = abs(threshold) if threshold != 0 else 1.0
    losses: list[float] = []
    for step in range(cfg.steps):
        loss = _step_loss(net, old, fb, replay, cfg, scale, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise SiamkitError(f"the fine-tuning loss became {losses[-1]} at step {step}; lower --lr")
    net.eval()
    return net, losses


# --------------------------------------------------------------------------- evaluation


def _distances(net: SiameseNetwork, x: torch.Tensor, pairs: Pairs) -> np.ndarray:
    """The network's distance of index pairs of a set (each image embedded once)."""
    return pair_distances_of_embeddings(net, embed_all(net, x), pairs.a, pairs.b).double().numpy()


def _feedback_distances(net: SiameseNetwork, fb: FeedbackPairs) -> np.ndarray:
    return _distances(net, torch.cat([fb.a, fb.b]), pairs_from_pair_batch(fb.same))


def _metrics(d: np.ndarray, same: np.ndarray, cal: Calibrator) -> dict[str, Any]:
    r = verification_metrics(d, same)
    return {"roc_auc": r.roc_auc, "eer": r.eer, "accuracy": float((cal.decide(d) == same).mean()), "threshold": float(cal.threshold_)}


def _compare(
    old: SiameseNetwork, old_cal: Calibrator, net: SiameseNetwork, fb: FeedbackPairs, split: _ReplaySplit, cfg: FinetuneConfig
) -> tuple[Calibrator, dict[str, Any]]:
    """Re-calibrate the new model; old vs new on the test classes and the feedback pairs."""
    eval_gen = torch.Generator().manual_seed(cfg.seed + 1)
    cal_pairs = random_pairs(split.cal.y, cfg.eval_pairs, eval_gen)
    test_pairs = random_pairs(split.test.y, cfg.eval_pairs, eval_gen)
    new_cal = Calibrator(
        threshold_method=old_cal.threshold_method, target_far=old_cal.target_far, confidence_method=old_cal.confidence_method
    ).fit(_distances(net, split.cal.x, cal_pairs), cal_pairs.same.numpy(), split_name="finetune-calibration-classes")
    ts = test_pairs.same.numpy()
    old_test = _metrics(_distances(old, split.test.x, test_pairs), ts, old_cal)
    new_test = _metrics(_distances(net, split.test.x, test_pairs), ts, new_cal)
    fb_same = fb.same.numpy()
    old_fb = old_cal.decide(_feedback_distances(old, fb)) == fb_same
    new_fb = new_cal.decide(_feedback_distances(net, fb)) == fb_same
    out = {
        "feedback_pairs_right": {"old": float(old_fb.mean()), "new": float(new_fb.mean())},
        "feedback_pairs_fixed": int((~old_fb & new_fb).sum()),
        "feedback_pairs_broken": int((old_fb & ~new_fb).sum()),
        "held_out": {"old": old_test, "new": new_test, "classes": split.test.n_classes, "pairs": int(len(ts))},
    }
    if net.matryoshka_dims:  # every smaller size on the same held-out pairs (ROC AUC: no threshold needed)
        out["held_out_by_size"] = {
            str(d): {k: verification_metrics(_distances(m.at_dim(d), split.test.x, test_pairs), ts).roc_auc
                     for k, m in (("old", old), ("new", net))}
            for d in net.matryoshka_dims if d < net.full_dim
        }
    return new_cal, out


def _refuse_if_worse(report: dict[str, Any], cfg: FinetuneConfig) -> None:
    old_test, new_test = report["held_out"]["old"], report["held_out"]["new"]
    worse = [(key, old_test[key], new_test[key]) for key in ("roc_auc", "accuracy")
             if new_test[key] < old_test[key] - cfg.max_regression]
    worse += [(f"roc_auc at {d} dims", r["old"], r["new"]) for d, r in report.get("held_out_by_size", {}).items()
              if r["new"] < r["old"] - cfg.max_regression]
    if worse:
        report["accepted"] = False
        raise FinetuneRefused(
            "the fine-tuned model is worse on the held-out classes ("
            + ", ".join(f"{k} {o:.4f} -> {n:.4f}" for k, o, n in worse)
            + f", tolerance {cfg.max_regression}); nothing written",
            report,
        )
    report["accepted"] = True


# --------------------------------------------------------------------------- fine-tuning


def finetune(
    model_dir: str | Path,
    feedback_db: str | Path,
    out_dir: str | Path,
    *,
    replay_images: torch.Tensor,
    replay_labels: torch.Tensor,
    gallery: str | Path | None = None,
    reembed_gallery: bool = False,
    config: FinetuneConfig | None = None,
    actor: str = "finetune",
) -> dict[str, Any]:
    """Fine-tune on the ``new`` feedback with replay; write ``out_dir`` only when the new
    model is not worse on held-out classes.

    Args:
        model_dir: the current model folder (calibrated).
        feedback_db: the feedback store.
        out_dir: the new model folder (must not exist or be empty).
        replay_images, replay_labels: the original training data, uint8 (N, C, H, W) in the
            model's input shape, and int labels (N,).
        gallery: the gallery file (needed for identify / identity_verify feedback).
        reembed_gallery: re-embed the gallery with the new model after writing it.
        config: the options (None = the defaults).
        actor: who the feedback store's audit log names.

    Returns:
        The report (also written to ``out_dir/finetune_report.json``).

    Raises:
        FinetuneRefused: the new model is worse on the held-out split (nothing written).
        SiamkitError: no usable feedback, no calibration, bad replay data.
    """
    cfg = config or FinetuneConfig()
    cfg.check()
    t_start = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise SiamkitError(f"{out_dir} exists and is not empty; choose a new folder for the fine-tuned model")
    old, old_cal = _load_old(model_dir, replay_images)
    n_reports, fb, screening = _load_feedback(feedback_db, old, gallery, int(cfg.min_reporters), actor)
    gen = torch.Generator().manual_seed(cfg.seed)  # the class split, then every step's pairs
    split = _split_replay(replay_images, replay_labels, cfg, gen)
    net, losses = _train(old, fb, split.train, cfg, float(old_cal.threshold_), gen)
    new_cal, comparison = _compare(old, old_cal, net, fb, split, cfg)
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "from_model": old.fingerprint,
        "from_model_dir": str(model_dir.resolve()),
        "feedback_reports": n_reports,
        "feedback_screening": screening.summary(),
        "feedback_used": fb.used_ids,
        "feedback_skipped": {str(k): v for k, v in fb.skipped.items()},
        "feedback_pairs": len(fb),
        **comparison,
        "classes": {"replay_train": split.train.n_classes, "calibration": split.cal.n_classes, "test": split.test.n_classes},
        "loss_first_last": [losses[0], losses[-1]],
        "seconds": time.perf_counter() - t_start,
    }
    _refuse_if_worse(report, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(net, out_dir, extra={"finetune": {k: v for k, v in report.items() if k != "feedback_skipped"}})
    new_cal.model_fingerprint_ = net.fingerprint
    new_cal.save(out_dir)
    report["to_model"] = net.fingerprint
    write_json_atomic(out_dir / "finetune_report.json", report)
    with open_feedback(feedback_db, create=False) as store:
        store.set_status(fb.used_ids, "used", actor=actor)
        store.audit(actor, "finetune", str(out_dir), {"from": old.fingerprint, "to": net.fingerprint, "feedback": fb.used_ids})
    if reembed_gallery and gallery is not None:
        with Gallery.migrate(gallery, out_dir) as g2:
            report["gallery_reembedded"] = g2.n_samples
        write_json_atomic(out_dir / "finetune_report.json", report)
    return report


def rollback(new_model_dir: str | Path, gallery: str | Path, *, actor: str = "finetune") -> dict[str, Any]:
    """Put a gallery back on the model a fine-tune started from (re-embedded atomically,
    :meth:`siamkit.gallery.Gallery.migrate`), after checking that folder still holds
    those exact weights.

    Args:
        new_model_dir: the fine-tuned model folder (its ``finetune_report.json`` names
            the previous model's folder and fingerprint).
        gallery: the gallery file now on the fine-tuned model.
        actor: who the gallery's audit log names.

    Returns:
        ``{"model_dir", "fingerprint", "samples"}`` of the restored model.

    Raises:
        SiamkitError: no report, the previous folder is gone, or its weights changed.
    """
    report_path = Path(new_model_dir) / "finetune_report.json"
    if not report_path.is_file():
        raise SiamkitError(f"{new_model_dir} was not written by `siamkit finetune` (no finetune_report.json)")
    try:
        report = json.loads(report_path.read_text())
        prev_dir, prev_fp = Path(report["from_model_dir"]), str(report["from_model"])
    except (ValueError, KeyError, TypeError) as e:
        raise SiamkitError(f"{report_path} does not name the previous model ({e})") from None
    if not (prev_dir / "config.json").is_file():
        raise SiamkitError(f"the previous model folder {prev_dir} is gone; give it back or re-embed with `siamkit gallery reembed`")
    prev = load_model(prev_dir)
    if prev.fingerprint != prev_fp:
        raise SiamkitError(f"{prev_dir} no longer holds the weights the fine-tune started from ({prev.fingerprint[:12]} != {prev_fp[:12]})")
    with Gallery.migrate(gallery, prev_dir) as g:
        n = g.n_samples
    return {"model_dir": str(prev_dir), "fingerprint": prev_fp, "samples": n, "actor": actor}
