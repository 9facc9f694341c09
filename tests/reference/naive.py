"""Slow, obvious reference implementations used to check siamkit.

Everything here is written out by hand with Python loops over rows, pairs and
triplets. Nothing imports siamkit. The functions are *generic* over the scalar type:

- given plain Python floats (e.g. ``tensor.tolist()``) they compute in double precision
  and return floats, which is what the value tests compare against;
- given torch tensors (rows of an (N, D) tensor, iterated element by element) every
  step is a scalar torch op, so autograd works through the loop and the gradient
  tests can compare siamkit's gradients with these.

Miners return ``set``\\ s of index tuples so comparisons do not depend on order:
pairs as ``(i, j, same)`` with ``i < j``, triplets as ``(anchor, positive, negative)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

try:  # torch is only needed for the autograd path
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

Scalar = Any  # float or a 0-d torch tensor
Vector = Sequence[Scalar]

NORM_EPS = 1e-12  # the documented eps of the cosine normalisation


# --------------------------------------------------------------------------- scalars


def _is_tensor(v: Any) -> bool:
    return torch is not None and isinstance(v, torch.Tensor)


def _exp(v: Scalar) -> Scalar:
    return torch.exp(v) if _is_tensor(v) else math.exp(v)


def _log(v: Scalar) -> Scalar:
    return torch.log(v) if _is_tensor(v) else math.log(v)


def _log1p(v: Scalar) -> Scalar:
    return torch.log1p(v) if _is_tensor(v) else math.log1p(v)


def _sqrt(v: Scalar) -> Scalar:
    return torch.sqrt(v) if _is_tensor(v) else math.sqrt(v)


def _relu(v: Scalar) -> Scalar:
    """max(0, v); the zero branch keeps the graph (gradient 0) for tensors."""
    return v if v > 0 else v * 0.0


def _max_scalar(v: Scalar, floor: float) -> Scalar:
    return v if v > floor else (v * 0.0 + floor)


def softplus(v: Scalar) -> Scalar:
    """log(1 + exp(v)), computed stably as max(v, 0) + log1p(exp(-|v|))."""
    return _relu(v) + _log1p(_exp(-abs(v)))


def _to_float(v: Any) -> float:
    return float(v.item()) if _is_tensor(v) else float(v)


def rows(matrix: Any) -> list:
    """Split an (N, D) tensor/array/list into a list of N rows."""
    if _is_tensor(matrix):
        return list(matrix.unbind(0))
    return [list(r) for r in matrix]


# --------------------------------------------------------------------------- distances


def euclidean(x: Vector, y: Vector) -> Scalar:
    s = 0.0
    for xi, yi in zip(x, y, strict=True):
        s = s + (xi - yi) * (xi - yi)
    return _sqrt(s)


def sqeuclidean(x: Vector, y: Vector) -> Scalar:
    s = 0.0
    for xi, yi in zip(x, y, strict=True):
        s = s + (xi - yi) * (xi - yi)
    return s


def cosine(x: Vector, y: Vector) -> Scalar:
    """1 - cos(x, y), with each norm floored at NORM_EPS (a zero vector has cos 0)."""
    dot, nx, ny = 0.0, 0.0, 0.0
    for xi, yi in zip(x, y, strict=True):
        dot = dot + xi * yi
        nx = nx + xi * xi
        ny = ny + yi * yi
    nx = _max_scalar(_sqrt(nx), NORM_EPS) if nx > 0 else NORM_EPS
    ny = _max_scalar(_sqrt(ny), NORM_EPS) if ny > 0 else NORM_EPS
    return 1.0 - dot / (nx * ny)


def l1(x: Vector, y: Vector) -> Scalar:
    s = 0.0
    for xi, yi in zip(x, y, strict=True):
        s = s + abs(xi - yi)
    return s


DISTANCES: dict[str, Callable[[Vector, Vector], Scalar]] = {
    "euclidean": euclidean,
    "sqeuclidean": sqeuclidean,
    "cosine": cosine,
    "l1": l1,
}


def distance_matrix(emb: Any, distance: str) -> list[list[Scalar]]:
    """d(E[i], E[j]) for every i, j, one pair at a time."""
    fn = DISTANCES[distance]
    r = rows(emb)
    return [[fn(r[i], r[j]) for j in range(len(r))] for i in range(len(r))]


# --------------------------------------------------------------------------- reductions


def reduce(values: list[Scalar], reduction: str) -> Any:
    """mean / sum / none / mean_nonzero (mean over the values > 0; 0.0 when none)."""
    if reduction == "none":
        return list(values)
    if reduction == "sum":
        total = 0.0
        for v in values:
            total = total + v
        return total
    if reduction == "mean":
        if not values:
            return 0.0
        total = 0.0
        for v in values:
            total = total + v
        return total / len(values)
    if reduction == "mean_nonzero":
        positive = [v for v in values if v > 0]
        if not positive:
            return 0.0
        total = 0.0
        for v in positive:
            total = total + v
        return total / len(positive)
    raise ValueError(reduction)


# --------------------------------------------------------------------------- losses


def contrastive_pair(d: Scalar, same: bool, pos_margin: float, neg_margin: float, power: int) -> Scalar:
    """same: max(0, d - pos_margin)**power; different: max(0, neg_margin - d)**power."""
    if same:
        v = _relu(d - pos_margin)
    else:
        v = _relu(neg_margin - d)
    return v**power


def contrastive_losses(
    emb: Any,
    a: Sequence[int],
    b: Sequence[int],
    same: Sequence[bool],
    *,
    distance: str = "euclidean",
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    power: int = 2,
) -> list[Scalar]:
    fn = DISTANCES[distance]
    r = rows(emb)
    out = []
    for i, j, s in zip(a, b, same, strict=True):
        out.append(contrastive_pair(fn(r[int(i)], r[int(j)]), bool(s), pos_margin, neg_margin, power))
    return out


def triplet_one(d_ap: Scalar, d_an: Scalar, margin: float, soft: bool) -> Scalar:
    """hinge: max(0, d_ap - d_an + margin); soft: softplus(d_ap - d_an)."""
    if soft:
        return softplus(d_ap - d_an)
    return _relu(d_ap - d_an + margin)


def triplet_losses(
    emb: Any,
    anchor: Sequence[int],
    positive: Sequence[int],
    negative: Sequence[int],
    *,
    distance: str = "euclidean",
    margin: float = 0.2,
    soft: bool = False,
) -> list[Scalar]:
    fn = DISTANCES[distance]
    r = rows(emb)
    out = []
    for i, p, n in zip(anchor, positive, negative, strict=True):
        a_row = r[int(i)]
        out.append(triplet_one(fn(a_row, r[int(p)]), fn(a_row, r[int(n)]), margin, soft))
    return out


def bce_with_logits_one(logit: Scalar, target: float) -> Scalar:
    """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))] = max(x, 0) - x t + log(1 + exp(-|x|))."""
    return _relu(logit) - logit * target + _log1p(_exp(-abs(logit)))


def bce_with_logits(logits: Sequence[Scalar], same: Sequence[bool]) -> list[Scalar]:
    return [bce_with_logits_one(x, 1.0 if bool(s) else 0.0) for x, s in zip(logits, same, strict=True)]


def _logsumexp(values: list[Scalar]) -> Scalar:
    m = max(values, key=_to_float)
    m_const = _to_float(m)  # a constant shift; the result does not depend on it
    total = 0.0
    for v in values:
        total = total + _exp(v - m_const)
    return _log(total) + m_const


def multiple_negatives_ranking(
    anchors: Any,
    positives: Any,
    *,
    scale: float = 20.0,
    labels: Sequence[int] | None = None,
    symmetric: bool = False,
) -> Scalar:
    """Mean over i of -log softmax_j(scale * cos(a_i, p_j))[i].

    With labels, the j != i of the same class as i are left out of the softmax.
    symmetric: average with the same thing column-wise (each positive ranks the anchors).
    """
    ra, rp = rows(anchors), rows(positives)
    n = len(ra)
    sim = [[scale * (1.0 - cosine(ra[i], rp[j])) for j in range(n)] for i in range(n)]

    def keep(i: int, j: int) -> bool:
        return j == i or labels is None or int(labels[i]) != int(labels[j])

    def ranking(get: Callable[[int, int], Scalar]) -> Scalar:
        total = 0.0
        for i in range(n):
            logits = [get(i, j) for j in range(n) if keep(i, j)]
            total = total + (_logsumexp(logits) - get(i, i))
        return total / n

    loss = ranking(lambda i, j: sim[i][j])
    if symmetric:
        loss = (loss + ranking(lambda i, j: sim[j][i])) / 2
    return loss


# --------------------------------------------------------------------------- miners


def _as_int_list(labels: Any) -> list[int]:
    if _is_tensor(labels):
        labels = labels.tolist()
    return [int(v) for v in labels]


def _float_matrix(emb: Any, distance: str) -> list[list[float]]:
    if _is_tensor(emb):
        emb = emb.detach().double().tolist()
    return distance_matrix(emb, distance)


def all_pairs(labels: Any) -> set[tuple[int, int, bool]]:
    lab = _as_int_list(labels)
    out = set()
    for i in range(len(lab)):
        for j in range(i + 1, len(lab)):
            out.add((i, j, lab[i] == lab[j]))
    return out


def hard_pairs(
    emb: Any, labels: Any, *, distance: str = "euclidean", pos_margin: float = 0.0, neg_margin: float = 1.0
) -> set[tuple[int, int, bool]]:
    lab = _as_int_list(labels)
    d = _float_matrix(emb, distance)
    out = set()
    for i in range(len(lab)):
        for j in range(i + 1, len(lab)):
            same = lab[i] == lab[j]
            if (same and d[i][j] > pos_margin) or (not same and d[i][j] < neg_margin):
                out.add((i, j, same))
    return out


def batch_hard(emb: Any, labels: Any, *, distance: str = "euclidean") -> set[tuple[int, int, int]]:
    lab = _as_int_list(labels)
    d = _float_matrix(emb, distance)
    out = set()
    for a in range(len(lab)):
        positives = [p for p in range(len(lab)) if p != a and lab[p] == lab[a]]
        negatives = [n for n in range(len(lab)) if lab[n] != lab[a]]
        if not positives or not negatives:
            continue
        best_p = positives[0]
        for p in positives:
            if d[a][p] > d[a][best_p]:
                best_p = p
        best_n = negatives[0]
        for n in negatives:
            if d[a][n] < d[a][best_n]:
                best_n = n
        out.add((a, best_p, best_n))
    return out


def semi_hard(emb: Any, labels: Any, *, distance: str = "euclidean") -> set[tuple[int, int, int]]:
    lab = _as_int_list(labels)
    d = _float_matrix(emb, distance)
    out = set()
    for a in range(len(lab)):
        negatives = [n for n in range(len(lab)) if lab[n] != lab[a]]
        if not negatives:
            continue
        for p in range(len(lab)):
            if p == a or lab[p] != lab[a]:
                continue
            farther = [n for n in negatives if d[a][n] > d[a][p]]
            if farther:
                chosen = farther[0]
                for n in farther:
                    if d[a][n] < d[a][chosen]:
                        chosen = n
            else:
                chosen = negatives[0]
                for n in negatives:
                    if d[a][n] > d[a][chosen]:
                        chosen = n
            out.add((a, p, chosen))
    return out


def normalized_softmax(
    embeddings: Any, labels: Sequence[int], proxies: Any, *, scale: float = 16.0, margin: float = 0.0
) -> Scalar:
    """Mean over i of -log softmax_c(scale * (cos(e_i, p_c) - margin [c == y_i]))[y_i]."""
    re, rp = rows(embeddings), rows(proxies)
    total = 0.0
    for i, e in enumerate(re):
        y = int(labels[i])
        logits = [scale * ((1.0 - cosine(e, p)) - (margin if c == y else 0.0)) for c, p in enumerate(rp)]
        total = total + (_logsumexp(logits) - logits[y])
    return total / len(re)
