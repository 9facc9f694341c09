"""Verification metrics on pair distances: ROC, EER, TAR@FAR, DET, confusion at a threshold.

Every function takes ``(distances, same)``:

- ``distances`` (P,): one distance per pair, **lower = closer** (a pair-head model gives
  its negative logit, which follows the same convention);
- ``same`` (P,): True for a genuine pair (same identity / class), False for an impostor.

A pair is *accepted* at threshold ``t`` when ``distance <= t``. Then

- FAR (false accept rate, = FPR) = accepted impostors / impostors,
- TAR (true accept rate, = TPR) = accepted genuine pairs / genuine pairs,
- FRR (false reject rate, = FNR) = 1 - TAR.

scikit-learn's curves want a score that is higher for the positive class, so they are
computed on ``score = -distance`` and their thresholds are turned back into distances.

Example:
    >>> import numpy as np
    >>> from siamkit.evaluation.verification import equal_error_rate
    >>> d = np.array([0.1, 0.2, 0.3, 0.4])
    >>> same = np.array([True, True, False, False])
    >>> eer, t = equal_error_rate(d, same)
    >>> eer, round(t, 3)
    (0.0, 0.25)
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import det_curve as _sk_det_curve
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as _sk_roc_curve

from .curve import ArrayLike, as_pairs, count_curve, eer_from_counts

__all__ = [
    "roc",
    "equal_error_rate",
    "tar_at_far",
    "TarAtFar",
    "det_curve",
    "confusion_at_threshold",
    "Confusion",
    "verification_report",
    "min_negatives_for_far",
    "tar_at_far_from_counts",
]

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------- inputs


def _check_far(far: float) -> float:
    far = float(far)
    if not (0.0 < far <= 1.0):
        raise ValueError(f"far must be in (0, 1], got {far}")
    return far


def min_negatives_for_far(far: float) -> int:
    """Impostor pairs needed to resolve a false accept rate: ``ceil(1 / far)``.

    With fewer impostors than this, a single false accept already exceeds ``far``, so the
    rate cannot be measured. (A relative tolerance of 1e-9 absorbs the rounding of
    ``1 / far``, so ``far = 1e-3`` needs exactly 1000.)
    """
    far = _check_far(far)
    return max(1, math.ceil(1.0 / far * (1.0 - 1e-9)))


# --------------------------------------------------------------------------- curves


def roc(
    distances: ArrayLike, same: ArrayLike, *, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of pair distances (scikit-learn's ``roc_curve`` on ``-distance``).

    Args:
        distances: pair distances, lower = closer.
        same: True for genuine pairs.
        drop_intermediate: drop collinear points (as scikit-learn); False keeps one point
            per distinct distance.

    Shapes:
        distances (P,), same (P,) -> three (K,) arrays.

    Returns:
        ``(fpr, tpr, thresholds)``; ``thresholds`` are distances in increasing order and
        point k is the operating point of "accept when distance <= thresholds[k]". The first
        point is ``(0, 0)`` with threshold ``-inf`` (accept nothing).
    """
    d, s = as_pairs(distances, same)
    fpr, tpr, thr = _sk_roc_curve(s, -d, drop_intermediate=drop_intermediate)
    return fpr, tpr, -thr


