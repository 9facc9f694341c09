"""Platt scaling of pair distances: ``p(same | d) = sigmoid(a * d + b)``, with smoothed
targets so that separable data stays finite (Platt 1999; Lin, Lin & Weng 2007)."""

from __future__ import annotations

import logging
import math

import numpy as np

__all__ = ["sigmoid", "platt_targets", "platt_fit"]

logger = logging.getLogger(__name__)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def platt_targets(same: np.ndarray) -> np.ndarray:
    """Platt's smoothed targets: (N+ + 1)/(N+ + 2) for genuine, 1/(N- + 2) for impostor."""
    n_pos = int(same.sum())
    n_neg = int(same.size - n_pos)
    return np.where(same, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


def platt_fit(d: np.ndarray, same: np.ndarray, *, max_iter: int = 100) -> tuple[float, float]:
    """Fit ``p(same | d) = sigmoid(a * d + b)`` by Newton's method.

    Follows Platt (1999) as improved by Lin, Lin & Weng (2007): the 0/1 labels are replaced
    by the smoothed targets of :func:`_platt_targets`, which keeps ``a`` and ``b`` finite
    even when the classes are perfectly separated. The distance is standardised for the
    solve and the coefficients mapped back. ``a`` is kept <= 0 (confidence never rises
    with the distance).

    Args:
        d: the pair distances (P,).
        same: True for genuine pairs (P,).
        max_iter: Newton steps at most.

    Returns:
        ``(a, b)``.
    """
    t = platt_targets(same)
    mu = float(d.mean())
    sd = float(d.std())
    prior = float(np.log(t.mean() / (1.0 - t.mean())))
    if not sd > 0.0:
        return 0.0, prior
    z = (d - mu) / sd
    x = np.stack([z, np.ones_like(z)], axis=1)  # (P, 2)
    n_pos = int(same.sum())
    w = np.array([0.0, math.log((n_pos + 1.0) / (same.size - n_pos + 1.0))])

    def loss(w: np.ndarray) -> float:
        f = x @ w
        return float((np.logaddexp(0.0, f) - t * f).sum())

    current = loss(w)
    for _ in range(max_iter):
        p = sigmoid(x @ w)
        grad = x.T @ (p - t)
        if np.abs(grad).max() < 1e-10 * same.size:
            break
        h = (x * (p * (1.0 - p))[:, None]).T @ x + 1e-12 * np.eye(2)
        step = np.linalg.solve(h, grad)
        slope = float(grad @ step)
        size = 1.0
        while size > 1e-10:
            trial = w - size * step
            new = loss(trial)
            if new <= current - 1e-4 * size * slope:
                break
            size /= 2.0
        else:
            break  # no decrease possible: converged to rounding precision
        w, current = trial, new
    a_z, b_z = float(w[0]), float(w[1])
    if a_z > 0.0:
        logger.warning(
            "Platt scaling: genuine pairs are not closer than impostors on the fit data "
            "(fitted slope %.3g > 0); using a constant confidence instead",
            a_z,
        )
        return 0.0, prior
    return a_z / sd, b_z - a_z * mu / sd
