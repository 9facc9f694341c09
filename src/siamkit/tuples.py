"""Pair and triplet index tuples: the ONLY place siamkit builds them.

A batch of embeddings ``E`` (N, D) plus index tuples is what every loss takes:

- :class:`Pairs` ``(a, b, same)``: rows ``E[a]`` and ``E[b]``, ``same`` is a bool tensor
  (True = same class/identity). Booleans on purpose: papers and libraries disagree on
  whether label 1 means "same" or "different".
- :class:`Triplets` ``(anchor, positive, negative)``.

A batch of explicit pairs ``(x1, x2, same)`` reaches the same losses as
``embeddings = cat([e1, e2])`` with :func:`pairs_from_pair_batch`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "Pairs",
    "Triplets",
    "as_same_tensor",
    "class_masks",
    "all_pairs",
    "pairs_from_pair_batch",
    "check_labels",
]


class Pairs(NamedTuple):
    """Index pairs into an embedding batch. Shapes: a (P,), b (P,), same (P,) bool."""

    a: torch.Tensor
    b: torch.Tensor
    same: torch.Tensor

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.a.numel())

    @property
    def num_positive(self) -> int:
        return int(self.same.sum())

    @property
    def num_negative(self) -> int:
        return int((~self.same).sum())


class Triplets(NamedTuple):
    """Index triplets into an embedding batch. Shapes: each (T,), int64."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.anchor.numel())


def as_same_tensor(same: torch.Tensor, *, name: str = "same") -> torch.Tensor:
    """Validate a "same" indicator: it must be a bool tensor (True = same identity).

    Integer 0/1 labels are refused on purpose, because the meaning of 1 differs between
    papers (Hadsell et al.: 1 = dissimilar) and libraries (1 = similar).
    """
    if not isinstance(same, torch.Tensor):
        same = torch.as_tensor(same)
    if same.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a bool tensor (True = same identity), got dtype {same.dtype}; "
            f"convert explicitly, e.g. `{name} = labels == 1` if 1 means 'same' in your data"
        )
    return same


def check_labels(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Validate class labels for ``n`` embeddings: 1-D integer tensor of length n."""
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() != n:
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    return labels


def class_masks(
    labels: torch.Tensor, ref_labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative masks between a batch and itself (or a reference set).

    Returns:
        pos (N, M) bool: same label, excluding the diagonal when ref_labels is None.
        neg (N, M) bool: different label.
    """
    ref = labels if ref_labels is None else ref_labels
    same = labels[:, None] == ref[None, :]
    neg = ~same
    if ref_labels is None:
        same.fill_diagonal_(False)
    return same, neg


def all_pairs(labels: torch.Tensor) -> Pairs:
    """Every unordered pair i < j of a labelled batch. O(N^2) indices.

    Shapes: labels (N,) -> Pairs with P = N (N - 1) / 2.
    """
    n = labels.numel()
    a, b = torch.triu_indices(n, n, offset=1, device=labels.device)
    return Pairs(a, b, labels[a] == labels[b])


def pairs_from_pair_batch(same: torch.Tensor) -> Pairs:
    """Indices for ``embeddings = cat([e1, e2])`` of a batch of N explicit pairs.

    Shapes: same (N,) bool -> Pairs(a = 0..N-1, b = N..2N-1, same).
    """
    same = as_same_tensor(same)
    n = same.numel()
    idx = torch.arange(n, device=same.device)
    return Pairs(idx, idx + n, same)
