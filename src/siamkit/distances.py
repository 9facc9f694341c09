"""Distances between embeddings.

One convention everywhere in siamkit: a *distance* is "lower = closer"; a *score*
shown to users is "higher = more similar" (see :meth:`BaseDistance.to_score`).

Every distance has two forms:

- ``pairwise(x, y)``: all pairs, ``(N, D) x (M, D) -> (N, M)``
- ``paired(x, y)``: row by row, ``(N, D) x (N, D) -> (N,)``

Both give the same numbers for the same pair (tested), and both have finite
gradients when two embeddings are identical (the Euclidean distance is
differentiated through ``sqrt(max(d2, eps))``).

Example:
    >>> import torch
    >>> from siamkit.distances import EuclideanDistance
    >>> d = EuclideanDistance()
    >>> d.paired(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]))
    tensor([5.])
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BaseDistance",
    "EuclideanDistance",
    "SquaredEuclideanDistance",
    "CosineDistance",
    "L1Distance",
    "get_distance",
    "DISTANCES",
]

_EPS = 1e-12
_REFINE = 1e-2


#: elements per row chunk of a gradient-free :meth:`BaseDistance.paired` (512 kB float32)
_STREAM_ELEMENTS = 1 << 17


def _streamable(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether :meth:`BaseDistance.paired` may stream: many rows of float32 / float64 on
    the CPU, one dtype, and no gradient wanted."""
    if x.shape[0] * x.shape[1] <= 4 * _STREAM_ELEMENTS or x.dtype not in (torch.float32, torch.float64):
        return False
    if x.dtype != y.dtype or x.device.type != "cpu" or y.device.type != "cpu":
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or y.requires_grad))


