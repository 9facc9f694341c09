"""Anomaly-detection metrics on anomaly scores: AUROC, average precision, confusion.

The positive class is *anomaly*; a score is **higher = more anomalous**, and a sample is
flagged when ``score > threshold``. The scores usually come from
:class:`~siamkit.anomaly.AnomalyDetector`, but any anomaly score works.

Example:
    >>> import numpy as np
    >>> from siamkit.evaluation.anomaly import anomaly_metrics
    >>> m = anomaly_metrics(np.array([0.1, 0.2, 0.9, 0.8]), np.array([False, False, True, True]), 0.5)
    >>> m["auroc"], m["confusion"]["recall"]
    (1.0, 1.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from ..errors import DataError
from .curve import as_distances, to_numpy

__all__ = [
    "anomaly_metrics",
    "as_anomaly_flags",
    "as_scores_and_flags",
    "require_both_classes",
]


# --------------------------------------------------------------------------- inputs


def as_anomaly_flags(is_anomaly: Any, n: int) -> np.ndarray:
    """Check one anomaly flag per sample.

    Args:
        is_anomaly: True for anomalous samples (booleans, or 0/1 numbers).
        n: the number of samples.

    Shapes:
        is_anomaly (n,) -> bool (n,).

    Returns:
        The flags as booleans.

    Raises:
        DataError: another shape, or values other than booleans / 0 / 1.
    """
    y = to_numpy(is_anomaly)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"is_anomaly must be 1-D with one flag per sample ({n}), got shape {tuple(y.shape)}")
    if y.dtype != bool:
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise DataError(f"is_anomaly must be boolean, got dtype {y.dtype}")
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            raise DataError(f"is_anomaly must be boolean (or 0/1), got {int(bad.sum())} other values, e.g. {y[bad][0]!r}")
        y = y.astype(bool)
    return y


def _as_scores(scores: Any) -> np.ndarray:
    """float64 copy of 1-D, non-empty, finite scores; DataError otherwise."""
    s = to_numpy(scores)
    if s.ndim != 1:
        raise DataError(f"scores must be 1-D, got shape {tuple(s.shape)}")
    if s.size == 0:
        raise DataError("no samples: the scores are empty")
    return as_distances(s, name="scores")


def as_scores_and_flags(scores: Any, is_anomaly: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check anomaly scores and their flags together.

    Args:
        scores: anomaly scores, higher = more anomalous.
        is_anomaly: True for anomalous samples.

    Shapes:
        scores (N,), is_anomaly (N,) -> float64 (N,), bool (N,).

    Returns:
        ``(scores, flags)``: finite float64 scores and boolean flags.

    Raises:
        DataError: not 1-D, empty, NaN / infinite scores, or flags of another shape.
    """
    s = _as_scores(scores)
    return s, as_anomaly_flags(is_anomaly, s.shape[0])


def require_both_classes(y: np.ndarray, what: str) -> None:
    """Refuse flags that hold only normal or only anomalous samples.

    Args:
        y: boolean anomaly flags (N,).
        what: what needs both classes, for the message (e.g. ``"AUROC"``).

    Raises:
        DataError: one of the two classes is missing.
    """
    n_anom = int(y.sum())
    n_norm = int(y.size - n_anom)
    if n_anom == 0 or n_norm == 0:
        raise DataError(f"{what} needs both normal and anomalous samples, got {n_norm} normal and {n_anom} anomalous")


# --------------------------------------------------------------------------- metrics


def _confusion(s: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
    flag = s > threshold
    tp = int((flag & y).sum())
    fp = int((flag & ~y).sum())
    fn = int((~flag & y).sum())
    tn = int((~flag & ~y).sum())
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": (tp + tn) / y.size,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "false_alarm_rate": fp / (fp + tn),
    }


def anomaly_metrics(scores: Any, is_anomaly: Any, threshold: float | None = None) -> dict[str, Any]:
    """AUROC, average precision and the confusion at a threshold, from anomaly scores.

    Positive = anomaly; a sample is flagged when ``score > threshold``.

    Args:
        scores: anomaly scores, higher = more anomalous.
        is_anomaly: True for anomalous samples.
        threshold: the decision threshold; None = no confusion.

    Shapes:
        scores (N,), is_anomaly (N,).

    Returns:
        ``{"auroc", "average_precision", "n_normal", "n_anomalous", "threshold",
        "confusion"}``; ``confusion`` is None without a threshold, else ``{"tp", "fp",
        "tn", "fn", "accuracy", "precision", "recall", "f1", "false_alarm_rate"}``
        (recall = anomalies caught; false_alarm_rate = normal samples flagged;
        precision is 0 when nothing is flagged).

    Raises:
        DataError: shapes differ, NaN / infinite scores, or only one class.
    """
    s, y = as_scores_and_flags(scores, is_anomaly)
    require_both_classes(y, "AUROC")
    n_anom = int(y.sum())
    return {
        "auroc": float(roc_auc_score(y, s)),
        "average_precision": float(average_precision_score(y, s)),
        "n_normal": int(y.size - n_anom),
        "n_anomalous": n_anom,
        "threshold": None if threshold is None else float(threshold),
        "confusion": None if threshold is None else _confusion(s, y, float(threshold)),
    }
