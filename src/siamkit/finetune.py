"""Continuous learning: fine-tune a model on reported mistakes without forgetting.

``finetune(model_dir, feedback_db, out_dir, replay=...)``:

1. **Hard examples from feedback** (:class:`~siamkit.service.feedback.FeedbackStore`,
   status ``new``): a ``verify`` report is the pair itself with its true label; an
   ``identity_verify`` report pairs the probe with every stored sample of the claimed
   identity (genuine or impostor as reported); an ``identify`` report pairs the probe with
   the true identity's samples (genuine) and with the wrongly predicted identity's samples
   (impostor). The last two need the gallery (``gallery=``) to read the stored samples.
2. **Replay** of the original training data (an image folder, one sub-folder per class):
   its classes are split (seeded) into *replay-train*, *calibration* and *test* classes.
   Every step mixes ``feedback_per_batch`` hard pairs (drawn with replacement) with
   ``replay_per_batch`` random genuine / impostor pairs of the replay-train classes, so the
   model keeps what it knew.
3. **Loss**: a contrastive loss in the model's own distance units, anchored on the old
   calibrated threshold ``t``: genuine pairs are pulled below ``pos_margin * t``,
   impostors pushed beyond ``neg_margin * t`` (pair-head models: binary cross-entropy on
   the logit). Feedback pairs weigh ``feedback_weight`` times a replay pair. Plus a
   distillation term (``distill_weight``): the squared distance, in units of ``t``,
   between the new and the old model's embeddings of the replay images, so what the model
   knew stays where it was while the reported pairs move.
4. **Re-calibration** on the calibration classes (same threshold / confidence method as
   the old calibration), then **old vs new on the test classes** (ROC AUC, EER, accuracy
   at each model's own threshold) and on the feedback pairs (fraction decided right).
5. **Refusal**: when the new model's held-out ROC AUC or accuracy is lower than the old
   one's by more than ``max_regression``, :class:`FinetuneRefused` is raised and nothing is
   written. Otherwise the new model folder (weights, config with the report under
   ``extra.finetune``, calibration.json, finetune_report.json) is written, the feedback rows
   used are marked ``used`` (audited), and when asked the gallery is re-embedded with the
   new model (:meth:`siamkit.gallery.Gallery.migrate`).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .calibration import Calibrator
from .errors import DataError, SiamkitError
from .io import load_model, save_model, write_json_atomic
from .errors import FinetuneRefused
from .tuples import random_pairs

__all__ = ["FinetuneConfig", "FinetuneRefused", "FeedbackPairs", "feedback_pairs", "finetune"]

logger = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """Fine-tuning options (see the module doc)."""

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
    seed: int = 0

    def check(self) -> None:
        for name in ("steps", "feedback_per_batch", "replay_per_batch", "eval_pairs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not (0.0 < self.holdout_fraction < 1.0):
            raise ValueError("holdout_fraction must be in (0, 1)")
        if not (self.lr > 0 and self.pos_margin >= 0 and self.neg_margin > self.pos_margin):
            raise ValueError("need lr > 0 and 0 <= pos_margin < neg_margin")


@dataclass
class FeedbackPairs:
    """Pairs built from feedback: a (P, C, H, W), b (P, C, H, W) uint8, same (P,) bool,
    source (P,) the feedback id of each pair."""

    a: torch.Tensor
    b: torch.Tensor
    same: torch.Tensor
    source: torch.Tensor
    used_ids: list[int]
    skipped: dict[int, str]

    def __len__(self) -> int:
        return int(self.same.shape[0])


def _decode(data: bytes, spec: Any) -> torch.Tensor:
    from .data.decode import decode_image_bytes

    return decode_image_bytes(data, spec)


def _gallery_samples(gallery: Any, identity: str, spec: Any) -> list[torch.Tensor]:
    """The stored inputs of one identity's samples, in the model's input shape."""
    ids = {s.id for s in gallery.get(identity).samples}
    out = []
    for batch in gallery.store.iter_stored_samples(256):
        for sid, s in batch:
            if sid not in ids or s is None:
                continue
            if s.format.startswith("file:"):
                out.append(_decode(s.data, spec))
            else:
                arr = torch.from_numpy(s.array().copy())
                if arr.dtype != torch.uint8 or tuple(arr.shape) != (spec.channels, spec.height, spec.width):
                    continue
                out.append(arr)
    return out


def feedback_pairs(records: list[Any], network: Any, *, gallery: Any = None) -> FeedbackPairs:
    """Turn feedback records into labelled pairs (see the module doc)."""
    spec = network.input_spec.require_image()
    a_list: list[torch.Tensor] = []
    b_list: list[torch.Tensor] = []
    same: list[bool] = []
    src: list[int] = []
    used: list[int] = []
    skipped: dict[int, str] = {}

    def add(x: torch.Tensor, y: torch.Tensor, s: bool, fid: int) -> None:
        a_list.append(x)
        b_list.append(y)
        same.append(bool(s))
        src.append(fid)

    for r in records:
        try:
            probe = _decode(r.image_a, spec)
            n0 = len(same)
            if r.kind == "verify":
                add(probe, _decode(r.image_b, spec), bool(r.truth["same"]), r.id)
            elif gallery is None:
                skipped[r.id] = f"{r.kind} feedback needs the gallery (--gallery) to read the enrolled samples"
                continue
            elif r.kind == "identity_verify":
                for s in _gallery_samples(gallery, r.identity, spec):
                    add(probe, s, bool(r.truth["same"]), r.id)
            else:
                true_id = r.truth.get("identity")
                wrong = r.predicted.get("identity")
                if true_id and true_id != "unknown" and true_id in gallery:
                    for s in _gallery_samples(gallery, true_id, spec):
                        add(probe, s, True, r.id)
                if wrong and wrong != true_id and wrong != "unknown" and wrong in gallery:
                    for s in _gallery_samples(gallery, wrong, spec):
                        add(probe, s, False, r.id)
            if len(same) == n0:
                skipped[r.id] = "no pair could be built (identities no longer enrolled?)"
            else:
                used.append(r.id)
        except SiamkitError as e:
            skipped[r.id] = str(e)
    if not same:
        shape = (0, spec.channels, spec.height, spec.width)
        empty = torch.zeros(shape, dtype=torch.uint8)
        return FeedbackPairs(empty, empty.clone(), torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.long), used, skipped)
    return FeedbackPairs(
        torch.stack(a_list), torch.stack(b_list), torch.tensor(same), torch.tensor(src, dtype=torch.long), used, skipped
    )


# --------------------------------------------------------------------------- pairs of a labelled set


@torch.no_grad()
def _distances(net: Any, a: torch.Tensor, b: torch.Tensor, batch: int = 512) -> np.ndarray:
    from .data.images import to_float

    net.eval()
    out = []
    for s in range(0, a.shape[0], batch):
        out.append(net.pair_distance(to_float(a[s : s + batch]), to_float(b[s : s + batch])).double())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _metrics(d: np.ndarray, same: np.ndarray, cal: Calibrator | None) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from .evaluation.verification import equal_error_rate

    out: dict[str, Any] = {"roc_auc": float(roc_auc_score(same, -d)), "eer": float(equal_error_rate(d, same)[0])}
    if cal is not None:
        out["accuracy"] = float((cal.decide(d) == same).mean())
        out["threshold"] = float(cal.threshold_)
    return out


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

    Returns:
        The report (also written to ``out_dir/finetune_report.json``).

    Raises:
        FinetuneRefused: the new model is worse on the held-out split (nothing written).
        SiamkitError: no usable feedback, no calibration, bad replay data.
    """
    from .gallery import Gallery
    from .service.feedback import FeedbackStore

    cfg = config or FinetuneConfig()
    cfg.check()
    t_start = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise SiamkitError(f"{out_dir} exists and is not empty; choose a new folder for the fine-tuned model")
    old = load_model(model_dir)
    old_cal = Calibrator.load(model_dir, expected_fingerprint=old.fingerprint)
    if old_cal is None:
        raise SiamkitError(f"{model_dir} is not calibrated: fine-tuning needs its threshold (run `siamkit calibrate`)")
    shape = old.input_spec.shape
    if replay_images.dtype != torch.uint8 or tuple(replay_images.shape[1:]) != shape:
        raise DataError(f"replay images must be uint8 (N, {', '.join(map(str, shape))}), got {replay_images.dtype} {tuple(replay_images.shape)}")

    with FeedbackStore.open(feedback_db, create=False) as store:
        records = store.list(status="new")
    if not records:
        raise SiamkitError(f"{feedback_db} holds no new feedback")
    g = Gallery.open(gallery, None, create=False) if gallery is not None else None
    try:
        fb = feedback_pairs(records, old, gallery=g)
    finally:
        if g is not None:
            g.close()
    if len(fb) == 0:
        raise SiamkitError(f"none of the {len(records)} feedback reports gave a usable pair: {fb.skipped}")

    # class split: replay-train / calibration / test
    gen = torch.Generator().manual_seed(cfg.seed)
    labels = replay_labels.long()
    classes = torch.unique(labels)
    if len(classes) < 6:
        raise DataError(f"the replay data needs at least 6 classes, got {len(classes)}")
    perm = classes[torch.randperm(len(classes), generator=gen)]
    n_hold = max(4, int(round(cfg.holdout_fraction * len(classes))))
    cal_cls, test_cls, train_cls = perm[: n_hold // 2], perm[n_hold // 2 : n_hold], perm[n_hold:]
    m_train, m_cal, m_test = (torch.isin(labels, c) for c in (train_cls, cal_cls, test_cls))
    x_tr, y_tr = replay_images[m_train], labels[m_train]
    x_cal, y_cal = replay_images[m_cal], labels[m_cal]
    x_te, y_te = replay_images[m_test], labels[m_test]
    eval_gen = torch.Generator().manual_seed(cfg.seed + 1)
    ci, cj, cs = random_pairs(y_cal, cfg.eval_pairs, eval_gen)
    ti, tj, ts = random_pairs(y_te, cfg.eval_pairs, eval_gen)

    # train
    net = copy.deepcopy(old).train()
    for mod in net.modules():  # keep the normalisation statistics of the original training
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.eval()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    thr = float(old_cal.threshold_)
    scale = abs(thr) if thr != 0 else 1.0
    from .data.images import to_float

    losses = []
    for step in range(cfg.steps):
        k = torch.randint(len(fb), (cfg.feedback_per_batch,), generator=gen)
        ri, rj, rs = random_pairs(y_tr, cfg.replay_per_batch, gen)
        a = torch.cat([fb.a[k], x_tr[ri]])
        b = torch.cat([fb.b[k], x_tr[rj]])
        same = torch.cat([fb.same[k], rs])
        w = torch.cat([torch.full((len(k),), cfg.feedback_weight), torch.ones(len(ri))])
        e = net.embed(to_float(torch.cat([a, b])))
        n_pairs = a.shape[0]
        d = net.embedding_distance(e[:n_pairs], e[n_pairs:])
        if net.pair_head is not None:
            per = F.binary_cross_entropy_with_logits(-d, same.float(), reduction="none")
        else:
            per = torch.where(same, F.relu(d - cfg.pos_margin * scale) ** 2, F.relu(cfg.neg_margin * scale - d) ** 2) / scale**2
        loss = (w * per).sum() / w.sum()
        if cfg.distill_weight > 0:
            # keep the replay images' embeddings where the old model put them (no forgetting)
            rows = torch.cat([torch.arange(len(k), n_pairs), torch.arange(n_pairs + len(k), 2 * n_pairs)])
            with torch.no_grad():
                e_old = old.embed(to_float(torch.cat([a[len(k):], b[len(k):]])))
            loss = loss + cfg.distill_weight * ((e[rows] - e_old) ** 2).sum(1).mean() / scale**2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise SiamkitError(f"the fine-tuning loss became {losses[-1]} at step {step}; lower --lr")
    net.eval()

    # re-calibrate, compare
    d_cal = _distances(net, x_cal[ci], x_cal[cj])
    new_cal = Calibrator(
        threshold_method=old_cal.threshold_method, target_far=old_cal.target_far, confidence_method=old_cal.confidence_method
    ).fit(d_cal, cs.numpy(), split_name="finetune-calibration-classes")
    old_test = _metrics(_distances(old, x_te[ti], x_te[tj]), ts.numpy(), old_cal)
    new_test = _metrics(_distances(net, x_te[ti], x_te[tj]), ts.numpy(), new_cal)
    fb_same = fb.same.numpy()
    old_fb = old_cal.decide(_distances(old, fb.a, fb.b)) == fb_same
    new_fb = new_cal.decide(_distances(net, fb.a, fb.b)) == fb_same
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "from_model": old.fingerprint,
        "feedback_reports": len(records),
        "feedback_used": fb.used_ids,
        "feedback_skipped": {str(k): v for k, v in fb.skipped.items()},
        "feedback_pairs": len(fb),
        "feedback_pairs_right": {"old": float(old_fb.mean()), "new": float(new_fb.mean())},
        "feedback_pairs_fixed": int((~old_fb & new_fb).sum()),
        "feedback_pairs_broken": int((old_fb & ~new_fb).sum()),
        "held_out": {"old": old_test, "new": new_test, "classes": len(test_cls), "pairs": int(len(ts))},
        "classes": {"replay_train": len(train_cls), "calibration": len(cal_cls), "test": len(test_cls)},
        "loss_first_last": [losses[0], losses[-1]],
        "seconds": time.perf_counter() - t_start,
    }
    worse = [
        key for key in ("roc_auc", "accuracy")
        if new_test[key] < old_test[key] - cfg.max_regression
    ]
    if worse:
        report["accepted"] = False
        raise FinetuneRefused(
            "the fine-tuned model is worse on the held-out classes ("
            + ", ".join(f"{k} {old_test[k]:.4f} -> {new_test[k]:.4f}" for k in worse)
            + f", tolerance {cfg.max_regression}); nothing written",
            report,
        )
    report["accepted"] = True
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(net, out_dir, extra={"finetune": {k: v for k, v in report.items() if k != "feedback_skipped"}})
    new_cal.model_fingerprint_ = net.fingerprint
    new_cal.save(out_dir)
    report["to_model"] = net.fingerprint
    write_json_atomic(out_dir / "finetune_report.json", report)
    with FeedbackStore.open(feedback_db, create=False) as store:
        store.set_status(fb.used_ids, "used", actor=actor)
        store.audit(actor, "finetune", str(out_dir), {"from": old.fingerprint, "to": net.fingerprint, "feedback": fb.used_ids})
    if reembed_gallery and gallery is not None:
        with Gallery.migrate(gallery, out_dir) as g2:
            report["gallery_reembedded"] = g2.n_samples
        write_json_atomic(out_dir / "finetune_report.json", report)
    return report
