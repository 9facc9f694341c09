"""Batch samplers: m-per-class batches (for miners) and balanced pairs.

Both draw from an explicit ``torch.Generator``, so an epoch is a function of its seed:
training seeds each epoch from (seed, epoch), which makes resume exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from ..errors import DataError

__all__ = ["MPerClassSampler", "BalancedPairSampler"]


@dataclass
class MPerClassSampler:
    """Batches of ``batch_size // m`` classes with ``m`` samples each.

    Classes with fewer than m samples are sampled with replacement. An epoch has
    ``len(labels) // batch_size`` batches (at least 1).

    Args:
        labels: (N,) integer class per sample.
        m: samples per class in a batch (>= 2 so every anchor has a positive).
        batch_size: a multiple of m.
    """

    labels: torch.Tensor
    m: int = 4
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.m < 1:
            raise DataError(f"m (samples per class) must be >= 1, got {self.m}")
        if self.batch_size < self.m or self.batch_size % self.m:
            raise DataError(f"batch size {self.batch_size} must be a positive multiple of m={self.m}")
        labels = torch.as_tensor(self.labels).long()
        classes, inverse = torch.unique(labels, return_inverse=True)
        if classes.numel() < 2:
            raise DataError(f"need at least 2 classes to learn similarity, got {classes.numel()}")
        order = torch.argsort(inverse, stable=True)
        counts = torch.bincount(inverse)
        self._order = order
        self._starts = torch.cumsum(counts, 0) - counts
        self._counts = counts
        self._n_classes = int(classes.numel())
        self.classes_per_batch = min(self.batch_size // self.m, self._n_classes)

    def __len__(self) -> int:
        return max(1, int(torch.as_tensor(self.labels).numel()) // self.batch_size)

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Yield index tensors of shape (classes_per_batch * m,)."""
        for _ in range(len(self)):
            cls = torch.randperm(self._n_classes, generator=generator)[: self.classes_per_batch]
            counts = self._counts[cls]
            # m positions per class: a permutation when the class has >= m samples
            r = torch.rand(len(cls), int(counts.max()), generator=generator)
            pos = torch.arange(r.shape[1])[None].expand_as(r)
            r = r.masked_fill(pos >= counts[:, None], 2.0)
            pick = r.argsort(1)[:, : self.m]
            short = counts < self.m
            if bool(short.any()):
                repl = (torch.rand(len(cls), self.m, generator=generator) * counts[:, None]).long()
                pick = torch.where(short[:, None], repl, pick)
            yield self._order[self._starts[cls][:, None] + pick].reshape(-1)


@dataclass
class BalancedPairSampler:
    """Random (i, j, same) pairs, half genuine and half impostor.

    Args:
        labels: (N,) class per sample; needs >= 2 classes and a class with >= 2 samples.
        batch_size: pairs per batch.
        pairs_per_epoch: how many pairs make an epoch.
    """

    labels: torch.Tensor
    batch_size: int = 64
    pairs_per_epoch: int = 10_000

    def __post_init__(self) -> None:
        labels = torch.as_tensor(self.labels).long()
        self._mp = MPerClassSampler(labels, m=1, batch_size=1)
        counts = self._mp._counts
        if not bool((counts >= 2).any()):
            raise DataError("no class has 2 samples, so no genuine pair can be formed")
        self._labels = labels

    def __len__(self) -> int:
        return max(1, self.pairs_per_epoch // self.batch_size)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        mp = self._mp
        multi = (mp._counts >= 2).nonzero(as_tuple=True)[0]
        n_cls = mp._n_classes
        for _ in range(len(self)):
            b = self.batch_size
            same = torch.rand(b, generator=generator) < 0.5
            c1 = torch.where(
                same,
                multi[torch.randint(len(multi), (b,), generator=generator)],
                torch.randint(n_cls, (b,), generator=generator),
            )
            # a different class for impostors: shift by 1..n_cls-1
            c2 = torch.where(same, c1, (c1 + torch.randint(1, n_cls, (b,), generator=generator)) % n_cls)
            cnt1, cnt2 = mp._counts[c1], mp._counts[c2]
            i = (torch.rand(b, generator=generator) * cnt1).long()
            # genuine: a different sample of the same class
            j_same = (i + 1 + (torch.rand(b, generator=generator) * (cnt1 - 1).clamp_min(1)).long()) % cnt1
            j_diff = (torch.rand(b, generator=generator) * cnt2).long()
            j = torch.where(same, j_same, j_diff)
            yield mp._order[mp._starts[c1] + i], mp._order[mp._starts[c2] + j], same
