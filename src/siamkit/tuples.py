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
    "random_pairs",
    "subsample_pairs",
    "sample_all_pairs",
]

#: up to this many pairs, :func:`sample_all_pairs` lists them all (exact, O(P) memory)
ENUMERATE_PAIRS = 4_000_000


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

    Args:
        same: the indicator; a list or array is converted with ``torch.as_tensor``.
        name: how the error message names the argument (e.g. ``"pairs.same"``).

    Shapes:
        same (...) -> (...) bool, unchanged (usually (P,), one entry per pair).

    Returns:
        ``same`` as a bool tensor (the same object when it already is one).

    Raises:
        TypeError: the dtype is not bool.
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
    """Validate class labels for ``n`` embeddings: 1-D integer tensor of length n.

    Args:
        labels: the class of each embedding; a list or array is converted with
            ``torch.as_tensor``.
        n: the number of embeddings.

    Shapes:
        labels (n,) -> (n,).

    Returns:
        ``labels`` as a tensor, values and dtype unchanged.

    Raises:
        ValueError: ``labels`` is not of shape (n,).
        TypeError: ``labels`` is floating-point or bool.
    """
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

    Args:
        labels: the class of each row of the batch.
        ref_labels: the class of each reference row; None compares the batch with itself.

    Shapes:
        labels (N,), ref_labels (M,) or None (then M = N) -> two (N, M) bool masks.

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


