"""Retrieval metrics: precision@1, R-precision and MAP@R.

Definitions follow Musgrave, Belongie & Lim, "A Metric Learning Reality Check" (ECCV
2020), as in pytorch-metric-learning's ``AccuracyCalculator``. For a query q of class c,
rank the references by distance (lower = closer) and let ``rel(i)`` be 1 when the i-th
nearest reference has class c. With ``R`` = the number of references of class c (the
query itself excluded when the reference set is the query set):

- precision@1   = rel(1)
- R-precision   = (1/R) * sum_{i=1..R} rel(i)
- MAP@R         = (1/R) * sum_{i=1..R} P(i) * rel(i),  P(i) = (1/i) * sum_{j<=i} rel(j)

and each metric is averaged over the queries. Queries whose class has no reference
(R = 0) are skipped and counted.

Ties in distance are broken by reference index (lower index ranks first), so the result
is deterministic; with many exact ties it depends on the order of the references.

Example:
    >>> import torch
    >>> from siamkit.evaluation.retrieval import retrieval_metrics
    >>> emb = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    >>> retrieval_metrics(emb, torch.tensor([0, 0, 1, 1]))["map_at_r"]
    1.0
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..distances import BaseDistance, get_distance
from ..errors import DataError

__all__ = ["retrieval_metrics"]

logger = logging.getLogger(__name__)

#: elements of the (chunk, M) distance matrix held at once
_CHUNK_ELEMENTS = 2**22


def _check_embeddings(x: Any, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise DataError(f"{name} must be 2-D (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"{name} is empty")
    if not x.is_floating_point():
        x = x.double()
    if not torch.isfinite(x).all():
        raise DataError(f"{name} contain NaN or infinity")
    return x


def _check_labels(labels: Any, n: int, name: str, device: torch.device) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() != n:
        raise DataError(f"{name} must have shape ({n},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise DataError(f"{name} must be integer class ids, got dtype {labels.dtype}")
    return labels.to(device=device, dtype=torch.int64)


def _ranked(d: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k nearest columns of each row, ties broken by column index.

    Shapes: d (C, M) -> (C, k).
    """
    vals, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
    # order inside the top k by (distance, index): sort by index, then stably by distance
    order = idx.argsort(dim=1)
    vals, idx = vals.gather(1, order), idx.gather(1, order)
    order = vals.argsort(dim=1, stable=True)
    idx = idx.gather(1, order)
    # rows where the k-th distance is shared with columns left out of the top k: topk may
    # have picked any of the tied columns, so redo those rows with a full stable sort
    kth = vals.gather(1, order[:, -1:])  # (C, 1), the k-th smallest distance
    spill = (d <= kth).sum(1) > k
    if spill.any():
        rows = spill.nonzero(as_tuple=True)[0]
        idx[rows] = d[rows].argsort(dim=1, stable=True)[:, :k]
    return idx


