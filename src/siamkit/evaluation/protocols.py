"""Evaluation protocols on data: which pairs are scored, and the raw-pixel baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.images import ImageFolderDataset, to_float
from ..data.pairs import PairCSVDataset
from ..distances import EuclideanDistance
from ..inference import embed_all, pair_distances_of_embeddings
from ..network import SiameseNetwork
from ..tuples import all_pairs, subsample_pairs
from .few_shot import n_way_k_shot_accuracy
from .retrieval import retrieval_metrics

__all__ = ["ScoredPairs", "score_folder", "score_pair_csv"]


@dataclass
class ScoredPairs:
    """Pairs scored by a model (and by raw pixels, the baseline) on one split.

    Attributes:
        distances: (P,) model distances, lower = closer.
        same: (P,) bool.
        baseline: (P,) raw-pixel Euclidean distances of the same pairs.
        embeddings, labels: the embedded set (None for pair files).
        extra: protocol numbers (one-shot accuracy, retrieval).
        split: what was scored, for the report.
    """

    distances: torch.Tensor
    same: torch.Tensor
    baseline: torch.Tensor
    embeddings: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)


def _raw(images: torch.Tensor) -> torch.Tensor:
    return to_float(images).flatten(1)


def score_folder(
    network: SiameseNetwork, ds: ImageFolderDataset, *, max_pairs: int = 500_000, seed: int = 0, one_shot: bool = True
) -> ScoredPairs:
    """All pairs i < j of a labelled image set (a seeded random subset beyond max_pairs,
    keeping every genuine pair when they fit in half), plus N-way 1-shot accuracy
    (5-way and 20-way when there are enough classes) and retrieval metrics.

    Args:
        network: the model to score.
        ds: the labelled images.
        max_pairs: at most this many pairs.
        seed: seeds the pair subset and the one-shot episodes.
        one_shot: also measure one-shot accuracy and retrieval.

    Returns:
        :class:`ScoredPairs` with the embeddings, labels and the protocol numbers.
    """
    e = embed_all(network, ds.images)
    a, b, same = subsample_pairs(all_pairs(ds.labels), max_pairs, torch.Generator().manual_seed(seed))
    d = pair_distances_of_embeddings(network, e, a, b)
    raw = _raw(ds.images)
    base = EuclideanDistance().paired(raw[a], raw[b])
    extra: dict[str, Any] = {}
    n_classes = int(torch.unique(ds.labels).numel())
    counts = torch.bincount(ds.labels)
    if one_shot:
        dist = network.distance if network.pair_head is None else "l1"
        for n_way in (5, 20):
            if int((counts >= 2).sum()) >= n_way:
                acc, ci = n_way_k_shot_accuracy(e, ds.labels, n_way=n_way, episodes=1000, seed=seed, distance=dist)
                bacc, bci = n_way_k_shot_accuracy(raw, ds.labels, n_way=n_way, episodes=1000, seed=seed)
                extra[f"{n_way}_way_1_shot"] = {"accuracy": acc, "ci95": ci, "baseline_accuracy": bacc}
        if int((counts >= 2).sum()) >= 2:
            r = retrieval_metrics(e, ds.labels, distance=network.distance)
            extra["retrieval"] = {k: r[k] for k in ("precision_at_1", "r_precision", "map_at_r")}
    split = {"protocol": "all pairs of a labelled folder", "images": len(ds), "classes": n_classes,
             "pairs": int(same.numel()), "max_pairs": max_pairs, "seed": seed}
    return ScoredPairs(d, same, base, e, ds.labels, extra, split)


def score_pair_csv(network: SiameseNetwork, pairs: PairCSVDataset) -> ScoredPairs:
    """The pairs listed in a ``path_a,path_b,same`` file.

    Args:
        network: the model to score.
        pairs: the pair file, read.

    Returns:
        :class:`ScoredPairs` (no embeddings: pairs are not a labelled set).
    """
    e = embed_all(network, pairs.images)
    d = pair_distances_of_embeddings(network, e, pairs.a, pairs.b)
    raw = _raw(pairs.images)
    base = EuclideanDistance().paired(raw[pairs.a], raw[pairs.b])
    split = {"protocol": "pairs from a CSV file", "pairs": len(pairs), "images": int(pairs.images.shape[0])}
    return ScoredPairs(d, pairs.same, base, split=split)
