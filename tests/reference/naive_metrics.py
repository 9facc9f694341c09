"""Slow, obvious reference implementations of the verification and retrieval metrics.

Plain Python loops over pairs, thresholds and references; exact rational arithmetic
(``fractions.Fraction``) wherever a rate is compared. Nothing here imports siamkit.

Verification convention: a pair is accepted at threshold t when ``distance <= t``; the
candidate thresholds are ``-inf`` (accept nothing) and every distinct distance.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

NEG_INF = float("-inf")


def _candidates(distances: Sequence[float]) -> list[float]:
    return [NEG_INF] + sorted(set(float(d) for d in distances))


def counts_at(distances: Sequence[float], same: Sequence[bool], t: float) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn) of accepting distance <= t."""
    tp = fp = tn = fn = 0
    for d, s in zip(distances, same):
        accepted = d <= t
        if accepted and s:
            tp += 1
        elif accepted and not s:
            fp += 1
        elif not accepted and s:
            fn += 1
        else:
            tn += 1
    return tp, fp, tn, fn


def rates(distances: Sequence[float], same: Sequence[bool]) -> list[tuple[float, Fraction, Fraction]]:
    """[(threshold, FAR, FRR)] at every candidate threshold, as exact fractions."""
    n_pos = sum(1 for s in same if s)
    n_neg = len(same) - n_pos
    out = []
    for t in _candidates(distances):
        tp, fp, tn, fn = counts_at(distances, same, t)
        out.append((t, Fraction(fp, n_neg), Fraction(fn, n_pos)))
    return out


def eer(distances: Sequence[float], same: Sequence[bool]) -> tuple[float, float]:
    """Equal error rate and threshold, by the documented rule.

    First candidate k with FAR_k >= FRR_k. Exact equality: EER = FAR_k, threshold = middle
    of (t_k, t_{k+1}) (t_k if last). Otherwise interpolate linearly between candidates
    k-1 and k where FAR - FRR crosses zero; the threshold in the same proportion (t_k
    when k-1 is the "accept nothing" candidate).
    """
    pts = rates(distances, same)
    for k, (t, far, frr) in enumerate(pts):
        if far >= frr:
            break
    if far == frr:
        nxt = pts[k + 1][0] if k + 1 < len(pts) else t
        return float(far), (t + nxt) / 2
    t0, far0, frr0 = pts[k - 1]
    g0 = far0 - frr0  # < 0
    g1 = far - frr  # > 0
    alpha = -g0 / (g1 - g0)
    value = far0 + alpha * (far - far0)
    assert value == frr0 + alpha * (frr - frr0)  # the crossing: FAR == FRR there
    if t0 == NEG_INF:
        return float(value), t
    return float(value), t0 + float(alpha) * (t - t0)


def needed_negatives(far: float) -> int:
    """ceil(1 / far), with far read as the decimal it was written as."""
    return math.ceil(1 / Fraction(repr(far)))


def tar_at_far(distances: Sequence[float], same: Sequence[bool], far: float) -> tuple[float, float, bool]:
    """(tar, threshold, resolvable) at the largest candidate threshold with FAR <= far."""
    n_pos = sum(1 for s in same if s)
    n_neg = len(same) - n_pos
    if n_neg < needed_negatives(far):
        return float("nan"), float("nan"), False
    limit = Fraction(repr(far))
    best_t, best_tar = NEG_INF, 0.0
    for t in _candidates(distances):
        tp, fp, tn, fn = counts_at(distances, same, t)
        if Fraction(fp, n_neg) <= limit:
            best_t, best_tar = t, tp / n_pos
    return best_tar, best_t, True


def best_accuracy_threshold(distances: Sequence[float], same: Sequence[bool]) -> tuple[float, float]:
    """(accuracy, threshold): the first (smallest) candidate with the best accuracy, placed
    in the middle of the gap to the next candidate (just below the smallest distance when
    "accept nothing" wins; the candidate itself when it is the largest distance)."""
    cands = _candidates(distances)
    best_k, best_correct = 0, -1
    for k, t in enumerate(cands):
        tp, fp, tn, fn = counts_at(distances, same, t)
        if tp + tn > best_correct:
            best_k, best_correct = k, tp + tn
    acc = best_correct / len(same)
    if best_k == 0:
        return acc, math.nextafter(cands[1], NEG_INF)
    if best_k + 1 < len(cands):
        return acc, (cands[best_k] + cands[best_k + 1]) / 2
    return acc, cands[best_k]


# --------------------------------------------------------------------------- retrieval


def _distance(a: Sequence[float], b: Sequence[float], kind: str) -> float:
    if kind == "euclidean":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    if kind == "cosine":
        dot = sum(x * y for x, y in zip(a, b))
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(y * y for y in b))
        return 1.0 - dot / (max(na, 1e-12) * max(nb, 1e-12))
    raise ValueError(kind)


def retrieval(
    queries: Sequence[Sequence[float]],
    query_labels: Sequence[int],
    refs: Sequence[Sequence[float]] | None = None,
    ref_labels: Sequence[int] | None = None,
    distance: str = "euclidean",
    exclude_self: bool = True,
    query_rows: Sequence[int] | None = None,
) -> dict[str, float]:
    """P@1, R-precision and MAP@R (Musgrave et al. 2020), ties broken by reference index;
    ``query_rows``: only these queries (of the same set) are evaluated."""
    same_set = refs is None
    if same_set:
        refs, ref_labels = queries, query_labels
    p1 = rp = mapr = 0.0
    evaluated = skipped = 0
    for qi, (q, ql) in enumerate(zip(queries, query_labels)):
        if query_rows is not None and qi not in query_rows:
            continue
        ranking = []
        for ri, (r, rl) in enumerate(zip(refs, ref_labels)):
            if same_set and exclude_self and ri == qi:
                continue
            ranking.append((_distance(q, r, distance), ri, rl))
        ranking.sort()  # by distance, then by reference index
        big_r = sum(1 for _, _, rl in ranking if rl == ql)
        if big_r == 0:
            skipped += 1
            continue
        evaluated += 1
        rel = [1 if rl == ql else 0 for _, _, rl in ranking[:big_r]]
        p1 += rel[0]
        rp += sum(rel) / big_r
        hits = 0
        ap = 0.0
        for i, r_i in enumerate(rel, start=1):
            hits += r_i
            if r_i:
                ap += hits / i
        mapr += ap / big_r
    return {
        "precision_at_1": p1 / evaluated,
        "r_precision": rp / evaluated,
        "map_at_r": mapr / evaluated,
        "num_queries": evaluated,
        "num_skipped_queries": skipped,
    }
