"""The ROC count curve every threshold metric derives from, and the checks of
``(distances, same)`` pair data (distances: lower = closer; same: True = genuine).

:mod:`siamkit.evaluation.verification` (EER, TAR@FAR, reports) and
:class:`siamkit.calibration.Calibrator` (thresholds) both build on these, so a threshold
the calibrator fits and the metric the report prints come from the same counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DataError

__all__ = ["ArrayLike", "to_numpy", "as_distances", "as_pairs", "count_curve", "gap_midpoint", "eer_from_counts"]

ArrayLike = Any  # numpy array, torch tensor or a sequence of numbers


def to_numpy(x: ArrayLike) -> np.ndarray:
    """A numpy view/copy of an array, tensor or sequence: a tensor is detached and moved
    to the CPU, and 16-bit floats (which numpy lacks or mishandles) become float32."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def as_distances(distances: ArrayLike, *, name: str = "distances") -> np.ndarray:
    """float64 copy of ``distances``; DataError on NaN / infinity / non-numbers.

    Args:
        distances: numbers (array, tensor or sequence), lower = closer.
        name: how messages name them.

    Returns:
        The float64 array, same shape.

    Raises:
        DataError: not real numbers, NaN or infinite values.
    """
    d = to_numpy(distances)
    if d.dtype == bool or not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise DataError(f"{name} must be real numbers, got dtype {d.dtype}")
    d = d.astype(np.float64)
    n_nan = int(np.isnan(d).sum())
    if n_nan:
        raise DataError(f"{name} contain NaN ({n_nan} of {d.size} values)")
    n_inf = int(np.isinf(d).sum())
    if n_inf:
        raise DataError(f"{name} contain infinity ({n_inf} of {d.size} values); distances must be finite")
    return d


def as_pairs(distances: ArrayLike, same: ArrayLike, *, need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(distances, same)`` and return ``(float64 (P,), bool (P,))``.

    Args:
        distances: one distance per pair, lower = closer.
        same: one flag per pair, True = same class.
        need_both: require genuine and impostor pairs.

    Returns:
        ``(distances float64 (P,), same bool (P,))``.

    Raises:
        DataError: shapes differ or are not 1-D, no pairs, ``same`` is not boolean
            (0/1 integers are accepted), distances not finite, or (``need_both``) only
            one class is present.
    """
    d_raw = to_numpy(distances)
    s = to_numpy(same)
    if d_raw.ndim != 1 or s.ndim != 1 or d_raw.shape != s.shape:
        raise DataError(
            f"distances and same must be 1-D with equal shapes, got {tuple(d_raw.shape)} and {tuple(s.shape)}"
        )
    if d_raw.size == 0:
        raise DataError("no pairs: distances and same are empty")
    if s.dtype != bool:
        if not (np.issubdtype(s.dtype, np.integer) or np.issubdtype(s.dtype, np.floating)):
            raise DataError(f"same must be boolean, got dtype {s.dtype}")
        bad = ~np.isin(s, (0, 1))
        if bad.any():
            raise DataError(
                f"same must be boolean (or 0/1), got {int(bad.sum())} other values, e.g. {s[bad][0]!r}"
            )
        s = s.astype(bool)
    d = as_distances(d_raw)
    if need_both:
        n_pos = int(s.sum())
        n_neg = int(s.size - n_pos)
        if n_pos == 0 or n_neg == 0:
            raise DataError(
                "verification needs both genuine (same=True) and impostor (same=False) pairs, "
                f"got {n_pos} genuine and {n_neg} impostor"
            )
    return d, s


def count_curve(d: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative counts per distinct distance: ``(thresholds, tp, fp)``, each (K+1,).

    ``thresholds[0] = -inf`` (accept nothing), then the distinct distances in increasing
    order; ``tp[k]`` / ``fp[k]`` are the genuine / impostor pairs with distance <= thresholds[k].

    Args:
        d: validated distances (P,), see :func:`as_pairs`.
        s: validated same flags (P,).

    Returns:
        ``(thresholds float64 (K+1,), tp int64 (K+1,), fp int64 (K+1,))``.
    """
    values, inverse = np.unique(d, return_inverse=True)
    pos = np.bincount(inverse, weights=s, minlength=values.size).astype(np.int64)
    tot = np.bincount(inverse, minlength=values.size).astype(np.int64)
    tp = np.concatenate([[0], np.cumsum(pos)])
    fp = np.concatenate([[0], np.cumsum(tot - pos)])
    return np.concatenate([[-np.inf], values]), tp, fp


def gap_midpoint(thr: np.ndarray, i: int) -> float:
    """Middle of ``[thr[i], thr[i+1])``: all thresholds there give ROC point i on the data.

    Args:
        thr: thresholds of :func:`count_curve`.
        i: a point of the curve.

    Returns:
        The threshold (the last one when ``i`` is the last point).
    """
    if i + 1 < thr.size:
        return float((thr[i] + thr[i + 1]) / 2.0)
    return float(thr[i])


def eer_from_counts(thr: np.ndarray, tp: np.ndarray, fp: np.ndarray) -> tuple[float, float]:
    """Equal error rate of a :func:`count_curve`, interpolated between the two ROC points
    where FPR - FNR changes sign (exact integer arithmetic for the sign).

    Args:
        thr: thresholds of :func:`count_curve`.
        tp: cumulative genuine counts.
        fp: cumulative impostor counts.

    Returns:
        ``(eer, threshold)``: the rate and a distance threshold at it.
    """
    n_pos, n_neg = int(tp[-1]), int(fp[-1])
    fn = n_pos - tp
    # sign of FPR - FNR in exact integers: fp/n_neg - fn/n_pos ~ fp*n_pos - fn*n_neg
    diff = fp * n_pos - fn * n_neg  # < 0 at the first point, > 0 at the last; non-decreasing
    i = int(np.argmax(diff >= 0))
    if diff[i] == 0:
        # the ROC passes exactly through FPR == FNR at point i
        return float(fp[i] / n_neg), gap_midpoint(thr, i)
    j = i - 1  # diff[j] < 0 < diff[i]
    alpha = float(-diff[j]) / float(diff[i] - diff[j])
    fpr_j, fpr_i = fp[j] / n_neg, fp[i] / n_neg
    eer = float(fpr_j + alpha * (fpr_i - fpr_j))
    if j == 0:  # thr[0] is -inf (accept nothing): no distance to interpolate from
        return eer, float(thr[i])
    return eer, float(thr[j] + alpha * (thr[i] - thr[j]))
