"""Batch samplers: m-per-class batches (for miners) and balanced pairs.

Both draw from an explicit ``torch.Generator``, so an epoch is a function of its seed:
training seeds each epoch from (seed, epoch), which makes resume exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from ..errors import DataError
from ..tuples import random_pairs

__all__ = ["MPerClassSampler", "BalancedPairSampler"]


@dataclass
class MPerClassSampler:
    """Batches of ``batch_size // m`` classes with ``m`` samples each.

    Classes with fewer than m samples are sampled with replacement. An epoch has
    ``len(labels) // batch_size`` batches (at least 1).

    With ``groups`` (a group per sample, constant within a class: the alphabet of a
    character, the camera of an identity), a batch is filled group by group in random
    order with at most ``classes_per_group`` random classes of each, so most negatives
    in a batch share a group: the hard negatives of a within-group test (e.g. Omniglot's
    within-alphabet 20-way runs).

    Args:
        labels: (N,) integer class per sample.
        m: samples per class in a batch (>= 2 so every anchor has a positive).
        batch_size: a multiple of m.
        groups: (N,) integer group per sample, or None.
        classes_per_group: classes taken from one group (needs groups; None = all of
            the group's classes, up to the batch).
    """

    labels: torch.Tensor
    m: int = 4
    batch_size: int = 64
    groups: torch.Tensor | None = None
    classes_per_group: int | None = None

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
        self._class_group: torch.Tensor | None = None
        available = self._n_classes
        if self.groups is not None:
            groups = torch.as_tensor(self.groups).long()
            if groups.shape != labels.shape:
                raise DataError(f"groups must have one entry per sample {tuple(labels.shape)}, got {tuple(groups.shape)}")
            _, ginv = torch.unique(groups, return_inverse=True)
            first = self._order[self._starts]  # one sample of each class
            class_group = ginv[first]
            if not torch.equal(ginv[order], class_group.repeat_interleave(counts)):
                bad = int(inverse[order][ginv[order] != class_group.repeat_interleave(counts)][0])
                raise DataError(f"class {int(classes[bad])} has samples in more than one group; a class must lie in one group")
            self._class_group = class_group
            self._n_groups = int(class_group.max()) + 1
            cap = self.classes_per_group
            if cap is not None:
                if cap < 1:
                    raise DataError(f"classes_per_group must be >= 1, got {cap}")
                available = int(torch.bincount(class_group).clamp(max=cap).sum())
        elif self.classes_per_group is not None:
            raise DataError("classes_per_group needs groups (a group per sample)")
        self.classes_per_batch = min(self.batch_size // self.m, available)
        if self._class_group is not None and self.classes_per_batch < 2:
            raise DataError(
                f"a batch would hold {self.classes_per_batch} class; raise classes_per_group or batch_size"
            )

    def __len__(self) -> int:
        return max(1, int(torch.as_tensor(self.labels).numel()) // self.batch_size)

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Yield index tensors of shape (classes_per_batch * m,)."""
        for _ in range(len(self)):
            cls = self._pick_classes(generator)
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

    def _pick_classes(self, generator: torch.Generator) -> torch.Tensor:
        if self._class_group is None:
            return torch.randperm(self._n_classes, generator=generator)[: self.classes_per_batch]
        cg = self._class_group
        r = torch.rand(self._n_classes, generator=generator, dtype=torch.float64)
        group_rank = torch.empty(self._n_groups, dtype=torch.float64)
        group_rank[torch.randperm(self._n_groups, generator=generator)] = torch.arange(
            self._n_groups, dtype=torch.float64
        )
        # classes in random group order, random order within a group
        order = torch.argsort(group_rank[cg] + r)
        if self.classes_per_group is not None:
            g_sorted = cg[order]
            pos = torch.arange(order.numel())
            new_group = torch.ones_like(g_sorted, dtype=torch.bool)
            new_group[1:] = g_sorted[1:] != g_sorted[:-1]
            start = torch.cummax(torch.where(new_group, pos, torch.zeros_like(pos)), 0).values
            order = order[(pos - start) < self.classes_per_group]
        return order[: self.classes_per_batch]


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
        MPerClassSampler(labels, m=1, batch_size=1)  # the same label checks (>= 2 classes, ...)
        counts = torch.unique(labels, return_counts=True)[1]
        if not bool((counts >= 2).any()):
            raise DataError("no class has 2 samples, so no genuine pair can be formed")
        self._labels = labels

    def __len__(self) -> int:
        return max(1, self.pairs_per_epoch // self.batch_size)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``len(self)`` batches ``(i, j, same)`` of ``batch_size`` pairs, half genuine.

        Args:
            generator: the source of randomness (an epoch is a function of its state).

        Returns:
            An iterator of index tensors (B,), (B,) and bool (B,).
        """
        for _ in range(len(self)):
            yield random_pairs(self._labels, self.batch_size, generator)