def retrieval_metrics(
    query_emb: torch.Tensor,
    query_labels: torch.Tensor,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    distance: str | BaseDistance = "euclidean",
    exclude_self: bool = True,
    query_rows: torch.Tensor | None = None,
) -> dict[str, float | int]:
    """Precision@1, R-precision and MAP@R of nearest-neighbour retrieval.

    Args:
        query_emb: query embeddings.
        query_labels: integer class of each query.
        ref_emb: reference embeddings; None: the queries are also the references.
        ref_labels: integer class of each reference (given with ``ref_emb``).
        distance: a distance (lower = closer) or its name.
        exclude_self: when the queries are the references (``ref_emb`` is None), leave
            each query out of its own ranking and of its R. Ignored when ``ref_emb`` is
            given (a reference equal to a query then counts like any other).
        query_rows: with ``ref_emb`` None, evaluate only these rows as queries (each
            still ranked against the whole set, itself excluded): a seeded subsample
            keeps the time O(len(query_rows) * N) on a large set. None = every row.

    Shapes:
        query_emb (N, D), query_labels (N,), ref_emb (M, D), ref_labels (M,).
        Memory is O(chunk * M) for the distances plus O(chunk * max R) for the ranking.

    Returns:
        ``{"precision_at_1", "r_precision", "map_at_r"}`` (floats, means over the evaluated
        queries) plus ``"num_queries"`` (evaluated) and ``"num_skipped_queries"`` (queries
        whose class has no reference).

    Raises:
        DataError: bad shapes, non-integer labels, NaN embeddings, only one of
            ``ref_emb`` / ``ref_labels`` given, or no query with a reference of its class.
    """
    dist = get_distance(distance)
    q = _check_embeddings(query_emb, "query_emb")
    q_lab = _check_labels(query_labels, q.shape[0], "query_labels", q.device)
    if (ref_emb is None) != (ref_labels is None):
        raise DataError("give both ref_emb and ref_labels, or neither (then the queries are the references)")
    same_set = ref_emb is None
    if same_set:
        r, r_lab = q, q_lab
    else:
        r = _check_embeddings(ref_emb, "ref_emb").to(device=q.device)
        r_lab = _check_labels(ref_labels, r.shape[0], "ref_labels", q.device)
        if r.shape[1] != q.shape[1]:
            raise DataError(f"query_emb has {q.shape[1]} dimensions but ref_emb has {r.shape[1]}")
        if r.dtype != q.dtype:
            dtype = torch.promote_types(q.dtype, r.dtype)
            q, r = q.to(dtype), r.to(dtype)
    drop_self = same_set and exclude_self
    n, m = q.shape[0], r.shape[0]

    # R for each query: references of its class (minus itself)
    classes, r_inv = torch.unique(r_lab, return_inverse=True)
    per_class = torch.bincount(r_inv, minlength=classes.numel())
    pos = torch.searchsorted(classes, q_lab).clamp_max(classes.numel() - 1)
    big_r = torch.where(classes[pos] == q_lab, per_class[pos], torch.zeros_like(pos))
    if drop_self:
        big_r = big_r - 1
    valid = big_r > 0
    order = torch.arange(n, device=q.device)
    if query_rows is not None:
        if not same_set:
            raise DataError("query_rows selects queries of the reference set itself: give it without ref_emb")
        order = torch.unique(torch.as_tensor(query_rows, dtype=torch.long, device=q.device))
        if order.numel() and (int(order.min()) < 0 or int(order.max()) >= n):
            raise DataError(f"query_rows must index the {n} embeddings")
        valid = valid & torch.zeros(n, dtype=torch.bool, device=q.device).index_fill_(0, order, True)
        n = int(order.numel())
    n_valid = int(valid.sum())
    n_skipped = n - n_valid
    if n_valid == 0:
        raise DataError(
            f"no query has a reference of its own class ({n} queries, {m} references"
            + (", the query itself excluded)" if drop_self else ")")
        )
    if n_skipped:
        logger.info("retrieval: %d of %d queries have no reference of their class and are skipped", n_skipped, n)

    p1_sum = 0.0
    rp_sum = 0.0
    map_sum = 0.0
    chunk = max(1, _CHUNK_ELEMENTS // max(1, m))
    with torch.no_grad():
        for start in range(0, n, chunk):
            rows = order[start : start + chunk]
            keep = valid[rows]
            if not keep.any():
                continue
            rows = rows[keep]
            rr = big_r[rows]  # (C,)
            d = dist.pairwise(q[rows], r)  # (C, M)
            if drop_self:
                d[torch.arange(rows.numel(), device=d.device), rows] = float("inf")
            k = int(rr.max())
            idx = _ranked(d, k)  # (C, k)
            rel = (r_lab[idx] == q_lab[rows, None]).to(torch.float64)  # (C, k)
            ranks = torch.arange(1, k + 1, device=d.device, dtype=torch.float64)
            in_r = ranks[None, :] <= rr[:, None]  # (C, k): positions 1..R
            rel = rel * in_r
            rrf = rr.to(torch.float64)
            p1_sum += float(rel[:, 0].sum())
            rp_sum += float((rel.sum(1) / rrf).sum())
            prec_i = rel.cumsum(1) / ranks[None, :]
            map_sum += float(((prec_i * rel).sum(1) / rrf).sum())

    return {
        "precision_at_1": p1_sum / n_valid,
        "r_precision": rp_sum / n_valid,
        "map_at_r": map_sum / n_valid,
        "num_queries": n_valid,
        "num_skipped_queries": n_skipped,
    }
