"""Exact nearest-neighbour search with torch, and the vector checks every index shares.

:class:`ExactIndex` ranks by brute force: by ``"l2"`` (squared Euclidean) or
``"cosine"`` (``1 - x.y`` on L2-normalised vectors), or, with ``distance_fn``, by any
distance, e.g. the network's own (L1, or a learned pair head, which no vector index can
serve). It answers the same ``search(queries, k) -> (distances, rows)`` as
:class:`~siamkit.gallery.search.FaissIndex`; import both from
:mod:`siamkit.gallery.search`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..errors import GalleryError

__all__ = ["ExactIndex", "METRICS", "as_vectors", "normalize_rows", "check_metric"]

#: the vector metrics: squared Euclidean, and cosine distance on L2-normalised vectors
METRICS = ("l2", "cosine")


def as_vectors(x: Any, what: str = "vectors") -> np.ndarray:
    """Vectors as a contiguous float32 matrix, checked.

    Args:
        x: an array or tensor (N, D).
        what: names them in messages.

    Returns:
        float32 (N, D).

    Raises:
        GalleryError: not 2-D, or NaN / infinite values.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise GalleryError(f"{what} must be 2-D (N, D), got shape {a.shape}")
    if a.size and not np.isfinite(a).all():
        raise GalleryError(f"{what} contain NaN or infinite values")
    return a


def normalize_rows(a: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norms, 1e-12)


def check_metric(metric: str) -> None:
    """Refuse a metric other than :data:`METRICS` (ValueError)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")


class ExactIndex:
    """Brute-force search with torch: exact for any distance.

    Args:
        metric: ``"l2"`` or ``"cosine"`` (ignored when ``distance_fn`` is given).
        distance_fn: ``f(queries (Q, D), vectors (N, D)) -> (Q, N)`` distances, lower =
            closer (e.g. ``lambda q, x: network_pairwise(net, q, x)``).
        chunk_elems: queries are processed in chunks of about this many distances.
    """

    kind = "exact"

    def __init__(
        self,
        *,
        metric: str = "l2",
        distance_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        chunk_elems: int = 1 << 24,
    ) -> None:
        self.metric = metric
        self.distance_fn = distance_fn
        self.chunk_elems = chunk_elems

    def build(self, vectors: Any) -> ExactIndex:
        """Index ``vectors`` (N, D) (replacing any previous content). Returns self."""
        if self.distance_fn is None:
            check_metric(self.metric)
        a = as_vectors(vectors)
        self.dim_ = a.shape[1]
        self.vectors_ = torch.from_numpy(normalize_rows(a) if self._cosine() else a.copy())
        return self

    def _cosine(self) -> bool:
        return self.distance_fn is None and self.metric == "cosine"

    @property
    def ntotal(self) -> int:
        return int(self.vectors_.shape[0]) if hasattr(self, "vectors_") else 0

    def add(self, vectors: Any) -> None:
        """Append vectors (their rows continue after the existing ones)."""
        a = as_vectors(vectors)
        if not hasattr(self, "vectors_"):
            self.build(a)
            return
        if a.shape[1] != self.dim_:
            raise GalleryError(f"vectors have {a.shape[1]} dimensions, the index {self.dim_}")
        self.vectors_ = torch.cat([self.vectors_, torch.from_numpy(normalize_rows(a) if self._cosine() else a)])

    def remove(self, rows: Any) -> None:
        """Remove vectors by row (the remaining rows are renumbered in order)."""
        keep = np.ones(self.ntotal, dtype=bool)
        keep[np.asarray(rows, dtype=np.int64)] = False
        self.vectors_ = self.vectors_[torch.from_numpy(keep)]

    def distances(self, queries: Any) -> torch.Tensor:
        """All distances (Q, N), lower = closer."""
        q = torch.from_numpy(as_vectors(queries, "queries"))
        if q.shape[1] != getattr(self, "dim_", q.shape[1]):
            raise GalleryError(f"queries have {q.shape[1]} dimensions, the index {self.dim_}")
        x = self.vectors_ if hasattr(self, "vectors_") else q.new_zeros(0, q.shape[1])
        if self.distance_fn is not None:
            return self.distance_fn(q, x)
        if self.metric == "cosine":
            return 1.0 - torch.from_numpy(normalize_rows(q.numpy())) @ x.T
        qq = (q * q).sum(1, keepdim=True)
        xx = (x * x).sum(1)[None]
        return (qq + xx - 2.0 * (q @ x.T)).clamp_min_(0.0)

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest vectors of each query.

        Args:
            queries: the query vectors.
            k: neighbours per query.

        Returns:
            (distances, rows), closest first; rows are positions in the order added.

        Shapes: queries (Q, D) -> distances float32 (Q, k), rows int64 (Q, k) (-1 and
        +inf where the index holds fewer than k vectors).
        """
        q = as_vectors(queries, "queries")
        n = self.ntotal
        kk = min(k, n)
        dist = np.full((q.shape[0], k), np.inf, dtype=np.float32)
        rows = np.full((q.shape[0], k), -1, dtype=np.int64)
        if kk == 0 or q.shape[0] == 0:
            return dist, rows
        step = max(1, self.chunk_elems // max(1, n))
        for i in range(0, q.shape[0], step):
            d = self.distances(q[i : i + step])
            v, r = torch.topk(d, kk, dim=1, largest=False, sorted=True)
            dist[i : i + step, :kk] = v.numpy()
            rows[i : i + step, :kk] = r.numpy()
        return dist, rows

    def params(self) -> dict[str, Any]:
        return {"metric": self.metric if self.distance_fn is None else "custom"}
