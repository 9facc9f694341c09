"""Slow, obvious reference of the cross-batch memory (siamkit.memory): a Python list as
the FIFO queue, and the miners written out with loops over anchors (the first ``b``
rows) and candidates (every row). Nothing imports siamkit."""

from __future__ import annotations

from typing import Any

from tests.reference import naive


class NaiveQueue:
    """The last ``size`` rows enqueued, oldest first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rows: list[tuple[list[float], int]] = []

    def enqueue(self, emb: Any, labels: Any) -> None:
        for r, y in zip(emb.tolist(), labels.tolist(), strict=True):
            self.rows.append((r, int(y)))
            if len(self.rows) > self.size:
                self.rows.pop(0)


def _d(emb: Any, distance: str) -> list[list[float]]:
    fn = naive.DISTANCES[distance]
    r = [list(map(float, row)) for row in emb.tolist()]
    return [[fn(r[i], r[j]) for j in range(len(r))] for i in range(len(r))]


def triplets(emb: Any, labels: Any, b: int, miner: str, *, distance: str = "euclidean") -> list[tuple[int, int, int]]:
    """batch_hard / semi_hard triplets with anchors < b and candidates = every row."""
    lab = [int(v) for v in labels.tolist()]
    d = _d(emb, distance)
    out = []
    for a in range(b):
        positives = [p for p in range(len(lab)) if p != a and lab[p] == lab[a]]
        negatives = [n for n in range(len(lab)) if lab[n] != lab[a]]
        if not positives or not negatives:
            continue
        if miner == "batch_hard":
            out.append((a, max(positives, key=lambda p: d[a][p]), min(negatives, key=lambda n: d[a][n])))
            continue
        for p in positives:
            farther = [n for n in negatives if d[a][n] > d[a][p]]
            chosen = min(farther, key=lambda n: d[a][n]) if farther else max(negatives, key=lambda n: d[a][n])
            out.append((a, p, chosen))
    return out


def pairs(
    emb: Any, labels: Any, b: int, miner: str, *, distance: str = "euclidean", pos_margin: float = 0.0, neg_margin: float = 1.0
) -> list[tuple[int, int, bool]]:
    """all_pairs / hard_pairs pairs (i, j): i < b an anchor, j > i any row (batch pairs once)."""
    lab = [int(v) for v in labels.tolist()]
    d = _d(emb, distance)
    out = []
    for i in range(b):
        for j in range(i + 1, len(lab)):
            same = lab[i] == lab[j]
            if miner == "all_pairs" or (same and d[i][j] > pos_margin) or (not same and d[i][j] < neg_margin):
                out.append((i, j, same))
    return out


def loss(emb: Any, labels: Any, b: int, miner: str, *, margin: float, pos_margin: float = 0.0, distance: str = "euclidean") -> Any:
    """The mean triplet (batch_hard, semi_hard) or contrastive (all_pairs, hard_pairs) loss
    of the anchors < b against every row, through autograd when ``emb`` is a tensor."""
    if miner in ("batch_hard", "semi_hard"):
        t = triplets(emb.detach(), labels, b, miner, distance=distance)
        per = naive.triplet_losses(emb, [x[0] for x in t], [x[1] for x in t], [x[2] for x in t], distance=distance, margin=margin)
    else:
        p = pairs(emb.detach(), labels, b, miner, distance=distance, pos_margin=pos_margin, neg_margin=margin)
        per = naive.contrastive_losses(emb, [x[0] for x in p], [x[1] for x in p], [x[2] for x in p], distance=distance,
                                       pos_margin=pos_margin, neg_margin=margin)
    if not per:
        return emb.sum() * 0.0
    total = per[0]
    for v in per[1:]:
        total = total + v
    return total / len(per)
