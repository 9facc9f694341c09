"""Pure metrics on distances and embeddings.

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

__all__ = ["labelled_pair_distances", "verification_metrics", "VerificationResult", "n_way_k_shot_accuracy"]


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


def n_way_k_shot_accuracy(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_way: int,
    k_shot: int = 1,
    n_query: int = 1,
    episodes: int = 1000,
    distance: str | BaseDistance = "euclidean",
    seed: int = 0,
) -> tuple[float, float]:
    """Accuracy of nearest-support classification over random N-way K-shot episodes.

    Each episode draws ``n_way`` classes, ``k_shot`` supports and ``n_query`` queries per
    class (disjoint); a query is assigned the class of its nearest support (K > 1: the
    smallest mean distance to the class's supports).

    Returns:
        (mean accuracy, half-width of the 95% confidence interval over episodes).
    """
    labels = check_labels(labels, embeddings.shape[0])
    dist = get_distance(distance)
    classes, inv = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(inv)
    eligible = (counts >= k_shot + n_query).nonzero(as_tuple=True)[0]
    if eligible.numel() < n_way:
        raise ValueError(
            f"{n_way}-way {k_shot}-shot needs {n_way} classes with >= {k_shot + n_query} samples, "
            f"found {eligible.numel()}"
        )
    by_class = [torch.nonzero(inv == c, as_tuple=True)[0] for c in range(len(classes))]
    g = torch.Generator().manual_seed(seed)
    accs = np.empty(episodes)
    with torch.no_grad():
        for e in range(episodes):
            chosen = eligible[torch.randperm(eligible.numel(), generator=g)[:n_way]]
            sup, qry = [], []
            for c in chosen.tolist():
                idx = by_class[c][torch.randperm(by_class[c].numel(), generator=g)[: k_shot + n_query]]
                sup.append(idx[:k_shot])
                qry.append(idx[k_shot:])
            s = embeddings[torch.cat(sup)]
            q = embeddings[torch.cat(qry)]
            d = dist.pairwise(q, s).view(q.shape[0], n_way, k_shot).mean(2)
            pred = d.argmin(1)
            truth = torch.arange(n_way).repeat_interleave(n_query)
            accs[e] = float((pred == truth).float().mean())
    mean = float(accs.mean())
    ci = float(1.96 * accs.std(ddof=1) / np.sqrt(episodes)) if episodes > 1 else float("nan")
    return mean, ci
