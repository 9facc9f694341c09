"""The training objective: one batch's embeddings -> the configured loss.

Class batches reach their loss through the miner (contrastive, triplet, binary), or use
in-batch negatives (mnr, normsoftmax); pair batches use their given pairs. With two
views of every image (the ``views`` loss, or ``instance_weight`` > 0) the views term is
the loss or is added to it. With ``matryoshka_dims`` the whole of it is summed over the
embedding's prefixes (:func:`siamkit.matryoshka.matryoshka_loss`). With
``cross_batch_memory`` the mined losses take their candidates from the batch plus a
:class:`~siamkit.memory.CrossBatchMemory` of earlier batches, which the objective fills
(with the global batch under torch.distributed: every rank holds the same memory).
"""

from __future__ import annotations

import torch

from ..losses import (
    binary_pair_loss,
    contrastive_loss,
    multiple_negatives_ranking_loss,
    normalized_softmax_loss,
    triplet_loss,
)
from ..matryoshka import matryoshka_loss
from ..memory import CrossBatchMemory, memory_loss
from ..miners import BaseMiner
from ..network import SiameseNetwork
from ..tuples import Pairs, Triplets
from .config import TrainConfig

__all__ = ["Objective", "balanced_binary_loss"]


def balanced_binary_loss(network: SiameseNetwork, e: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """The pair head's cross-entropy, genuine and impostor pairs weighted half each (in an
    m-per-class batch impostors dominate).

    Args:
        network: a network with a pair head.
        e: the batch's embeddings.
        pairs: index pairs into ``e``.

    Shapes:
        e (N, D) -> scalar.

    Returns:
        The loss (0 with a gradient when there are no pairs).
    """
    logits = network.pair_logits(e[pairs.a], e[pairs.b])
    per = binary_pair_loss(logits, pairs.same, reduction="none")
    if per.numel() == 0:
        return e.sum() * 0.0
    same = pairs.same
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        return per.mean()
    return 0.5 * per[same].mean() + 0.5 * per[~same].mean()


class Objective:
    """The loss of one training batch, as a config defines it.

    Args:
        config: the loss options.
        network: the network being trained (its distance and pair head).
        miner: the miner of class batches (None for in-batch losses and pair batches).
        proxies: the normsoftmax class proxies (a trained parameter), else None.
        class_values: the sorted training classes the proxies stand for, else None.
    """

    def __init__(
        self,
        config: TrainConfig,
        network: SiameseNetwork,
        miner: BaseMiner | None,
        *,
        proxies: torch.Tensor | None = None,
        class_values: torch.Tensor | None = None,
    ) -> None:
        self.config = config
        self.network = network
        self.miner = miner
        self.proxies = proxies
        self.class_values = class_values
        self.two_views = config.loss == "views" or config.instance_weight > 0
        self.memory: CrossBatchMemory | None = None
        if config.cross_batch_memory:
            self.memory = CrossBatchMemory(size=config.cross_batch_memory, start_after=config.memory_warmup)

    def __call__(self, e: torch.Tensor, y: torch.Tensor, given_pairs: Pairs | None = None) -> torch.Tensor:
        """The batch loss: :meth:`one_size` (same arguments), summed over the embedding's
        prefixes when the config sets ``matryoshka_dims``."""
        dims = self.config.matryoshka_dims
        if dims:
            return matryoshka_loss(
                lambda p: self.one_size(p, y, given_pairs), e, dims,
                normalize=self.network.normalize, weights=self.config.matryoshka_weights,
            )
        return self.one_size(e, y, given_pairs)

    def one_size(self, e: torch.Tensor, y: torch.Tensor, given_pairs: Pairs | None = None) -> torch.Tensor:
        """The batch loss of embeddings of one size (the views term included).

        Args:
            e: the embeddings (with two views: the first view's rows, then the second's).
            y: the class of every sample.
            given_pairs: a pair batch's pairs (then no miner is used).

        Shapes:
            e (N, D) or (2N, D) with two views, y (N,) -> scalar.

        Returns:
            The loss, with its gradient.
        """
        if not self.two_views:
            return self.loss(e, y, given_pairs)
        n = y.numel()
        e, e2 = e[:n], e[n:]
        views = multiple_negatives_ranking_loss(e, e2, scale=self.config.instance_scale, labels=y, symmetric=True)
        if self.config.loss == "views":
            return views
        return self.loss(e, y, None) + self.config.instance_weight * views

    def loss(self, e: torch.Tensor, y: torch.Tensor, given_pairs: Pairs | None = None) -> torch.Tensor:
        """The configured loss of one view.

        Args:
            e: the embeddings.
            y: the class of every sample.
            given_pairs: a pair batch's pairs (then no miner is used).

        Shapes:
            e (N, D), y (N,) -> scalar.

        Returns:
            The loss, with its gradient.
        """
        config, network = self.config, self.network
        if config.loss == "normsoftmax":
            assert self.proxies is not None and self.class_values is not None
            return normalized_softmax_loss(  # a prefix is scored against the proxies' prefix
                e, torch.searchsorted(self.class_values, y), self.proxies[:, : e.shape[1]],
                scale=config.classifier_scale, margin=config.margin,
            )
        if config.loss == "mnr":
            m = config.m_per_class
            e = e.view(-1, m, e.shape[1])
            return multiple_negatives_ranking_loss(e[:, 0], e[:, 1], scale=config.mnr_scale, symmetric=True)
        if self.memory is not None and given_pairs is None:
            return self.with_memory(e, y)
        if given_pairs is not None:
            tuples: Pairs | Triplets = given_pairs
        else:
            assert self.miner is not None
            tuples = self.miner.mine(e, y)
        if config.loss == "triplet":
            assert isinstance(tuples, Triplets)
            return triplet_loss(e, tuples, distance=network.distance, margin=config.margin)
        assert isinstance(tuples, Pairs)
        if config.loss == "contrastive":
            return contrastive_loss(
                e, tuples, distance=network.distance, pos_margin=config.pos_margin, neg_margin=config.margin
            )
        return balanced_binary_loss(network, e, tuples)

    def with_memory(self, e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mined loss against the batch plus the cross-batch memory, which then takes
        the batch (during the warm-up: the plain batch loss, the memory left empty).

        Args:
            e: the batch's embeddings (the global batch under torch.distributed).
            y: the class of every sample.

        Shapes:
            e (N, D), y (N,) -> scalar.

        Returns:
            The loss, with its gradient.
        """
        config, memory = self.config, self.memory
        assert memory is not None and self.miner is not None
        use = memory.active
        out = memory_loss(
            e, y, memory if use else None, self.miner, loss=config.loss, distance=self.network.distance,
            margin=config.margin, pos_margin=config.pos_margin,
        )
        if use:
            memory.enqueue(e, y)
        memory.step()
        return out
