"""Evaluation protocols on data: which pairs are scored, and the raw-pixel baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.images import ImageFolderDataset, to_float
from ..data.pairs import PairCSVDataset
from ..distances import EuclideanDistance
from ..inference import embed_all, pair_distances_of_embeddings
from ..network import SiameseNetwork
from ..errors import DataError
from ..tuples import sample_all_pairs
from .few_shot import n_way_k_shot_accuracy, official_one_shot_accuracy
from .retrieval import retrieval_metrics

__all__ = ["RETRIEVAL_QUERIES", "RawPixelRows", "ScoredPairs", "score_folder", "score_pair_csv", "raw_pair_distances", "score_one_shot_runs"]

#: values of the raw-pixel rows held at once by :func:`raw_pair_distances` (2 sides x
#: 4 bytes: 64 MB), whatever the number of pairs
RAW_CHUNK_VALUES = 1 << 23

#: queries of the retrieval metrics by default (a seeded subsample beyond it; every image
#: is still a reference): 10,000 queries x 100,000 images is 1e9 distances
RETRIEVAL_QUERIES = 10_000


@dataclass
class ScoredPairs:
    """Pairs scored by a model (and by raw pixels, the baseline) on one split.

    Attributes:
        distances: (P,) model distances, lower = closer.
        same: (P,) bool.
        baseline: (P,) raw-pixel Euclidean distances of the same pairs; None when not
            computed (``baseline=False``).
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


def raw_pair_distances(images: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, chunk_values: int = RAW_CHUNK_VALUES) -> torch.Tensor:
    """Euclidean distances of the raw pixels (floats in [0, 1]) of index pairs, a chunk of
    pairs at a time: memory O(chunk_values), not O(pairs x pixels).

    Args:
        images: the image set (uint8 or float).
        a: first side of each pair.
        b: second side of each pair.
        chunk_values: pixel values (per side) converted at once.

    Shapes:
        images (N, ...), a (P,), b (P,) -> (P,).

    Returns:
        The distances, float32.
    """
    per = max(1, chunk_values // max(1, int(images[0].numel()) if len(images) else 1))
    dist = EuclideanDistance()
    # one output tensor written in place: small per-chunk results allocated between the
    # large temporaries would pin the heap, and the peak would grow with every chunk
    out = torch.empty(a.numel(), dtype=torch.float32)
    with torch.no_grad():
        for s in range(0, a.numel(), per):
            out[s : s + per] = dist.paired(_raw(images[a[s : s + per]]), _raw(images[b[s : s + per]]))
    return out


def score_folder(
    network: SiameseNetwork,
    ds: ImageFolderDataset,
    *,
    max_pairs: int = 500_000,
    seed: int = 0,
    one_shot: bool = True,
    baseline: bool = True,
    n_way: Sequence[int] | None = None,
    k_shot: int = 1,
    retrieval_queries: int | None = RETRIEVAL_QUERIES,
) -> ScoredPairs:
    """All pairs i < j of a labelled image set (a seeded random subset beyond max_pairs,
    keeping every genuine pair when they fit in half), plus N-way K-shot accuracy and
    retrieval metrics. Memory is O(N + max_pairs), whatever N.

    Args:
        network: the model to score.
        ds: the labelled images.
        max_pairs: at most this many pairs.
        seed: seeds the pair subset and the one-shot episodes.
        one_shot: also measure few-shot accuracy and retrieval.
        baseline: also score raw pixels (pairs and episodes); False computes nothing of it.
        n_way: the N of the N-way episodes; None = 5 and 20, each when there are enough
            classes. Given values must each fit (classes with >= k_shot + 1 images).
        k_shot: supports per class in an episode.
        retrieval_queries: the retrieval metrics' queries at most (a seeded subsample of
            the images beyond it, each ranked against all of them); None or 0 = all.

    Returns:
        :class:`ScoredPairs` with the embeddings, labels and the protocol numbers; its
        ``split`` says what every number was computed on.

    Raises:
        DataError: an ``n_way`` larger than the classes with ``k_shot + 1`` images.
    """
    e = embed_all(network, ds.images)
    a, b, same = sample_all_pairs(ds.labels, max_pairs, torch.Generator().manual_seed(seed))
    d = pair_distances_of_embeddings(network, e, a, b)
    base = raw_pair_distances(ds.images, a, b) if baseline else None
    n_classes = int(torch.unique(ds.labels).numel())
    counts = torch.bincount(ds.labels)
    eligible = int((counts >= k_shot + 1).sum())
    if n_way is not None:
        too_many = [n for n in n_way if n > eligible or n < 2]
        if too_many:
            raise DataError(
                f"--n-way {too_many[0]} with --k-shot {k_shot}: the data has {eligible} classes with "
                f">= {k_shot + 1} images (N must be 2..{eligible})"
            )
    ways = [n for n in (n_way if n_way is not None else (5, 20)) if n <= eligible]
    extra: dict[str, Any] = {}
    if one_shot:
        extra = _few_shot_and_retrieval(network, ds, e, ways, k_shot, seed, baseline, retrieval_queries)
    split = {"protocol": "all pairs of a labelled folder", "images": len(ds), "classes": n_classes,
             "pairs": int(same.numel()), "max_pairs": max_pairs, "seed": seed,
             "baseline": "raw pixels, the same pairs and episodes" if baseline else "not computed (--no-baseline)",
             "every number from": "this one folder: the pairs, the episodes and retrieval all use its images"}
    if one_shot:
        split["episodes"] = {"n_way": ways, "k_shot": k_shot, "queries_per_class": 1, "episodes": 1000}
    return ScoredPairs(d, same, base, e, ds.labels, extra, split)


class RawPixelRows:
    """The raw-pixel "embeddings" of an image set (floats in [0, 1], flattened), made only
    for the rows asked: ``rows[idx]`` converts those images, so the raw baseline of the
    few-shot episodes never holds a float copy of the whole set (100,000 x 28 x 28 would be
    313 MB).

    Args:
        images: the image set (uint8 or float).
    """

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.shape = (int(images.shape[0]), int(images[0].numel()) if len(images) else 0)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        return _raw(self.images[idx])


def _few_shot_and_retrieval(
    network: SiameseNetwork, ds: ImageFolderDataset, e: torch.Tensor, ways: list[int], k_shot: int, seed: int, baseline: bool,
    retrieval_queries: int | None = RETRIEVAL_QUERIES,
) -> dict[str, Any]:
    """N-way K-shot accuracy for each N (and raw pixels' when ``baseline``), and retrieval."""
    extra: dict[str, Any] = {}
    dist = network.distance if network.pair_head is None else "l1"
    raw = RawPixelRows(ds.images) if baseline and ways else None
    for n in ways:
        acc, ci = n_way_k_shot_accuracy(e, ds.labels, n_way=n, k_shot=k_shot, episodes=1000, seed=seed, distance=dist)
        row: dict[str, Any] = {"accuracy": acc, "ci95": ci}
        if raw is not None:
            row["baseline_accuracy"] = n_way_k_shot_accuracy(raw, ds.labels, n_way=n, k_shot=k_shot, episodes=1000, seed=seed)[0]
        extra[f"{n}_way_{k_shot}_shot"] = row
    if int((torch.bincount(ds.labels) >= 2).sum()) >= 2:
        n = int(e.shape[0])
        sub = None
        if retrieval_queries and n > retrieval_queries:
            sub = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:retrieval_queries]
        r = retrieval_metrics(e, ds.labels, distance=network.distance, query_rows=sub)
        extra["retrieval"] = {k: r[k] for k in ("precision_at_1", "r_precision", "map_at_r")}
        extra["retrieval"]["queries"] = (f"all {n} images" if sub is None else
                                         f"{int(sub.numel())} of the {n} images (seeded subsample), each ranked against all {n}")
    return extra


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
    base = raw_pair_distances(pairs.images, pairs.a, pairs.b) if baseline else None
    split = {"protocol": "pairs from a CSV file", "pairs": len(pairs), "images": int(pairs.images.shape[0]),
             "baseline": "raw pixels, the same pairs" if baseline else "not computed (--no-baseline)"}
    return ScoredPairs(d, pairs.same, base, split=split)


