"""Repeated class-disjoint cross-validation: how a recipe does on classes it never saw.

One validation split of a few identities is a noisy judge, and a recipe chosen on it
overfits it. Here the classes (identities, writers) are cut into ``k`` folds; each fold's
classes are the test set once, and the whole pipeline is re-run for it: train on the
other classes, stop early and calibrate the decision threshold on an inner validation
part drawn from the training classes (never the test ones), then score every pair of the
test classes. The test images can also be seen under other conditions (relit, reframed:
:mod:`siamkit.data.relight`), with the threshold still the one calibrated on the clean
inner validation, as a deployed model's would be. Every method (a trained recipe, raw
pixels) runs on the same folds, images and pairs, so the comparison is paired: a
recipe's worst fold, and whether it beats the reference on every fold and condition,
say more than its mean.

Example:
    >>> folds = class_folds([f"s{i}" for i in range(40)], k=5, val_classes=5)
    >>> len(folds), len(folds[0].test), len(folds[0].val), len(folds[0].train)
    (5, 8, 5, 27)
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from ..calibration import Calibrator
from ..data.splits import choose_parts, permute_classes
from ..errors import DataError
from ..tuples import all_pairs
from .verification import confusion_at_threshold, verification_report

__all__ = [
    "Fold",
    "Fitted",
    "CrossValMethod",
    "class_folds",
    "cross_validate",
    "score_fold",
    "summarise_folds",
    "METRICS",
]

#: metric -> True when higher is better (the worst fold is its min), else its max
METRICS = {"roc_auc": True, "eer": False, "accuracy": True, "far": False, "frr": False}


@dataclass(frozen=True)
class Fold:
    """One fold: the class names of its training, inner validation and test parts."""

    repeat: int
    index: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"r{self.repeat}f{self.index}"


class Fitted(NamedTuple):
    """A method fitted on one fold: images -> embeddings, embeddings + index pairs ->
    distances (lower = closer), and anything worth recording (seconds, best epoch)."""

    embed: Callable[[torch.Tensor], torch.Tensor]
    pair_distance: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    info: dict[str, Any]


@dataclass(frozen=True)
class CrossValMethod:
    """What cross-validation runs per fold.

    Attributes:
        name: the method's row label.
        prepare: its input recipe: uint8 images (N, C, H, W) at the source resolution ->
            the model's inputs (e.g. illumination normalisation, then resizing). Applied
            after a test condition, as a deployed model meets a new camera's images.
        fit: ``fit(train_x, train_y, val_x, val_y) -> Fitted`` on prepared inputs.
    """

    name: str
    prepare: Callable[[np.ndarray], torch.Tensor]
    fit: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Fitted]


def class_folds(
    names: Sequence[str], *, k: int = 5, val_classes: int = 5, repeats: int = 1, seed: int = 0
) -> list[Fold]:
    """Cut classes into ``k`` disjoint test folds (per repeat), each with an inner
    validation part drawn from its training classes.

    Args:
        names: the class names.
        k: folds per repeat (every class is a test class exactly once per repeat; fold
            sizes differ by at most one).
        val_classes: inner validation classes per fold, drawn from the non-test ones.
        repeats: how many times the classes are reshuffled into ``k`` folds.
        seed: seeds every draw (repeat ``r`` shuffles with ``seed + r``).

    Returns:
        ``repeats * k`` folds.

    Raises:
        DataError: fewer than 2 test classes per fold, or too few classes left to train.
    """
    n = len(names)
    if k < 2:
        raise DataError(f"cross-validation needs k >= 2 folds, got {k}")
    if n // k < 2:
        raise DataError(f"{n} classes are too few for {k} folds of at least 2 test classes")
    if n - (n + k - 1) // k - val_classes < 2:
        raise DataError(f"{n} classes in {k} folds leave fewer than 2 training classes beside {val_classes} validation")
    folds: list[Fold] = []
    for r in range(repeats):
        perm = permute_classes(torch.arange(n), torch.Generator().manual_seed(seed + r)).tolist()
        for i, chunk in enumerate(np.array_split(np.asarray(perm), k)):
            test = [names[j] for j in sorted(chunk.tolist())]
            tr, va, _, _ = choose_parts(list(names), test, val_classes, seed=seed + 1000 * (r + 1) + i, what="class")
            folds.append(Fold(r, i, tuple(names[j] for j in tr), tuple(names[j] for j in va), tuple(test)))
    return folds


def _pair_scores(fitted: Fitted, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    e = fitted.embed(x)
    a, b, same = all_pairs(y)
    return fitted.pair_distance(e, a, b).double().numpy(), same.numpy().astype(bool)


def score_fold(
    fitted: Fitted,
    val: tuple[torch.Tensor, torch.Tensor],
    tests: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    fars: Sequence[float] = (1e-2,),
) -> dict[str, dict[str, Any]]:
    """Calibrate the EER threshold on the (clean) validation pairs, score every condition.

    Args:
        fitted: the fold's fitted method.
        val: (inputs, labels) of the inner validation classes.
        tests: condition name -> (inputs, labels) of the test classes under it.
        fars: false accept rates of the reported TAR@FAR.

    Returns:
        condition -> ``{"roc_auc", "eer", "accuracy", "far", "frr", "threshold",
        "tar_at_far", "pairs"}`` (accuracy, far, frr at the calibrated threshold).
    """
    d_val, s_val = _pair_scores(fitted, *val)
    cal = Calibrator(threshold_method="eer").fit(d_val, s_val, split_name="validation")
    out: dict[str, dict[str, Any]] = {}
    for cond, (x, y) in tests.items():
        d, s = _pair_scores(fitted, x, y)
        rep = verification_report(d, s, fars=fars, include_curves=False)
        conf = confusion_at_threshold(d, s, cal.threshold_)
        out[cond] = {
            "roc_auc": rep["roc_auc"],
            "eer": rep["eer"],
            "accuracy": conf.accuracy,
            "far": conf.fp / max(1, conf.fp + conf.tn),
            "frr": conf.fn / max(1, conf.fn + conf.tp),
            "threshold": float(cal.threshold_),
            "tar_at_far": {f"{t['far']:g}": (t["tar"] if t["resolvable"] else None) for t in rep["tar_at_far"]},
            "pairs": {"genuine": rep["num_positive"], "impostor": rep["num_negative"]},
        }
    return out


def _indices(labels: np.ndarray, classes: Sequence[str], part: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``part``'s classes and their labels renumbered 0..len(part)-1."""
    ids = [classes.index(c) for c in part]
    remap = np.full(len(classes), -1)
    remap[ids] = np.arange(len(ids))
    rows = np.nonzero(remap[labels] >= 0)[0]
    return torch.from_numpy(rows), torch.from_numpy(remap[labels[rows]]).long()