def det_curve(distances: ArrayLike, same: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detection error trade-off curve (scikit-learn's ``det_curve`` on ``-distance``).

    Args:
        distances: pair distances, lower = closer.
        same: True for genuine pairs.

    Shapes:
        distances (P,), same (P,) -> three (K,) arrays.

    Returns:
        ``(fpr, fnr, thresholds)`` in scikit-learn's order (thresholds as distances,
        decreasing; fpr decreasing, fnr increasing); point k is "accept when
        distance <= thresholds[k]".
    """
    d, s = as_pairs(distances, same)
    fpr, fnr, thr = _sk_det_curve(s, -d)
    return fpr, fnr, -thr


# --------------------------------------------------------------------------- EER


def equal_error_rate(distances: ArrayLike, same: ArrayLike) -> tuple[float, float]:
    """Equal error rate and its distance threshold.

    The empirical ROC has one point per distinct distance ``t_k`` (in increasing order,
    with ``t_0 = -inf``: accept nothing), with ``FPR_k`` and ``FNR_k = 1 - TPR_k``.
    ``FPR_k - FNR_k`` goes from -1 to +1 and never decreases. Let ``i`` be the first point
    with ``FPR_i >= FNR_i``:

    - if ``FPR_i == FNR_i`` exactly, the EER is that value and the threshold is the middle of
      ``[t_i, t_{i+1})`` (every threshold in that gap gives this operating point on the data;
      ``t_i`` when i is the last point). With separable classes this puts the threshold
      halfway between the farthest genuine pair and the closest impostor;
    - otherwise the crossing lies on the straight segment between points ``i-1`` and ``i``:
      with ``alpha = -(FPR-FNR)_{i-1} / ((FPR-FNR)_i - (FPR-FNR)_{i-1})`` in (0, 1),
      ``EER = FPR_{i-1} + alpha (FPR_i - FPR_{i-1})`` (which equals the interpolated FNR)
      and the threshold is ``t_{i-1} + alpha (t_i - t_{i-1})``, interpolated in the same
      proportion (``t_i`` when ``i-1`` is the "accept nothing" point).

    Note that the interpolated threshold is a *nominal* value: on the data it was computed
    from, "distance <= threshold" realises the rates of point ``i-1`` (no distance lies
    strictly between ``t_{i-1}`` and ``t_i``); the EER itself is the rate of the linear
    mix of the two neighbouring operating points.

    Args:
        distances: pair distances, lower = closer.
        same: True for genuine pairs.

    Shapes:
        distances (P,), same (P,).

    Returns:
        ``(eer, threshold)``; eer in [0, 1], threshold a distance.
    """
    d, s = as_pairs(distances, same)
    return eer_from_counts(*count_curve(d, s))


# --------------------------------------------------------------------------- TAR@FAR


@dataclass(frozen=True)
class TarAtFar:
    """True accept rate at a false accept rate.

    Attributes:
        far: the requested false accept rate.
        tar: true accept rate at ``threshold`` (NaN when not resolvable).
        threshold: the largest distance threshold whose FAR <= ``far`` (NaN when not
            resolvable; ``-inf`` when even the smallest distance exceeds the FAR, e.g.
            because it is shared by several impostor pairs).
        resolvable: False when there are fewer than ``ceil(1/far)`` impostor pairs.
        reason: why the value is not resolvable, else None.
    """

    far: float
    tar: float
    threshold: float
    resolvable: bool
    reason: str | None = None


def tar_at_far_from_counts(thr: np.ndarray, tp: np.ndarray, fp: np.ndarray, far: float) -> TarAtFar:
    """True accept rate at the largest threshold whose false accept rate is <= ``far``.

    Args:
        thr: thresholds of :func:`count_curve`.
        tp: cumulative genuine counts.
        fp: cumulative impostor counts.
        far: the target false accept rate.

    Returns:
        :class:`TarAtFar`; unresolved (NaN, with the reason) when there are too few
        impostor pairs to measure ``far``.
    """
    n_pos, n_neg = int(tp[-1]), int(fp[-1])
    need = min_negatives_for_far(far)
    if n_neg < need:
        return TarAtFar(
            far,
            float("nan"),
            float("nan"),
            False,
            f"FAR {far:g} needs at least {need} impostor pairs to be resolved, got {n_neg}",
        )
    # fp / n_neg is correctly rounded, so the comparison is exact when FAR == far
    k = int(np.flatnonzero(fp / n_neg <= far)[-1])  # fp[0] == 0, so there is one
    return TarAtFar(far, float(tp[k] / n_pos), float(thr[k]), True, None)


def tar_at_far(distances: ArrayLike, same: ArrayLike, far: float) -> TarAtFar:
    """True accept rate at the largest threshold whose false accept rate is <= ``far``.

    The candidate thresholds are the distinct distances (accept when distance <= t);
    FAR never decreases with t, so this is the last ROC point with ``FPR <= far``.
    With fewer than ``ceil(1/far)`` impostor pairs the FAR cannot be resolved: the
    result then has ``tar = threshold = NaN``, ``resolvable = False`` and a reason.

    Args:
        distances: pair distances, lower = closer.
        same: True for genuine pairs.
        far: target false accept rate in (0, 1].

    Shapes:
        distances (P,), same (P,).

    Returns:
        :class:`TarAtFar`.
    """
    far = _check_far(far)
    d, s = as_pairs(distances, same)
    return tar_at_far_from_counts(*count_curve(d, s), far)


# --------------------------------------------------------------------------- confusion


@dataclass(frozen=True)
class Confusion:
    """Counts and rates of "accept when distance <= threshold" (positive = genuine).

    precision (and so f1) is 0 when nothing is accepted, as scikit-learn's
    ``zero_division=0``.
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    precision: float
    recall: float
    f1: float


def confusion_at_threshold(distances: ArrayLike, same: ArrayLike, threshold: float) -> Confusion:
    """Confusion counts, accuracy, precision, recall and F1 of accepting ``distance <= threshold``.

    Only one class need be present.

    Args:
        distances: pair distances, lower = closer.
        same: True for genuine pairs.
        threshold: a distance (``inf`` accepts everything, ``-inf`` nothing).

    Shapes:
        distances (P,), same (P,).

    Returns:
        :class:`Confusion`.
    """
    threshold = float(threshold)
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    d, s = as_pairs(distances, same, need_both=False)
    accept = d <= threshold
    tp = int((accept & s).sum())
    fp = int((accept & ~s).sum())
    fn = int((~accept & s).sum())
    tn = int((~accept & ~s).sum())
    accuracy = (tp + tn) / s.size
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return Confusion(threshold, tp, fp, tn, fn, float(accuracy), float(precision), float(recall), float(f1))


# --------------------------------------------------------------------------- report


def _json_float(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _json_floats(a: np.ndarray) -> list[float | None]:
    return [_json_float(v) for v in a.tolist()]


def verification_report(
    distances: ArrayLike,
    same: ArrayLike,
    fars: Sequence[float] = (1e-1, 1e-2, 1e-3),
    *,
    include_curves: bool = True,
) -> dict[str, Any]:
    """Everything in this module, as a JSON-able dict.

    Non-finite floats become ``None`` (strict JSON): the NaN TAR of an unresolvable FAR,
    and the ``-inf`` "accept nothing" threshold that starts the ROC curve.

    Args:
        distances: pair distances, lower = closer.
        same: True for genuine pairs.
        fars: false accept rates at which to report the TAR.
        include_curves: add the ROC (collinear points dropped) and DET curves.

    Shapes:
        distances (P,), same (P,).

    Returns:
        ``{"num_pairs", "num_positive", "num_negative", "roc_auc", "eer", "eer_threshold",
        "tar_at_far": [{"far", "tar", "threshold", "resolvable", "reason"}, ...],
        "confusion_at_eer_threshold": {...}}`` plus, with ``include_curves``,
        ``"roc": {"fpr", "tpr", "thresholds"}`` and ``"det": {"fpr", "fnr", "thresholds"}``.
    """
    fars = [_check_far(f) for f in fars]
    d, s = as_pairs(distances, same)
    n_pos = int(s.sum())
    n_neg = int(s.size - n_pos)
    curve = count_curve(d, s)
    eer, eer_t = eer_from_counts(*curve)
    tars = [tar_at_far_from_counts(*curve, f) for f in fars]
    conf = confusion_at_threshold(d, s, eer_t)
    report: dict[str, Any] = {
        "num_pairs": int(s.size),
        "num_positive": n_pos,
        "num_negative": n_neg,
        "roc_auc": float(roc_auc_score(s, -d)),
        "eer": eer,
        "eer_threshold": eer_t,
        "tar_at_far": [
            {
                "far": t.far,
                "tar": _json_float(t.tar),
                "threshold": _json_float(t.threshold),
                "resolvable": t.resolvable,
                "reason": t.reason,
            }
            for t in tars
        ],
        "confusion_at_eer_threshold": asdict(conf),
    }
    if include_curves:
        rf, rt, rthr = roc(d, s, drop_intermediate=True)
        df, dn, dthr = det_curve(d, s)
        report["roc"] = {"fpr": _json_floats(rf), "tpr": _json_floats(rt), "thresholds": _json_floats(rthr)}
        report["det"] = {"fpr": _json_floats(df), "fnr": _json_floats(dn), "thresholds": _json_floats(dthr)}
    return report
