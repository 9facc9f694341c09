"""The anomaly detector's exact k-NN: gallery search for candidates, float64 for the distances.

The candidates come from :mod:`siamkit.gallery.search`: a flat (exact) :class:`FaissIndex`
for euclidean and sqeuclidean (metric ``"l2"``) and cosine (metric ``"cosine"``); an
:class:`ExactIndex` with the float64 L1 distance of :mod:`siamkit.distances` for l1,
which no vector index serves. The index returns a few more candidates than needed, whose
distances are then recomputed exactly in float64 (FAISS's float32 expansion
``|x|^2 + |y|^2 - 2 x.y`` loses precision for near-identical rows).

Leave-one-out (the references scored against themselves): one more candidate is
searched and each reference's own row is dropped; identical *other* rows still count.

Example:
    >>> import numpy as np
    >>> from siamkit.anomaly.knn import knn_distances
    >>> refs = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=np.float32)
    >>> knn_distances(refs, refs, 1, leave_one_out=True)[:, 0].tolist()
    [1.0, 1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..distances import DISTANCES, BaseDistance, L1Distance, get_distance
from ..errors import AnomalyError, DataError
from ..evaluation.curve import to_numpy
from ..gallery.search import ExactIndex, FaissIndex

__all__ = [
    "REDUCTIONS",
    "as_embeddings",
    "check_k",
    "distance_name",
    "knn_distances",
    "reduce_distances",
]

REDUCTIONS = ("mean", "max", "kth", "median")
#: the gallery-search metric whose ranking each distance shares (None: exact L1 search)
_INDEX_METRIC: dict[str, str | None] = {"euclidean": "l2", "sqeuclidean": "l2", "cosine": "cosine", "l1": None}
_EPS = 1e-12  # as siamkit.distances: cosine of a zero vector is 0
_CHUNK = 1 << 22  # float64 values per chunk in the exact recomputation (32 MB)


# --------------------------------------------------------------------------- input checks


def as_embeddings(x: Any, *, name: str, dim: int | None = None, allow_empty: bool = False) -> np.ndarray:
    """Check a batch of embeddings.

    Args:
        x: the embeddings (numpy array, torch tensor or nested sequence).
        name: how the messages name them (e.g. ``"references"``).
        dim: the required dimension, or None.
        allow_empty: accept zero rows.

    Shapes:
        (N, D) -> C-contiguous float32 (N, D).

    Returns:
        The embeddings as float32.

    Raises:
        DataError: a bad shape, dtype, dimension or emptiness, or NaN / infinite values.
    """
    a = to_numpy(x)
    if a.dtype == bool or a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DataError(f"{name} must be real numbers, got dtype {a.dtype}")
    if a.ndim != 2:
        raise DataError(f"{name} must be a 2-D (N, D) array of embeddings, got shape {tuple(a.shape)}")
    if a.shape[1] == 0:
        raise DataError(f"{name} have dimension 0 (shape {tuple(a.shape)})")
    if a.shape[0] == 0 and not allow_empty:
        raise DataError(f"{name} are empty (shape {tuple(a.shape)})")
    if dim is not None and a.shape[1] != dim:
        raise DataError(f"{name} have dimension {a.shape[1]}, but the detector's references have dimension {dim}")
    out = np.ascontiguousarray(a, dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        kind = "NaN" if np.isnan(out).any() else "infinite values"
        raise DataError(f"{name} contain {kind} in {rows.size} of {out.shape[0]} rows (first: row {int(rows[0])})")
    return out


def distance_name(distance: str | BaseDistance) -> str:
    """The name of a distance the detector supports (euclidean, sqeuclidean, cosine, l1).

    Raises:
        AnomalyError: an unknown or unsupported distance.
    """
    try:
        name = get_distance(distance).name
    except ValueError as e:
        raise AnomalyError(str(e)) from None
    if name not in DISTANCES:
        raise AnomalyError(f"distance {name!r} is not supported by the anomaly detector; choose one of {sorted(DISTANCES)}")
    return name


def check_k(k: Any, n_refs: int, *, loo: bool) -> int:
    """Check the number of neighbours against the number of references.

    Args:
        k: neighbours per query.
        n_refs: the number of references.
        loo: leave-one-out scores, which need ``k + 1`` references.

    Returns:
        ``k`` as an int.

    Raises:
        AnomalyError: k is not a positive integer, or there are too few references.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise AnomalyError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    need = k + 1 if loo else k
    if n_refs < need:
        if loo:
            raise AnomalyError(
                f"k={k} needs at least {need} normal references for leave-one-out scores (each reference's "
                f"k nearest *other* references), got {n_refs}; lower k or add references"
            )
        raise AnomalyError(f"k={k} is larger than the number of normal references ({n_refs}); lower k or add references")
    return k


