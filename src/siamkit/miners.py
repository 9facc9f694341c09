"""Miners: pick the pairs or triplets of a labelled batch that teach the most.

Every miner runs under ``torch.no_grad`` on an (N, N) distance matrix: memory grows
with batch^2, never batch^3 (a batch of 2048 mines in a few hundred MB). The loss then
recomputes distances with gradients for the selected tuples only.

=====================  ==================================================================
miner                  selects
=====================  ==================================================================
AllPairsMiner          every pair i < j (positives and negatives)
HardPairMiner          positives farther than ``pos_margin``, negatives closer than
                       ``neg_margin`` (pytorch-metric-learning's PairMarginMiner)
BatchHardMiner         per anchor: the farthest positive and the closest negative
                       (Hermans et al. 2017)
SemiHardMiner          per (anchor, positive): the closest negative that is farther than
                       the positive (FaceNet, Schroff et al. 2015; TensorFlow Addons'
                       rule); if every negative is closer, the farthest of them
=====================  ==================================================================

Example:
    >>> import torch
    >>> from siamkit.miners import BatchHardMiner
    >>> emb, labels = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    >>> trip = BatchHardMiner().mine(emb, labels)
    >>> len(trip)
    8
"""

from __future__ import annotations

import torch

from .distances import BaseDistance, get_distance
from .mining_kernels import batch_hard_rows, row_ranking, same_class_entries
from .tuples import Pairs, Triplets, all_pairs, check_labels, class_masks

__all__ = ["BaseMiner", "AllPairsMiner", "HardPairMiner", "BatchHardMiner", "SemiHardMiner", "MINERS"]


def _empty_triplets(device: torch.device) -> Triplets:
    e = torch.empty(0, dtype=torch.long, device=device)
    return Triplets(e, e, e)


class BaseMiner:
    """A miner: ``mine(embeddings (N, D), labels (N,)) -> Pairs | Triplets``."""

    name = "base"
    #: "pairs" or "triplets": which loss family this miner feeds
    produces = "pairs"

    def __init__(self, *, distance: str | BaseDistance = "euclidean") -> None:
        self.distance = get_distance(distance)

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs | Triplets:
        """Select the pairs or triplets of a labelled batch, under ``torch.no_grad``.

        Args:
            embeddings: the batch (detached here: mining never back-propagates).
            labels: the class of each row (integers).

        Shapes:
            embeddings (N, D), labels (N,) -> Pairs or Triplets of indices into the N rows.

        Returns:
            :class:`~siamkit.tuples.Pairs` or :class:`~siamkit.tuples.Triplets`, as the
            class attribute ``produces`` says; the loss recomputes their distances
            with gradients.

        Raises:
            ValueError: ``labels`` is not of shape (N,).
            TypeError: ``labels`` is not an integer tensor.
        """
        labels = check_labels(labels, embeddings.shape[0])
        with torch.no_grad():
            return self._mine(embeddings.detach(), labels)

    def _mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs | Triplets:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class AllPairsMiner(BaseMiner):
    """Every unordered pair i < j of the batch."""

    name = "all_pairs"

    def _mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs:
        return all_pairs(labels)


class HardPairMiner(BaseMiner):
    """Pairs that break a margin: positives with d > pos_margin, negatives with d < neg_margin.

    Args:
        pos_margin: positives closer than this are already fine and dropped.
        neg_margin: negatives farther than this are already fine and dropped.
    """

    name = "hard_pairs"

    def __init__(
        self,
        *,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        distance: str | BaseDistance = "euclidean",
    ) -> None:
        super().__init__(distance=distance)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def _mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs:
        d = self.distance.pairwise(embeddings)
        pos, neg = class_masks(labels)
        upper = torch.ones_like(pos).triu_(1)
        keep = upper & ((pos & (d > self.pos_margin)) | (neg & (d < self.neg_margin)))
        a, b = keep.nonzero(as_tuple=True)
        return Pairs(a, b, labels[a] == labels[b])


class BatchHardMiner(BaseMiner):
    """Per anchor, the hardest positive (farthest) and hardest negative (closest).

    Anchors without any positive or any negative in the batch are skipped.
    """

    name = "batch_hard"
    produces = "triplets"

    def _mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        # positives listed sparsely from the sorted labels, the hardest by a scatter-max;
        # negatives = the rest of the row (positives set to +inf in place), one argmin;
        # the ranking drops each row's own norm (siamkit.mining_kernels)
        order = torch.argsort(labels, stable=True)
        rows, cols, counts = same_class_entries(labels, 0, labels.numel(), order, labels[order])
        if not bool(((counts > 1) & (counts < labels.numel())).any()):
            return _empty_triplets(embeddings.device)
        d = row_ranking(embeddings, embeddings, self.distance)
        return Triplets(*batch_hard_rows(d, rows, cols, counts, 0))


class SemiHardMiner(BaseMiner):
    """For every (anchor, positive), the closest negative farther than the positive.

    This is FaceNet's semi-hard rule as TensorFlow Addons implements it: the chosen
    negative satisfies d(a, p) < d(a, n), and when no negative is farther than the
    positive, the farthest negative is used. One triplet per ordered positive pair.

    Two exact strategies, chosen by the number P of positive pairs: with few positives
    per anchor (P <= 8 N, the m-per-class case) a masked row minimum over chunks of N
    pairs, O(P N) time; otherwise a row-wise sort plus ``searchsorted``, O(N^2 log N).
    Both use O(N^2) memory, where enumerating all triplets costs O(N^3).
    """

    name = "semi_hard"
    produces = "triplets"

    def _mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        d = self.distance.ranking_pairwise(embeddings)
        pos, neg = class_masks(labels)
        n_neg = neg.sum(1)
        pos = pos & (n_neg > 0)[:, None]
        a, p = pos.nonzero(as_tuple=True)
        if a.numel() == 0:
            return _empty_triplets(embeddings.device)
        n = embeddings.shape[0]
        farthest = d.masked_fill(~neg, float("-inf")).argmax(1)
        if a.numel() <= 8 * n:
            chosen = torch.empty_like(a)
            inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
            for s in range(0, a.numel(), n):
                aa, pp = a[s : s + n], p[s : s + n]
                rows = d[aa]
                ok = neg[aa] & (rows > d[aa, pp][:, None])
                val, idx = torch.where(ok, rows, inf).min(1)
                chosen[s : s + n] = torch.where(torch.isinf(val), farthest[aa], idx)
            return Triplets(a, p, chosen)
        neg_sorted, order = d.masked_fill(~neg, float("inf")).sort(dim=1)
        # first negative strictly farther than d(a, j), for every j of every row
        first_farther = torch.searchsorted(neg_sorted, d.contiguous(), right=True)
        k = first_farther[a, p]
        return Triplets(a, p, torch.where(k < n_neg[a], order[a, k.clamp_max(n - 1)], farthest[a]))


MINERS: dict[str, type[BaseMiner]] = {
    cls.name: cls for cls in (AllPairsMiner, HardPairMiner, BatchHardMiner, SemiHardMiner)
}
