"""The inner loops of hard-triplet mining over rows of anchors x candidates, shared by
:class:`~siamkit.miners.BatchHardMiner`, :class:`~siamkit.miners.SemiHardMiner` (square,
batch x batch) and :mod:`siamkit.memory` (batch x (batch + memory)).

Two observations make them cheap (profiled: the masks and masked copies of the (N, N)
matrix, and torch's non-vectorised ``argmax``, took most of batch-hard's time):

- **Positives are few** (an m-per-class batch: m - 1 per anchor; with a memory, a few
  more), so they are listed sparsely from the labels sorted once (:func:`same_class_entries`),
  never as an (N, N) boolean mask: the hardest positive is a scatter-max over the listed
  entries, and the negatives are "everything else", the listed entries set to +inf in
  place before one row ``argmin``.
- **Row decisions ignore a per-row constant**: the hardest positive / negative and the
  semi-hard comparisons ``d(a, n) > d(a, p)`` are decided within an anchor's row, so the
  squared Euclidean ranking drops the anchor's ``||x||^2`` term (:func:`row_ranking`):
  ``||y||^2 - 2 x . y``, one ``addmm`` with a broadcast bias, no (N, N) addition.
"""

from __future__ import annotations

import torch

from .distances import BaseDistance, CosineDistance, SquaredEuclideanDistance

__all__ = ["row_ranking", "same_class_entries", "batch_hard_rows", "semi_hard_rows"]


def row_ranking(rows: torch.Tensor, candidates: torch.Tensor, distance: BaseDistance, cand_sq: torch.Tensor | None = None) -> torch.Tensor:
    """A matrix that orders every ROW like ``distance`` (lower = closer), for row-wise
    decisions only (values of different rows are not comparable).

    Args:
        rows: the anchors.
        candidates: the candidates.
        distance: the miner's distance.
        cand_sq: ``||candidates||^2`` per candidate (squared Euclidean only; computed
            when None).

    Shapes:
        rows (R, D), candidates (N, D), cand_sq (N,) -> (R, N).

    Returns:
        Squared Euclidean (and Euclidean): ``||y||^2 - 2 x . y``; cosine: ``-cos``
        (normalised rows); other distances: ``distance.ranking_pairwise``.
    """
    if isinstance(distance, SquaredEuclideanDistance):
        sq = (candidates * candidates).sum(1) if cand_sq is None else cand_sq
        return torch.addmm(sq.expand(rows.shape[0], -1), rows, candidates.T, alpha=-2.0)
    if isinstance(distance, CosineDistance):
        n = torch.nn.functional.normalize
        return -(n(rows, dim=1, eps=1e-12) @ n(candidates, dim=1, eps=1e-12).T)
    return distance.ranking_pairwise(rows, candidates)


def same_class_entries(
    labels: torch.Tensor, r0: int, r1: int, order: torch.Tensor, sorted_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (anchor, candidate) entry of the same class for the anchors ``r0 .. r1 - 1``
    (the anchor itself included: anchors are the candidates' first rows).

    Args:
        labels: every candidate's class (the anchors are candidates r0 .. r1 - 1).
        r0: the block's first anchor.
        r1: one past its last anchor.
        order: ``argsort(labels, stable=True)``.
        sorted_labels: ``labels[order]``.

    Shapes:
        labels (N,), order (N,), sorted_labels (N,) -> rows (S,), cols (S,), counts (r1 - r0,).

    Returns:
        ``(rows, cols, counts)``: block row and candidate column of every same-class
        entry, row-major and by column within a row; ``counts``: same-class candidates
        per anchor (itself included).
    """
    y = labels[r0:r1]
    start = torch.searchsorted(sorted_labels, y, side="left")
    counts = torch.searchsorted(sorted_labels, y, side="right") - start
    rows = torch.repeat_interleave(torch.arange(y.numel(), device=y.device), counts)
    first = torch.cumsum(counts, 0) - counts
    offsets = torch.arange(rows.numel(), device=y.device) - first[rows]
    return rows, order[start[rows] + offsets], counts


def batch_hard_rows(
    d: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, counts: torch.Tensor, r0: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per anchor row: the farthest positive and the closest negative (first index on
    ties, like ``argmax`` / ``argmin``); ``d`` is overwritten.

    Args:
        d: the block's row ranking (:func:`row_ranking`), consumed.
        rows: block row of every same-class entry (:func:`same_class_entries`).
        cols: its candidate column.
        counts: same-class candidates per anchor, itself included.
        r0: the block's first anchor (the anchor of row i is candidate r0 + i).

    Shapes:
        d (R, N), rows (S,), cols (S,), counts (R,) -> three (T,) with T <= R.

    Returns:
        ``(anchor, positive, negative)`` candidate indices of the anchors with a
        positive and a negative.
    """
    r, n = d.shape
    d.nan_to_num_(nan=float("inf"))  # NaN embeddings: still valid indices; the loss stays NaN and training stops
    is_self = cols == rows + r0
    vals = d[rows, cols].masked_fill_(is_self, float("-inf"))
    best = torch.full((r,), float("-inf"), dtype=d.dtype, device=d.device).scatter_reduce_(0, rows, vals, "amax")
    pick = torch.where((vals == best[rows]) & ~is_self, cols, torch.full_like(cols, n))
    p = torch.full((r,), n, dtype=cols.dtype, device=d.device).scatter_reduce_(0, rows, pick, "amin")
    d.index_put_((rows, cols), torch.tensor(float("inf"), dtype=d.dtype, device=d.device))
    neg = d.argmin(1)
    a = ((counts > 1) & (counts < n)).nonzero(as_tuple=True)[0]
    return a + r0, p[a], neg[a]


def semi_hard_rows(
    d: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, counts: torch.Tensor, r0: int, group_elements: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FaceNet's semi-hard rule (TensorFlow Addons'): per (anchor, positive), the closest
    negative farther than the positive, else the farthest negative; ``d`` is overwritten.

    Args:
        d: the block's row ranking (:func:`row_ranking`), consumed.
        rows: block row of every same-class entry (:func:`same_class_entries`).
        cols: its candidate column.
        counts: same-class candidates per anchor, itself included.
        r0: the block's first anchor.
        group_elements: values per masked row minimum (pairs are taken in groups).

    Shapes:
        d (R, N), rows (S,), cols (S,), counts (R,) -> three (P,).

    Returns:
        ``(anchor, positive, negative)`` candidate indices, one triplet per ordered
        (anchor, positive) pair of the anchors with a negative, row-major.
    """
    n = d.shape[1]
    keep = (cols != rows + r0) & (counts < n)[rows]
    d_ap = d[rows, cols]
    a, p, d_ap = rows[keep], cols[keep], d_ap[keep]
    d.index_put_((rows, cols), torch.tensor(float("-inf"), dtype=d.dtype, device=d.device))
    farthest = d.argmax(1)
    inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
    d.index_put_((rows, cols), inf)  # same-class entries never qualify as negatives
    chosen = torch.empty_like(a)
    group = max(1, group_elements // max(1, n))
    for s in range(0, a.numel(), group):
        aa = a[s : s + group]
        cand = d[aa]
        val, idx = torch.where(cand > d_ap[s : s + group, None], cand, inf).min(1)
        chosen[s : s + group] = torch.where(torch.isinf(val), farthest[aa], idx)
    return a + r0, p, chosen
