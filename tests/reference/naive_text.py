"""Slow, obvious references for the graded-pair losses (CoSENT, AnglE, cosine MSE).

Plain loops over pairs; generic over Python floats (double precision) and 0-d torch
tensors (so autograd runs through the loop). Nothing imports siamkit.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]


def _is_tensor(v: Any) -> bool:
    return torch is not None and isinstance(v, torch.Tensor)


def _sqrt(v: Any) -> Any:
    return torch.sqrt(v) if _is_tensor(v) else math.sqrt(v)


def _exp(v: Any) -> Any:
    return torch.exp(v) if _is_tensor(v) else math.exp(v)


def _log(v: Any) -> Any:
    return torch.log(v) if _is_tensor(v) else math.log(v)


def _rows(m: Any) -> list[list[Any]]:
    return [[m[i][k] for k in range(len(m[i]))] for i in range(len(m))]


def cosine(u: Sequence[Any], v: Sequence[Any]) -> Any:
    dot = sum(u[k] * v[k] for k in range(len(u)))
    nu = _sqrt(sum(x * x for x in u))
    nv = _sqrt(sum(x * x for x in v))
    return dot / (nu * nv)


def angle(u: Sequence[Any], v: Sequence[Any]) -> Any:
    """|sum of re + im| of (u / v) / (|u| / |v|), u and v read as complex vectors."""
    h = len(u) // 2
    a, b, c, d = u[:h], u[h:], v[:h], v[h:]
    z = sum(c[k] * c[k] + d[k] * d[k] for k in range(h))
    nu = _sqrt(sum(a[k] * a[k] + b[k] * b[k] for k in range(h)))
    ratio = nu / _sqrt(z)
    total = 0.0
    for k in range(h):
        re = (a[k] * c[k] + b[k] * d[k]) / z
        im = (b[k] * c[k] - a[k] * d[k]) / z
        total = total + re / ratio + im / ratio
    return total if total >= 0 else -total


def ranked(sims: list[Any], scores: Sequence[float], scale: float) -> Any:
    """log(1 + sum over (i, j) with score_i > score_j of exp(scale * (sim_j - sim_i)))."""
    total = 1.0
    for i in range(len(sims)):
        for j in range(len(sims)):
            if scores[i] > scores[j]:
                total = total + _exp(scale * (sims[j] - sims[i]))
    return _log(total)


def cosent(e1: Any, e2: Any, scores: Sequence[float], *, scale: float = 20.0) -> Any:
    r1, r2 = _rows(e1), _rows(e2)
    return ranked([cosine(r1[i], r2[i]) for i in range(len(r1))], scores, scale)


def angle_loss(e1: Any, e2: Any, scores: Sequence[float], *, scale: float = 20.0) -> Any:
    r1, r2 = _rows(e1), _rows(e2)
    return ranked([angle(r1[i], r2[i]) for i in range(len(r1))], scores, scale)


def cosine_mse(e1: Any, e2: Any, scores: Sequence[float]) -> Any:
    r1, r2 = _rows(e1), _rows(e2)
    total = 0.0
    for i in range(len(r1)):
        diff = cosine(r1[i], r2[i]) - scores[i]
        total = total + diff * diff
    return total / len(r1)