def score_one_shot_runs(network: SiameseNetwork, runs_dir: str | Path, *, baseline: bool = True) -> dict[str, Any]:
    """Lake et al.'s official 20-way one-shot runs (``one_shot_runs/runNN``), read with the
    model's input recipe and embedded with its test-time augmentation (``embed_all``).

    Args:
        network: the model.
        runs_dir: the folder of runs (:func:`siamkit.data.load_official_one_shot_runs`).
        baseline: also score raw pixels on the same runs.

    Returns:
        ``accuracy`` over all queries, ``ci95`` (1.96 standard errors of the per-run
        accuracies), ``per_run_accuracy``, ``error_rate`` (percent, Lake et al.'s),
        ``runs``, ``queries``, ``tta`` and, with ``baseline``, ``baseline_accuracy``.
    """
    from ..data.omniglot import load_official_one_shot_runs

    spec = network.input_spec
    runs = load_official_one_shot_runs(runs_dir, image_size=spec.image_size, channels=int(spec.channels or 1),
                                       preprocess=spec.preprocessor())
    dist = network.distance if network.pair_head is None else "l1"
    r = official_one_shot_accuracy(lambda x: embed_all(network, x), runs, distance=dist)
    per = torch.tensor(r.per_run_accuracy, dtype=torch.float64)
    ci = float(1.96 * per.std() / len(runs) ** 0.5) if len(runs) > 1 else float("nan")
    row: dict[str, Any] = {"accuracy": r.accuracy, "ci95": ci, "per_run_accuracy": r.per_run_accuracy,
                           "error_rate": r.error_rate, "runs": len(runs), "queries": int(sum(run.query.shape[0] for run in runs)),
                           "n_way": int(runs[0].support.shape[0]), "tta": spec.tta or "none", "folder": str(Path(runs_dir).resolve())}
    if baseline:
        row["baseline_accuracy"] = official_one_shot_accuracy(_raw, runs, distance="euclidean").accuracy
    return row