def cross_validate(
    images: np.ndarray,
    labels: Any,
    classes: Sequence[str],
    methods: Sequence[CrossValMethod],
    *,
    folds: Sequence[Fold],
    conditions: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    fars: Sequence[float] = (1e-2,),
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every method on every fold; score the fold's test classes under every condition.

    Args:
        images: uint8 (N, C, H, W), the whole set at the source resolution.
        labels: (N,) class index of each image (into ``classes``).
        classes: the class names (the folds' names refer to them).
        methods: what to run (the first is usually the reference, e.g. raw pixels).
        folds: from :func:`class_folds`.
        conditions: name -> function of the whole image set (seeded per image, so every
            method and fold sees the same changed images); applied to test images only.
            None = ``{"clean": identity}``. Training and validation always use the clean
            images.
        fars: TAR@FAR levels to report.
        on_result: called with each (fold, method) row as it is done (progress, saving).

    Returns:
        One row per (fold, method): ``{"fold", "method", "train_classes", "test",
        "info", "conditions": {condition: numbers}}`` (see :func:`score_fold`).

    Raises:
        DataError: a fold names an unknown class, or images and labels disagree.
    """
    arr = np.asarray(images)
    lab = np.asarray(torch.as_tensor(labels)).astype(np.int64)
    if arr.ndim != 4 or arr.shape[0] != lab.shape[0]:
        raise DataError(f"images (N, C, H, W) and labels (N,) must agree, got {arr.shape} and {lab.shape}")
    classes = list(classes)
    unknown = sorted({c for f in folds for c in (*f.train, *f.val, *f.test)} - set(classes))
    if unknown:
        raise DataError(f"folds name unknown classes {unknown[:5]}")
    conds = dict(conditions) if conditions is not None else {"clean": lambda x: x}
    changed = {name: (arr if fn is None else fn(arr)) for name, fn in conds.items()}
    rows: list[dict[str, Any]] = []
    for method in methods:
        clean = method.prepare(arr)
        prepared = {name: (clean if changed[name] is arr else method.prepare(changed[name])) for name in conds}
        for fold in folds:
            (tr, ytr), (va, yva), (te, yte) = (_indices(lab, classes, p) for p in (fold.train, fold.val, fold.test))
            t0 = time.perf_counter()
            fitted = method.fit(clean[tr], ytr, clean[va], yva)
            secs = time.perf_counter() - t0
            scores = score_fold(fitted, (clean[va], yva), {n: (p[te], yte) for n, p in prepared.items()}, fars=fars)
            row = {"fold": fold.name, "method": method.name, "train_seconds": round(secs, 2),
                   "test": list(fold.test), "val": list(fold.val), "info": fitted.info, "conditions": scores}
            rows.append(row)
            if on_result is not None:
                on_result(row)
    return rows


def summarise_folds(rows: Sequence[dict[str, Any]], *, reference: str | None = None) -> dict[str, dict[str, Any]]:
    """Mean, sd and worst fold of every metric, per method and condition.

    Args:
        rows: :func:`cross_validate`'s rows.
        reference: a method name (e.g. "raw pixels"): each other method also gets
            ``beats_reference`` = on how many (fold, condition) cells its EER is below
            the reference's, of how many, and the conditions where it is not.

    Returns:
        method -> ``{"conditions": {condition: {metric: {"mean", "sd", "worst",
        "folds"}}}, "train_seconds": mean, "beats_reference": ...}``.
    """
    out: dict[str, dict[str, Any]] = {}
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    ref = {r["fold"]: r for r in by_method.get(reference or "", [])}
    for name, rs in by_method.items():
        conds: dict[str, Any] = {}
        for cond in rs[0]["conditions"]:
            conds[cond] = {}
            for m, higher in METRICS.items():
                vals = [float(r["conditions"][cond][m]) for r in rs]
                conds[cond][m] = {
                    "mean": statistics.mean(vals),
                    "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    "worst": min(vals) if higher else max(vals),
                    "folds": vals,
                }
        entry: dict[str, Any] = {"conditions": conds, "train_seconds": statistics.mean(r["train_seconds"] for r in rs)}
        if ref and name != reference:
            cells = [(r["fold"], c) for r in rs if r["fold"] in ref for c in r["conditions"]]
            lost = [(f, c) for f, c in cells
                    if not _by_fold(rs, f)["conditions"][c]["eer"] < ref[f]["conditions"][c]["eer"]]
            entry["beats_reference"] = {"won": len(cells) - len(lost), "of": len(cells),
                                        "lost": sorted({c for _, c in lost})}
        out[name] = entry
    return out


def _by_fold(rows: Sequence[dict[str, Any]], fold: str) -> dict[str, Any]:
    """The row of one fold among one method's rows.

    Args:
        rows: rows of one method.
        fold: the fold's name.

    Returns:
        The row.
    """
    return next(r for r in rows if r["fold"] == fold)