def reduce_distances(d: np.ndarray, reduction: str) -> np.ndarray:
    """One anomaly score per row of sorted neighbour distances.

    Args:
        d: each row the increasing distances to the k nearest references.
        reduction: ``"mean"``, ``"median"``, or ``"max"`` / ``"kth"`` (the k-th distance).

    Shapes:
        (N, k) -> (N,) float64.

    Returns:
        The scores.
    """
    if reduction == "mean":
        return d.mean(axis=1)
    if reduction in ("max", "kth"):
        return d[:, -1].copy()
    return np.median(d, axis=1)


# --------------------------------------------------------------------------- k-NN


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as torch's F.normalize."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def _l1_float64(queries: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    return L1Distance().pairwise(queries.double(), vectors.double())


def _candidates(queries: np.ndarray, refs: np.ndarray, kk: int, metric: str) -> np.ndarray:
    """Rows (N, kk) of each query's kk nearest references by the gallery search."""
    index_metric = _INDEX_METRIC[metric]
    index: FaissIndex | ExactIndex
    if index_metric is None:
        index = ExactIndex(distance_fn=_l1_float64, chunk_elems=_CHUNK)
    else:
        index = FaissIndex(kind="flat", metric=index_metric)
    _, rows = index.build(refs).search(queries, kk)
    return np.where(rows < 0, 0, rows)  # never happens with kk <= n; keeps the gather safe


def _exact(queries: np.ndarray, refs: np.ndarray, cand: np.ndarray, k: int, metric: str, loo: bool) -> np.ndarray:
    """The k smallest float64 distances to the candidate rows (self dropped with ``loo``)."""
    refs64 = _unit(refs.astype(np.float64)) if metric == "cosine" else refs.astype(np.float64)
    out = np.empty((queries.shape[0], k), dtype=np.float64)
    rows_per_chunk = max(1, _CHUNK // (cand.shape[1] * refs.shape[1]))
    for s in _chunks(queries.shape[0], rows_per_chunk):
        idx = cand[s]
        q64 = queries[s].astype(np.float64)
        c = refs64[idx]  # (n, kk, D)
        if metric == "cosine":
            d = 1.0 - np.einsum("ckd,cd->ck", c, _unit(q64))
        elif metric == "l1":
            d = np.abs(c - q64[:, None, :]).sum(-1)
        else:
            d = ((c - q64[:, None, :]) ** 2).sum(-1)
            if metric == "euclidean":
                d = np.sqrt(d)
        if loo:  # a reference is never its own neighbour (other, identical rows still count)
            d[idx == np.arange(s.start, s.stop)[:, None]] = np.inf
        out[s] = np.sort(d, axis=1)[:, :k]
    return out


def knn_distances(
    queries: Any, references: Any, k: int, *, distance: str | BaseDistance = "euclidean", leave_one_out: bool = False
) -> np.ndarray:
    """Exact distances (lower = closer) from each query to its k nearest references.

    Args:
        queries: query embeddings; with ``leave_one_out`` they must be the references.
        references: reference embeddings.
        k: neighbours per query (1 <= k <= number of references, minus one with
            ``leave_one_out``).
        distance: euclidean, sqeuclidean, cosine or l1.
        leave_one_out: query i is reference i and is not its own neighbour.

    Shapes:
        queries (N, D), references (M, D) -> (N, k) float64, each row increasing.

    Returns:
        The sorted neighbour distances.
    """
    metric = distance_name(distance)
    refs = as_embeddings(references, name="references")
    q = as_embeddings(queries, name="queries", dim=refs.shape[1], allow_empty=True)
    k = check_k(k, refs.shape[0], loo=leave_one_out)
    if leave_one_out and q.shape[0] != refs.shape[0]:
        raise DataError(f"leave_one_out scores the references themselves: got {q.shape[0]} queries for {refs.shape[0]} references")
    if q.shape[0] == 0:
        return np.zeros((0, k), dtype=np.float64)
    # The index ranks in float32 (FAISS) or exactly (L1); the true k nearest can only be
    # missing from the candidates when more than `extra` others tie with them within
    # float32 rounding, and then the exact score differs by at most that rounding.
    extra = max(8, k)
    kk = min(refs.shape[0], k + extra + (1 if leave_one_out else 0))
    return _exact(q, refs, _candidates(q, refs, kk, metric), k, metric, leave_one_out)