def random_pairs(labels: torch.Tensor, n: int, generator: torch.Generator, *, same_fraction: float = 0.5) -> Pairs:
    """``n`` random pairs of a labelled set: ``round(n * same_fraction)`` genuine pairs
    (two *different* samples of one class, drawn among classes with >= 2 samples), the
    rest impostor pairs (two different classes). O(n) time and memory.

    With no class of 2 samples every pair is an impostor; with a single class every pair
    is genuine.

    Args:
        labels: class of every sample (any integer ids).
        n: number of pairs.
        generator: the source of randomness.
        same_fraction: share of genuine pairs.

    Shapes:
        labels (N,) -> Pairs of length n (genuine pairs first).

    Returns:
        :class:`Pairs` ``(a, b, same)`` indexing ``labels``.

    Raises:
        ValueError: ``n`` < 0, ``same_fraction`` outside [0, 1], or fewer than 2 samples.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= same_fraction <= 1.0:
        raise ValueError(f"same_fraction must be in [0, 1], got {same_fraction}")
    labels = torch.as_tensor(labels).long().flatten().cpu()
    if labels.numel() < 2:
        raise ValueError(f"pairs need at least 2 samples, got {labels.numel()}")
    _, inv = torch.unique(labels, return_inverse=True)
    order = torch.argsort(inv, stable=True)
    counts = torch.bincount(inv)
    starts = torch.cumsum(counts, 0) - counts
    n_cls = counts.numel()
    multi = (counts >= 2).nonzero(as_tuple=True)[0]
    n_gen = int(round(n * same_fraction)) if len(multi) else 0
    if n_cls < 2:
        n_gen = n
    n_imp = n - n_gen
    # genuine: a class with >= 2 samples, a sample of it, and another sample of it
    c = multi[torch.randint(len(multi), (n_gen,), generator=generator)] if n_gen else counts.new_zeros(0)
    cnt = counts[c]
    i = (torch.rand(n_gen, generator=generator) * cnt).long()
    j = (i + 1 + (torch.rand(n_gen, generator=generator) * (cnt - 1)).long()) % cnt.clamp_min(1)
    ga, gb = order[starts[c] + i], order[starts[c] + j]
    # impostor: a class, another class (shift by 1..n_cls-1), a sample of each
    if n_imp:
        c1 = torch.randint(n_cls, (n_imp,), generator=generator)
        c2 = (c1 + torch.randint(1, n_cls, (n_imp,), generator=generator)) % n_cls
        i1 = (torch.rand(n_imp, generator=generator) * counts[c1]).long()
        i2 = (torch.rand(n_imp, generator=generator) * counts[c2]).long()
        ia, ib = order[starts[c1] + i1], order[starts[c2] + i2]
    else:
        ia = ib = counts.new_zeros(0)
    a, b = torch.cat([ga, ia]), torch.cat([gb, ib])
    return Pairs(a, b, labels[a] == labels[b])


def subsample_pairs(pairs: Pairs, max_pairs: int, generator: torch.Generator) -> Pairs:
    """At most ``max_pairs`` of ``pairs``, keeping genuine pairs when they fit in half:
    ``min(#genuine, max_pairs // 2)`` random genuine pairs and the rest random impostors
    (so rare genuine pairs are not lost to subsampling). Unchanged when it already fits.

    Args:
        pairs: the candidate pairs.
        max_pairs: the most pairs to keep.
        generator: the source of randomness.

    Shapes:
        pairs of length P -> Pairs of length <= min(P, max_pairs).

    Returns:
        The kept pairs (genuine first).
    """
    a, b, same = pairs
    if a.numel() <= max_pairs:
        return pairs
    pos = same.nonzero(as_tuple=True)[0]
    neg = (~same).nonzero(as_tuple=True)[0]
    n_pos = min(pos.numel(), max_pairs // 2)
    pos = pos[torch.randperm(pos.numel(), generator=generator)[:n_pos]]
    neg = neg[torch.randperm(neg.numel(), generator=generator)[: max_pairs - n_pos]]
    keep = torch.cat([pos, neg])
    return Pairs(a[keep], b[keep], same[keep])


def sample_all_pairs(labels: torch.Tensor, max_pairs: int, generator: torch.Generator) -> Pairs:
    """``subsample_pairs(all_pairs(labels), max_pairs, generator)`` without listing every
    pair: memory O(N + max_pairs) instead of O(N^2).

    Up to :data:`ENUMERATE_PAIRS` pairs (or when every pair fits in ``max_pairs``) it is
    exactly that call. Beyond, the same distribution is drawn directly:
    ``min(#genuine, max_pairs // 2)`` genuine pairs uniformly without replacement among all
    genuine pairs i < j, the rest uniformly without replacement among all impostor pairs
    (rejection sampling of index pairs, duplicates dropped).

    Args:
        labels: class of every sample.
        max_pairs: the most pairs to return.
        generator: the source of randomness.

    Shapes:
        labels (N,) -> Pairs of length <= min(N (N - 1) / 2, max_pairs), genuine first.

    Returns:
        :class:`Pairs` with ``a < b``.
    """
    labels = torch.as_tensor(labels).long().flatten().cpu()
    n = labels.numel()
    total = n * (n - 1) // 2
    if total <= max(max_pairs, ENUMERATE_PAIRS):
        return subsample_pairs(all_pairs(labels), max_pairs, generator)
    _, inv = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(inv)
    n_gen_total = int((counts * (counts - 1) // 2).sum())
    n_pos = min(n_gen_total, max_pairs // 2)
    n_neg = min(total - n_gen_total, max_pairs - n_pos)
    order = torch.argsort(inv, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    weights = (counts * (counts - 1)).double()

    def genuine(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = torch.multinomial(weights, m, replacement=True, generator=generator)
        cnt = counts[c]
        i = (torch.rand(m, generator=generator) * cnt).long()
        j = (i + 1 + (torch.rand(m, generator=generator) * (cnt - 1)).long()) % cnt
        return order[starts[c] + i], order[starts[c] + j]

    def impostor(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = torch.randint(n, (m,), generator=generator), torch.randint(n, (m,), generator=generator)
        ok = inv[i] != inv[j]
        return i[ok], j[ok]

    ga, gb = _draw_distinct(genuine, n_pos, n, 1.0, generator)
    ia, ib = _draw_distinct(impostor, n_neg, n, (total - n_gen_total) / total, generator)
    a, b = torch.cat([ga, ia]), torch.cat([gb, ib])
    return Pairs(a, b, labels[a] == labels[b])


def _draw_distinct(draw, k: int, n: int, acceptance: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """``k`` distinct unordered pairs (lo < hi) from i.i.d. draws, in random order."""
    keys = torch.zeros(0, dtype=torch.long)
    while keys.numel() < k:
        want = k - keys.numel()
        m = min(1 << 22, max(1024, int(1.2 * want / max(acceptance, 1e-6))))
        i, j = draw(m)
        keys = torch.unique(torch.cat([keys, torch.minimum(i, j) * n + torch.maximum(i, j)]))
    # the set of distinct keys is exchangeable, so a random k of them is a uniform k-subset
    keys = keys[torch.randperm(keys.numel(), generator=generator)[:k]]
    return keys // n, keys % n
