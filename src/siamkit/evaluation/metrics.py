"""Pure metrics on distances and embeddings (few-shot accuracy: :mod:`.few_shot`).

Conventions: distances are lower = closer; ROC analysis uses the score ``-distance`` so
that "higher = more likely the same", as scikit-learn expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ..distances import BaseDistance, get_distance
from ..tuples import all_pairs, check_labels, subsample_pairs
from .verification import equal_error_rate

__all__ = ["labelled_pair_distances", "verification_metrics", "VerificationResult"]


def labelled_pair_distances(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    distance: str | BaseDistance = "euclidean",
    max_pairs: int | None = 500_000,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances and same-class flags of the pairs i < j of a labelled set.

    With more than ``max_pairs`` pairs, a seeded random subset of that size is used
    (all positives are kept when they fit, so rare positives are not lost).

    Args:
        embeddings: (N, D).
        labels: (N,) int class of each row.
        distance: a distance name or object (lower = closer).
        max_pairs: at most this many pairs (None = all).
        seed: seeds the subsampling.

    Shapes:
        embeddings (N, D), labels (N,) -> distances (P,), same (P,).

    Returns:
        distances (P,) float, same (P,) bool.
    """
    labels = check_labels(labels, embeddings.shape[0])
    dist = get_distance(distance)
    pairs = all_pairs(labels)
    if max_pairs is not None:
        pairs = subsample_pairs(pairs, max_pairs, torch.Generator().manual_seed(seed))
    a, b, same = pairs
    with torch.no_grad():
        d = torch.cat([dist.paired(embeddings[a[i : i + 65536]], embeddings[b[i : i + 65536]]) for i in range(0, a.numel(), 65536)]) if a.numel() else embeddings.new_zeros(0)
    return d, same


@dataclass
class VerificationResult:
    """ROC analysis of genuine vs impostor pairs."""

    roc_auc: float
    eer: float
    eer_threshold: float
    num_positive: int
    num_negative: int


def verification_metrics(distances: torch.Tensor | np.ndarray, same: torch.Tensor | np.ndarray) -> VerificationResult:
    """ROC AUC and equal error rate from pair distances (lower = closer).

    Args:
        distances: (P,) pair distances.
        same: (P,) bool, True = genuine pair.

    Returns:
        :class:`VerificationResult` (ROC AUC, EER and its threshold, pair counts).

    Raises:
        ValueError: when there are no positive or no negative pairs.
    """
    d = np.asarray(torch.as_tensor(distances).detach().cpu().double())
    y = np.asarray(torch.as_tensor(same).cpu()).astype(bool)
    if d.shape != y.shape or d.ndim != 1:
        raise ValueError(f"distances {d.shape} and same {y.shape} must be equal 1-D shapes")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC needs both genuine and impostor pairs, got {n_pos} genuine and {n_neg} impostor")
    if not np.isfinite(d).all():
        raise ValueError("distances contain NaN or infinity")
    auc = float(roc_auc_score(y, -d))
    eer, threshold = equal_error_rate(d, y)
    return VerificationResult(auc, eer, threshold, n_pos, n_neg)