def _stream_rows(x: torch.Tensor, y: torch.Tensor, op: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]) -> torch.Tensor:
    """Row sums of ``op``'s result, chunk by chunk, through buffers reused for every chunk.

    numpy, not torch, runs the chunks: its element-wise ops are single-threaded, while
    torch's start a parallel region per op, and on a loaded 2-core machine the barriers of
    2 threads cost 8.6 s for 1M x 128-d pairs (0.44 s single-threaded; the one-shot torch
    expression 2.9 s, most of it page faults of its three 512 MB temporaries).

    Args:
        x: embeddings.
        y: embeddings, row by row with ``x``.
        op: ``op(x_chunk, y_chunk, buf, buf2)`` leaves the values to sum in ``buf``.

    Shapes:
        x (N, D), y (N, D) -> (N,).

    Returns:
        The row sums.
    """
    xn, yn = x.detach().numpy(), y.detach().numpy()
    n, dim = xn.shape
    rows = max(1, _STREAM_ELEMENTS // max(1, dim))
    out = np.empty(n, dtype=xn.dtype)
    buf, buf2 = np.empty((rows, dim), dtype=xn.dtype), np.empty((rows, dim), dtype=xn.dtype)
    for i in range(0, n, rows):
        xs, ys = xn[i : i + rows], yn[i : i + rows]
        k = xs.shape[0]
        op(xs, ys, buf[:k], buf2[:k])
        np.sum(buf[:k], axis=1, out=out[i : i + k])
    return torch.from_numpy(out)


def _sq_diff(xs: np.ndarray, ys: np.ndarray, buf: np.ndarray, _buf2: np.ndarray) -> None:
    np.subtract(xs, ys, out=buf)
    np.multiply(buf, buf, out=buf)


def _abs_diff(xs: np.ndarray, ys: np.ndarray, buf: np.ndarray, _buf2: np.ndarray) -> None:
    np.subtract(xs, ys, out=buf)
    np.abs(buf, out=buf)


def _cosine_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` of row pairs in row chunks: three einsum dot products per chunk (x.y,
    x.x, y.y), no temporaries; F.normalize's eps rule (``max(||x||, eps)``)."""
    xn, yn = x.detach().numpy(), y.detach().numpy()
    n, dim = xn.shape
    rows = max(1, _STREAM_ELEMENTS // max(1, dim))
    dot, xx, yy = (np.empty(n, dtype=xn.dtype) for _ in range(3))
    for i in range(0, n, rows):
        xs, ys = xn[i : i + rows], yn[i : i + rows]
        np.einsum("ij,ij->i", xs, ys, out=dot[i : i + rows])
        np.einsum("ij,ij->i", xs, xs, out=xx[i : i + rows])
        np.einsum("ij,ij->i", ys, ys, out=yy[i : i + rows])
    norms = np.maximum(np.sqrt(xx), _EPS) * np.maximum(np.sqrt(yy), _EPS)
    return torch.from_numpy(1.0 - dot / norms)


def _check(x: torch.Tensor, y: torch.Tensor, paired: bool) -> None:
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(
            f"distances take 2-D (N, D) embeddings, got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"embedding sizes differ: {x.shape[1]} and {y.shape[1]} (shapes {tuple(x.shape)}, {tuple(y.shape)})"
        )
    if paired and x.shape[0] != y.shape[0]:
        raise ValueError(
            f"paired distance needs the same number of rows, got {x.shape[0]} and {y.shape[0]}"
        )


class BaseDistance:
    """A distance: lower = closer.

    Subclasses implement ``_pairwise`` and ``_paired``. ``name`` is the key used in
    configs and on the command line.
    """

    name: str = "base"
    #: True when the distance is bounded in [0, 2] (cosine); used for margins' sanity.
    bounded: bool = False
    #: True when the distance is never negative (a calibration threshold below 0 is then
    #: damage, and refused on load); a custom distance that can be negative sets False.
    nonnegative: bool = True

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """All-pairs distance matrix, lower = closer.

        Args:
            x: the first set of embeddings.
            y: the second set; None compares ``x`` with itself.

        Shapes:
            x (N, D), y (M, D) or None (then y = x) -> (N, M).

        Returns:
            ``d[i, j]``, the distance from ``x[i]`` to ``y[j]``, with gradients.

        Raises:
            ValueError: ``x`` or ``y`` is not 2-D, or their embedding sizes differ.
        """
        if y is None:
            y = x
        _check(x, y, paired=False)
        return self._pairwise(x, y)

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Row-wise distance, lower = closer.

        Args:
            x: embeddings.
            y: embeddings compared row by row with ``x``.

        Shapes:
            x (N, D), y (N, D) -> (N,).

        Returns:
            ``d[i]``, the distance from ``x[i]`` to ``y[i]``, with gradients.

        Raises:
            ValueError: ``x`` or ``y`` is not 2-D, their embedding sizes differ, or
                their numbers of rows differ.
        """
        _check(x, y, paired=True)
        if _streamable(x, y):
            fast = self._paired_streamed(x, y)
            if fast is not None:
                return fast
        return self._paired(x, y)

    def _paired_streamed(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """:meth:`_paired` without gradients over many rows, in row chunks through reused
        buffers (one pass over memory instead of one per temporary), or None where a
        distance has no such path. Same numbers as :meth:`_paired` (tested)."""
        return None

    def ranking_pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """A matrix with the same ORDER as ``pairwise`` (same argmin/argmax and strict
        comparisons), cheaper to compute: miners use it. Default: ``pairwise`` itself.

        Args:
            x: the first set of embeddings.
            y: the second set; None compares ``x`` with itself.

        Shapes:
            x (N, D), y (M, D) or None (then y = x) -> (N, M).

        Returns:
            Values that rank like the distances (lower = closer) but need not equal them.

        Raises:
            ValueError: ``x`` or ``y`` is not 2-D, or their embedding sizes differ.
        """
        return self.pairwise(x, y)

    def to_score(self, distance: torch.Tensor) -> torch.Tensor:
        """Map a distance to a similarity score in (0, 1], higher = more similar.

        Cosine: ``1 - d/2`` (so identical = 1, opposite = 0); the others:
        ``1 / (1 + d)``. This is a monotone display score, not a probability:
        calibrated probabilities come from a fitted calibrator.
        """
        return 1.0 / (1.0 + distance)

    def _pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SquaredEuclideanDistance(BaseDistance):
    """``||x - y||^2``."""

    name = "sqeuclidean"

    def _pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # ||x||^2 + ||y||^2 - 2 x.y : O(N*M) memory, never O(N*M*D). The expansion
        # cancels catastrophically for near-identical rows (float32: d ~ 3e-4 |x| for
        # identical rows), so pairs closer than 1% of their squared norms are recomputed
        # exactly as sum((x_i - y_j)^2), with gradients.
        xx = (x * x).sum(1, keepdim=True)
        yy = (y * y).sum(1, keepdim=True).T
        norms = xx + yy
        d2 = (norms - 2.0 * (x @ y.T)).clamp_min(0.0)
        with torch.no_grad():
            close = d2 < _REFINE * norms
            n_close = int(close.sum())
        if n_close == 0:
            return d2
        if n_close > 16 * (x.shape[0] + y.shape[0]):
            # many near-duplicates: one float64 pass is cheaper than a gather
            x64, y64 = x.double(), y.double()
            d64 = (x64 * x64).sum(1, keepdim=True) + (y64 * y64).sum(1, keepdim=True).T - 2.0 * (x64 @ y64.T)
            return d64.clamp_min(0.0).to(x.dtype)
        i, j = close.nonzero(as_tuple=True)
        exact = ((x[i] - y[j]) ** 2).sum(1)
        return d2.index_put((i, j), exact)

    def _paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x - y) ** 2).sum(1)

    def _paired_streamed(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        return _stream_rows(x, y, _sq_diff)


def _sqrt_d2(d2: torch.Tensor) -> torch.Tensor:
    d = torch.sqrt(d2.clamp_min(_EPS))
    return torch.where(d2 <= _EPS, d2 * 0.0, d)


class EuclideanDistance(SquaredEuclideanDistance):
    """``||x - y||_2``, with a finite gradient at x == y."""

    name = "euclidean"

    def ranking_pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Squared distances, which rank like :meth:`pairwise` without its square root.

        See :meth:`BaseDistance.ranking_pairwise`.

        Args:
            x: the first set of embeddings.
            y: the second set; None compares ``x`` with itself.

        Shapes:
            x (N, D), y (M, D) or None (then y = x) -> (N, M).

        Returns:
            ``||x_i||^2 + ||y_j||^2 - 2 x_i . y_j`` (lower = closer), neither clamped
            nor refined: near-identical rows may come out slightly negative, and rank
            like :meth:`pairwise` only up to rounding.

        Raises:
            ValueError: ``x`` or ``y`` is not 2-D, or their embedding sizes differ.
        """
        # sqrt is monotone: squared distances rank the same, without the sqrt pass;
        # addmm fuses the cross term into one pass (mining only: no gradient flows here)
        if y is None:
            y = x
        _check(x, y, paired=False)
        xx = (x * x).sum(1, keepdim=True)
        yy = (y * y).sum(1, keepdim=True).T
        return torch.addmm(xx + yy, x, y.T, alpha=-2.0)

    def _pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d2 = super()._pairwise(x, y)
        d = torch.sqrt(d2.clamp_min(_EPS))
        # exact zeros where the clamp acted, so identical rows give distance 0
        return torch.where(d2 <= _EPS, d2 * 0.0, d)

    def _paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _sqrt_d2(super()._paired(x, y))

    def _paired_streamed(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        return _sqrt_d2(_stream_rows(x, y, _sq_diff))


class CosineDistance(BaseDistance):
    """``1 - cos(x, y)`` in [0, 2]."""

    name = "cosine"
    bounded = True

    def _pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.normalize(x, dim=1, eps=_EPS) @ F.normalize(y, dim=1, eps=_EPS).T

    def _paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1.0 - (F.normalize(x, dim=1, eps=_EPS) * F.normalize(y, dim=1, eps=_EPS)).sum(1)

    def _paired_streamed(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        return _cosine_rows(x, y)

    def to_score(self, distance: torch.Tensor) -> torch.Tensor:
        return 1.0 - distance / 2.0


class L1Distance(BaseDistance):
    """``sum |x - y|`` (Manhattan; the component-wise form feeds Koch's pair head)."""

    name = "l1"

    def _pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # chunk over rows so memory is O(chunk * M * D), bounded, not O(N * M * D)
        n, m, dim = x.shape[0], y.shape[0], x.shape[1]
        chunk = max(1, int(2**24 // max(1, m * dim)))
        if chunk >= n:
            return torch.cdist(x, y, p=1.0) if x.is_floating_point() else (x[:, None] - y[None]).abs().sum(-1)
        return torch.cat([torch.cdist(x[i : i + chunk], y, p=1.0) for i in range(0, n, chunk)])

    def _paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().sum(1)

    def _paired_streamed(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        return _stream_rows(x, y, _abs_diff)


DISTANCES: dict[str, type[BaseDistance]] = {
    cls.name: cls
    for cls in (EuclideanDistance, SquaredEuclideanDistance, CosineDistance, L1Distance)
}


def get_distance(distance: str | BaseDistance) -> BaseDistance:
    """Return a distance object from its name (``euclidean``, ``sqeuclidean``, ``cosine``, ``l1``)."""
    if isinstance(distance, BaseDistance):
        return distance
    try:
        return DISTANCES[distance]()
    except KeyError:
        raise ValueError(
            f"unknown distance {distance!r}; choose one of {sorted(DISTANCES)}"
        ) from None
