"""Metrics of text-pair similarity: Pearson / Spearman for graded pairs, ROC AUC and
accuracy / F1 at a calibrated threshold for binary pairs.

Distances are ``1 - cosine`` (lower = closer) so the binary metrics reuse
:mod:`siamkit.evaluation.verification` and :class:`siamkit.calibration.Calibrator`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.text import TextPairs
from ..errors import DataError
from .verification import confusion_at_threshold, roc

__all__ = ["text_pair_metrics", "correlations"]


def correlations(similarity: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation (scipy) of predicted similarities with gold scores.

    Args:
        similarity: the model's similarity per pair.
        scores: the gold score per pair.

    Shapes:
        similarity (N,), scores (N,).

    Returns:
        ``{"pearson": r, "spearman": rho}``.

    Raises:
        DataError: fewer than two pairs, or constant predictions / scores.
    """
    from scipy.stats import pearsonr, spearmanr

    sim, gold = np.asarray(similarity, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if sim.shape != gold.shape or sim.size < 2:
        raise DataError(f"need two or more pairs with a score each, got {sim.shape} and {gold.shape}")
    if np.ptp(sim) == 0 or np.ptp(gold) == 0:
        raise DataError("the correlation is undefined: the similarities or the scores are constant")
    return {"pearson": float(pearsonr(sim, gold)[0]), "spearman": float(spearmanr(sim, gold)[0])}


def text_pair_metrics(similarity: np.ndarray, pairs: TextPairs, *, threshold: float | None = None) -> dict[str, Any]:
    """The metrics of predicted similarities on labelled pairs.

    Args:
        similarity: the cosine similarity per pair (higher = more similar).
        pairs: the pairs and their targets.
        threshold: for binary pairs, the calibrated distance threshold (accept when
            ``1 - similarity <= threshold``), fitted on other data; None: no thresholded
            metrics.

    Shapes:
        similarity (N,).

    Returns:
        Graded: ``n, pearson, spearman``. Binary: ``n, roc_auc`` and, with a threshold,
        ``threshold, accuracy, precision, recall, f1``.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    out: dict[str, Any] = {"n": int(sim.size)}
    if not pairs.binary:
        out.update(correlations(sim, pairs.targets))
        return out
    distances, same = 1.0 - sim, pairs.targets > 0.5
    fpr, tpr, _ = roc(distances, same)
    out["roc_auc"] = float(np.trapezoid(tpr, fpr))
    if threshold is not None:
        c = confusion_at_threshold(distances, same, threshold)
        out.update(threshold=float(threshold), accuracy=c.accuracy, precision=c.precision, recall=c.recall, f1=c.f1)
    return out
