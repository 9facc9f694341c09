"""The obvious Matryoshka loss: for each size, truncate every embedding by hand,
re-normalise it by hand, mine and score it with the loop references, and add up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.reference import naive


def truncated(emb: Any, dim: int, normalize: bool) -> list[list[Any]]:
    """Each row's first ``dim`` values, divided by their norm when ``normalize``."""
    out = []
    for row in naive.rows(emb):
        vals = [row[k] for k in range(dim)]
        if normalize:
            s = 0.0
            for v in vals:
                s = s + v * v
            norm = s**0.5
            vals = [v / norm for v in vals]
        out.append(vals)
    return out


def _floats(rows: list[list[Any]]) -> list[list[float]]:
    return [[float(v.detach()) if hasattr(v, 'detach') else float(v) for v in r] for r in rows]


def _mean(values: list[Any]) -> Any:
    total = 0.0
    for v in values:
        total = total + v
    return total / len(values) if values else 0.0


def matryoshka_triplet(
    emb: Any, labels: Sequence[int], dims: Sequence[int], *, distance: str, margin: float, normalize: bool,
    weights: Sequence[float] | None = None,
) -> Any:
    """sum over sizes of the mean batch-hard triplet loss of the truncated embeddings."""
    total = 0.0
    for k, d in enumerate(dims):
        r = truncated(emb, d, normalize)
        trips = sorted(naive.batch_hard(_floats(r), labels, distance=distance))
        per = naive.triplet_losses(r, [t[0] for t in trips], [t[1] for t in trips], [t[2] for t in trips],
                                   distance=distance, margin=margin)
        total = total + (1.0 if weights is None else weights[k]) * _mean(per)
    return total


def matryoshka_contrastive(
    emb: Any, labels: Sequence[int], dims: Sequence[int], *, distance: str, neg_margin: float, normalize: bool
) -> Any:
    """sum over sizes of the mean contrastive loss over all pairs of the truncated embeddings."""
    total = 0.0
    pairs = sorted(naive.all_pairs(labels))
    for d in dims:
        r = truncated(emb, d, normalize)
        per = naive.contrastive_losses(r, [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs],
                                       distance=distance, neg_margin=neg_margin)
        total = total + _mean(per)
    return total


def matryoshka_mnr(emb: Any, dims: Sequence[int], m: int, *, scale: float, normalize: bool) -> Any:
    """sum over sizes of the symmetric multiple-negatives ranking loss between the first
    two samples of each class (``m`` per class, in order)."""
    total = 0.0
    for d in dims:
        r = truncated(emb, d, normalize)
        anchors = [r[i] for i in range(0, len(r), m)]
        positives = [r[i + 1] for i in range(0, len(r), m)]
        total = total + naive.multiple_negatives_ranking(anchors, positives, scale=scale, symmetric=True)
    return total
