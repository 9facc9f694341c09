"""One labelled set scored at several embedding sizes (Matryoshka prefixes): ROC AUC, EER
and N-way K-shot accuracy per size, from ONE embedding pass (every prefix is the full
embedding's, :func:`siamkit.matryoshka.prefix`), on the same pairs and episodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..inference import embed_all, pair_distances_of_embeddings
from ..matryoshka import prefix
from ..network import SiameseNetwork
from ..tuples import sample_all_pairs
from .few_shot import n_way_k_shot_accuracy
from .metrics import verification_metrics

__all__ = ["SizeScores", "score_sizes", "size_distances", "sizes_table"]


@dataclass
class SizeScores:
    """The same pairs (and episodes) scored at every size.

    Attributes:
        dims: the sizes, as asked.
        distances: size -> (P,) pair distances (lower = closer).
        same: (P,) bool, genuine pair.
        rows: one dict per size: ``dim``, ``roc_auc``, ``eer``, and
            ``"{N}_way_{K}_shot"`` -> {"accuracy", "ci95"} for each N.
        split: what was scored.
    """

    dims: list[int]
    distances: dict[int, torch.Tensor]
    same: torch.Tensor
    rows: list[dict[str, Any]] = field(default_factory=list)
    split: dict[str, Any] = field(default_factory=dict)


def size_distances(
    network: SiameseNetwork, embeddings: torch.Tensor, a: torch.Tensor, b: torch.Tensor, dims: Sequence[int]
) -> dict[int, torch.Tensor]:
    """The pair distances at each size, from the full embeddings.

    Args:
        network: the full-size network (its distance or pair head; the size rule of
            :meth:`~siamkit.network.SiameseNetwork.at_dim` applies to each size).
        embeddings: the full embeddings of the set.
        a: first side of each pair.
        b: second side of each pair.
        dims: the sizes.

    Shapes:
        embeddings (N, D), a (P,), b (P,) -> size -> (P,).

    Returns:
        size -> distances.
    """
    out: dict[int, torch.Tensor] = {}
    for d in dims:
        view = network.at_dim(int(d))
        out[int(d)] = pair_distances_of_embeddings(view, prefix(embeddings, int(d), normalize=network.normalize), a, b)
    return out


def score_sizes(
    network: SiameseNetwork,
    images: torch.Tensor,
    labels: torch.Tensor,
    dims: Sequence[int],
    *,
    max_pairs: int = 500_000,
    seed: int = 0,
    n_way: Sequence[int] = (5, 20),
    k_shot: int = 1,
    episodes: int = 1000,
    embeddings: torch.Tensor | None = None,
) -> SizeScores:
    """ROC AUC, EER and few-shot accuracy of a labelled set at each embedding size.

    Args:
        network: the full-size model.
        images: the set (embedded once, with the model's test-time augmentation).
        labels: the class of every image.
        dims: the sizes (each one the model takes).
        max_pairs: pairs scored at most (the same pairs at every size).
        seed: seeds the pairs and the episodes (the same episodes at every size).
        n_way: the N of the episodes (those larger than the classes with ``k_shot + 1``
            images are skipped).
        k_shot: supports per class.
        episodes: episodes per N.
        embeddings: the set's full embeddings, when already computed.

    Shapes:
        images (N, ...), labels (N,).

    Returns:
        :class:`SizeScores`.

    Raises:
        EmbeddingSizeError: a size the model does not take.
    """
    dims = [int(d) for d in dims]
    for d in dims:
        network.at_dim(d)  # refuse a bad size before any work
    e = embed_all(network, images) if embeddings is None else embeddings
    labels = torch.as_tensor(labels).long()
    a, b, same = sample_all_pairs(labels, max_pairs, torch.Generator().manual_seed(seed))
    dist = size_distances(network, e, a, b, dims)
    eligible = int((torch.bincount(labels) >= k_shot + 1).sum())
    ways = [n for n in n_way if 2 <= n <= eligible]
    rows = []
    for d in dims:
        v = verification_metrics(dist[d], same)
        row: dict[str, Any] = {"dim": d, "roc_auc": v.roc_auc, "eer": v.eer}
        e_d = prefix(e, d, normalize=network.normalize)
        metric = network.distance if network.pair_head is None else "l1"
        for n in ways:
            acc, ci = n_way_k_shot_accuracy(e_d, labels, n_way=n, k_shot=k_shot, episodes=episodes, seed=seed, distance=metric)
            row[f"{n}_way_{k_shot}_shot"] = {"accuracy": acc, "ci95": ci}
        rows.append(row)
    split = {"images": int(labels.numel()), "classes": int(torch.unique(labels).numel()), "pairs": int(same.numel()),
             "seed": seed, "episodes": {"n_way": ways, "k_shot": k_shot, "episodes": episodes},
             "note": "one embedding pass; every size is a prefix of it, scored on the same pairs and episodes"}
    return SizeScores(dims, dist, same, rows, split)


def sizes_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`score_sizes`' rows (one line per size).

    Args:
        rows: the rows (``dim``, ``roc_auc``, ``eer``, the episode keys, optional
            ``accuracy_at_threshold``).

    Returns:
        The table text.
    """
    if not rows:
        return ""
    shots = [k for k in rows[0] if k.endswith("_shot")]
    cal = any("accuracy_at_threshold" in r for r in rows)
    head = ["dims", "ROC AUC", "EER"] + [k.replace("_", " ") for k in shots] + (["accuracy at threshold"] if cal else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["dim"]), f"{r['roc_auc']:.4f}", f"{r['eer']:.4f}"]
        cells += [f"{r[k]['accuracy']:.4f} ± {r[k]['ci95']:.4f}" for k in shots]
        if cal:
            t = r.get("accuracy_at_threshold")
            cells.append("-" if t is None else f"{t:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
