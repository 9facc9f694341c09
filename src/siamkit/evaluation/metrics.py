"""Pure metrics on distances and embeddings: verification (ROC AUC, EER) and the one
nearest-support accuracy that every few-shot protocol (:mod:`.few_shot`) scores with.

Conventions: distances are lower = closer; ROC analysis uses the score ``-distance`` so
that "higher = more likely the same", as scikit-learn expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ..distances import BaseDistance, get_distance
from ..tuples import all_pairs, check_labels, subsample_pairs
from .verification import equal_error_rate

__all__ = [
    "labelled_pair_distances",
    "verification_metrics",
    "VerificationResult",
    "FewShotScore",
    "candidate_distances",
    "score_predictions",
    "nearest_support_score",
]


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


# --------------------------------------------------------------------------- nearest-support accuracy


@dataclass(frozen=True)
class FewShotScore:
    """Nearest-candidate classification of a set of queries.

    Attributes:
        accuracy: correct queries / all queries.
        ci95: half-width of the normal 95% interval of ``accuracy`` (see
            :func:`score_predictions`).
        predictions: int64 (T,), the chosen candidate of each query.
        hits: bool (T,), prediction == answer.
        episode_accuracy: float64 (E,), accuracy of each episode in ascending episode
            id order; None when no episodes were given.
    """

    accuracy: float
    ci95: float
    predictions: torch.Tensor
    hits: torch.Tensor
    episode_accuracy: torch.Tensor | None = None


def candidate_distances(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    *,
    distance: str | BaseDistance = "euclidean",
    shots: int = 1,
) -> torch.Tensor:
    """Distance of each query to each class of candidates.

    Args:
        queries: (T, D) query embeddings.
        candidates: (n * shots, D), one candidate set shared by every query (compared
            with ``distance.pairwise``), or (T, n * shots, D), a set per query (compared
            with ``distance.paired``). The ``shots`` supports of a class are consecutive.
        distance: a distance name or object (lower = closer).
        shots: supports per class; their distances are averaged.

    Shapes:
        queries (T, D), candidates (m, D) or (T, m, D) with m = n * shots -> (T, n).

    Returns:
        The distances, float (T, n).
    """
    dist = get_distance(distance)
    with torch.no_grad():
        if candidates.ndim == 2:
            d = dist.pairwise(queries, candidates)
        elif candidates.ndim == 3 and candidates.shape[0] == queries.shape[0]:
            t, m = candidates.shape[:2]
            # in chunks of trials: T x m x D values at once reached 8 GB for raw pixels
            step = max(1, (1 << 23) // max(1, m * queries.shape[1]))
            d = torch.cat(
                [
                    dist.paired(queries[i : i + step].repeat_interleave(m, 0), candidates[i : i + step].reshape(-1, candidates.shape[2]))
                    for i in range(0, t, step)
                ]
            ).view(t, m) if t else queries.new_zeros(0, m)
        else:
            raise ValueError(f"candidates must be (m, D) or (T, m, D) for {queries.shape[0]} queries, got {tuple(candidates.shape)}")
        if shots > 1:
            d = d.view(d.shape[0], -1, shots).mean(2)
    return d


def score_predictions(
    predictions: torch.Tensor, answer: torch.Tensor, *, episode: torch.Tensor | None = None
) -> FewShotScore:
    """Accuracy of predictions and the half-width of its normal 95% interval.

    Args:
        predictions: int (T,), the chosen candidate of each query.
        answer: int (T,), the correct candidate.
        episode: int (T,), the episode of each query, or None. With >= 2 episodes the
            standard error is taken over episode accuracies (queries of one episode share
            a support set, so they are not independent); otherwise it is the binomial
            ``sqrt(p (1 - p) / T)``.

    Shapes:
        predictions (T,), answer (T,), episode (T,).

    Returns:
        :class:`FewShotScore` (``ci95`` = 1.96 standard errors).
    """
    pred = predictions.cpu()
    hits = pred == answer.cpu()
    hit = hits.double()
    p = float(hit.mean())
    per = None
    if episode is not None:
        ep, inv = torch.unique(episode.cpu(), return_inverse=True)
        per = torch.zeros(ep.numel(), dtype=torch.double).index_add_(0, inv, hit) / torch.bincount(inv).double()
    if per is not None and per.numel() >= 2:
        se = float(per.std(unbiased=True)) / math.sqrt(per.numel())
    else:
        se = math.sqrt(p * (1 - p) / hit.numel())
    return FewShotScore(p, 1.96 * se, pred, hits, per)


def nearest_support_score(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    answer: torch.Tensor,
    *,
    distance: str | BaseDistance = "euclidean",
    shots: int = 1,
    episode: torch.Tensor | None = None,
) -> FewShotScore:
    """Assign each query its nearest candidate class and score the assignment.

    Args:
        queries: (T, D) query embeddings.
        candidates: (n * shots, D) shared by every query, or (T, n * shots, D) per query
            (see :func:`candidate_distances`).
        answer: int (T,), the correct class (0..n-1) of each query.
        distance: a distance name or object (lower = closer); ties go to the lower class.
        shots: supports per class (consecutive in ``candidates``).
        episode: int (T,), the episode of each query, or None (see
            :func:`score_predictions`).

    Shapes:
        queries (T, D), candidates (m, D) or (T, m, D), answer (T,), episode (T,).

    Returns:
        :class:`FewShotScore`: accuracy, 95% interval, predictions, hits.
    """
    d = candidate_distances(queries, candidates, distance=distance, shots=shots)
    return score_predictions(d.argmin(1), answer, episode=episode)
