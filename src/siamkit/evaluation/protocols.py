"""Evaluation protocols on data: which pairs are scored, and the raw-pixel baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.images import ImageFolderDataset, to_float
from ..data.pairs import PairCSVDataset
from ..distances import EuclideanDistance
from ..inference import embed_all, pair_distances_of_embeddings, paired_distances
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
        baseline: (P,) raw-pixel Euclidean distances of the same pairs (None: not computed).
        embeddings, labels: the embedded set (None for pair files).
        extra: protocol numbers (one-shot accuracy, retrieval).
        split: what was scored, for the report.
    """

    distances: torch.Tensor
    same: torch.Tensor
    baseline: torch.Tensor | None
    embeddings: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)


def _raw(images: torch.Tensor) -> torch.Tensor:
    return to_float(images).flatten(1)


def score_folder(
    network: SiameseNetwork,
    ds: ImageFolderDataset,
    *,
    max_pairs: int = 500_000,
    seed: int = 0,
    one_shot: bool = True,
    baseline: bool = True,
    n_ways: tuple[int, ...] = (5, 20),
    k_shot: int = 1,
) -> ScoredPairs:
    """All pairs i < j of a labelled image set (a seeded random subset beyond max_pairs,
    keeping every genuine pair when they fit in half), plus N-way K-shot accuracy (each N
    of ``n_ways`` that the set has enough classes for) and retrieval metrics.

    Memory is bounded: pair distances, model and raw pixels, are computed in chunks.

    Args:
        network: the model to score.
        ds: the labelled images.
        max_pairs: at most this many pairs.
        seed: seeds the pair subset and the one-shot episodes.
        one_shot: also measure N-way K-shot accuracy and retrieval.
        baseline: also score raw pixels (Euclidean on pixels in [0, 1]) on the same pairs
            and episodes; False computes nothing of it.
        n_ways: the N of the N-way episodes (an N above the number of usable classes is
            skipped, and said so in ``split``).
        k_shot: supports per class in an episode.

    Returns:
        :class:`ScoredPairs` with the embeddings, labels and the protocol numbers.
    """
    e = embed_all(network, ds.images)
    a, b, same = subsample_pairs(all_pairs(ds.labels), max_pairs, torch.Generator().manual_seed(seed))
    d = pair_distances_of_embeddings(network, e, a, b)
    raw = _raw(ds.images) if baseline else None
    base = paired_distances(EuclideanDistance(), raw, a, b) if raw is not None else None
    extra: dict[str, Any] = {}
    n_classes = int(torch.unique(ds.labels).numel())
    usable = int((torch.bincount(ds.labels) >= k_shot + 1).sum())
    skipped = []
    if one_shot:
        dist = network.distance if network.pair_head is None else "l1"
        for n_way in n_ways:
            if usable < n_way or n_way < 2:
                skipped.append(n_way)
                continue
            kw = {"n_way": n_way, "k_shot": k_shot, "episodes": 1000, "seed": seed}
            acc, ci = n_way_k_shot_accuracy(e, ds.labels, distance=dist, **kw)
            bacc = n_way_k_shot_accuracy(raw, ds.labels, **kw)[0] if raw is not None else None
            extra[f"{n_way}_way_{k_shot}_shot"] = {"accuracy": acc, "ci95": ci, "baseline_accuracy": bacc}
        if int((torch.bincount(ds.labels) >= 2).sum()) >= 2:
            r = retrieval_metrics(e, ds.labels, distance=network.distance)
            extra["retrieval"] = {k: r[k] for k in ("precision_at_1", "r_precision", "map_at_r")}
    split = {"protocol": "all pairs of a labelled folder", "images": len(ds), "classes": n_classes,
             "pairs": int(same.numel()), "max_pairs": max_pairs, "seed": seed, "baseline": "raw pixels" if baseline else None}
    if one_shot:
        split["episodes"] = {"n_ways": [n for n in n_ways if n not in skipped], "k_shot": k_shot, "skipped_n_ways": skipped,
                             "classes_with_k_plus_1_images": usable}
    return ScoredPairs(d, same, base, e, ds.labels, extra, split)


def score_pair_csv(network: SiameseNetwork, pairs: PairCSVDataset, *, baseline: bool = True) -> ScoredPairs:
    """The pairs listed in a ``path_a,path_b,same`` file.

    Args:
        network: the model to score.
        pairs: the pair file, read.
        baseline: also score raw pixels on the same pairs.

    Returns:
        :class:`ScoredPairs` (no embeddings: pairs are not a labelled set).
    """
    e = embed_all(network, pairs.images)
    d = pair_distances_of_embeddings(network, e, pairs.a, pairs.b)
    base = paired_distances(EuclideanDistance(), _raw(pairs.images), pairs.a, pairs.b) if baseline else None
    split = {"protocol": "pairs from a CSV file", "pairs": len(pairs), "images": int(pairs.images.shape[0]),
             "baseline": "raw pixels" if baseline else None}
    return ScoredPairs(d, pairs.same, base, split=split)
