"""A cross-batch memory (XBM, Wang et al., CVPR 2020): mine against past batches too.

:class:`CrossBatchMemory` is a FIFO ring buffer of detached embeddings and their labels
(preallocated once, ``size`` rows; the oldest rows are overwritten). With it the loss of
a batch takes the batch's rows as anchors (with gradients) and the batch plus the memory
as candidates: a batch of 512 mines its positives and negatives among 16k embeddings of
earlier steps, which slowly drift, so the paper starts using the memory after a warm-up
(``start_after`` steps).

:func:`memory_loss` is the loss of :mod:`siamkit.losses` (triplet, contrastive) with the
tuples of :mod:`siamkit.miners` (batch-hard, semi-hard, hard pairs, all pairs) between the
``B`` anchors and the ``B + M`` candidates. Every (B, B + M) matrix is computed in blocks
of anchor rows (``chunk_elements`` values each), so time and memory are O(B x (B + M))
and peak memory O(chunk), never (B + M)^2:

- triplet miners select their triplets block by block under ``torch.no_grad``; the
  triplet loss then recomputes the selected distances with gradients;
- pair miners (contrastive loss) select and sum the pair losses block by block, each
  block under activation checkpointing (recomputed in the backward pass), so the
  backward never holds more than one block either.

With an empty memory both equal the plain batch loss (the miner's pairs i < j, the
miner's triplets), which the tests check, as they check everything against a slow loop.

Under torch.distributed the training loop hands :func:`memory_loss` and
:meth:`CrossBatchMemory.enqueue` the GLOBAL batch (gathered from every rank in rank
order), so every rank enqueues the same rows in the same order and holds the identical
memory (pytorch-metric-learning's CrossBatchMemory enqueues each rank's own rows, so its
memories diverge: their issue #639).

Example:
    >>> import torch
    >>> from siamkit.memory import CrossBatchMemory, memory_loss
    >>> from siamkit.miners import BatchHardMiner
    >>> mem = CrossBatchMemory(size=64)
    >>> e, y = torch.randn(8, 4, requires_grad=True), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    >>> loss = memory_loss(e, y, mem, BatchHardMiner(), loss="triplet")
    >>> _ = mem.enqueue(e, y)
    >>> mem.filled_
    8
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .distances import BaseDistance, get_distance
from .errors import DataError, SiamkitError
from .losses import triplet_loss
from .miners import AllPairsMiner, BaseMiner, BatchHardMiner, HardPairMiner, SemiHardMiner
from .mining_kernels import batch_hard_rows, row_ranking, same_class_entries, semi_hard_rows
from .tuples import Triplets, check_labels

__all__ = ["CrossBatchMemory", "memory_loss", "memory_triplets", "MEMORY_LOSSES"]

#: the losses a memory works with (anchors x candidates through a miner)
MEMORY_LOSSES = ("triplet", "contrastive")

#: values per block of the (B, B + M) matrix: 64 MB of float32
_CHUNK_ELEMENTS = 1 << 24


class CrossBatchMemory:
    """A FIFO ring buffer of detached embeddings and labels (the XBM memory).

    Args:
        size: rows the memory holds (e.g. 16384); the buffer is allocated once, at the
            first :meth:`enqueue` (its embedding size, dtype and device are the batch's).
        start_after: training steps (calls of :meth:`step`) before the memory is used and
            filled (the paper's warm-up: early embeddings drift too fast to be useful).

    Attributes:
        embeddings_: (size, D) buffer, or None before the first enqueue.
        labels_: (size,) int64 buffer, or None before the first enqueue.
        filled_: rows holding data (at most ``size``).
        next_: the row the next enqueue writes first (the oldest row once full).
        steps_: steps counted by :meth:`step`.

    Raises:
        SiamkitError: ``size`` < 1 or ``start_after`` < 0 (or not integers).
    """

    def __init__(self, *, size: int, start_after: int = 0) -> None:
        for what, value, low in (("size", size, 1), ("start_after", start_after, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SiamkitError(f"the cross-batch memory {what} must be an integer >= {low}, got {value!r}")
        self.size = size
        self.start_after = start_after
        self.embeddings_: torch.Tensor | None = None
        self.labels_: torch.Tensor | None = None
        self.filled_ = 0
        self.next_ = 0
        self.steps_ = 0

    @property
    def active(self) -> bool:
        """True once the warm-up is over (``steps_ >= start_after``)."""
        return self.steps_ >= self.start_after

    def step(self) -> None:
        """Count one training step (the warm-up's clock)."""
        self.steps_ += 1

    def reset(self) -> None:
        """Forget every row (the buffer stays allocated) and restart the warm-up."""
        self.filled_ = self.next_ = self.steps_ = 0

    def contents(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The rows that hold data (views of the buffer, in buffer order).

        Returns:
            ``(embeddings (filled, D), labels (filled,))``; ``(None, None)`` before the
            first enqueue.
        """
        if self.embeddings_ is None or self.labels_ is None:
            return None, None
        return self.embeddings_[: self.filled_], self.labels_[: self.filled_]

    def enqueue(self, embeddings: torch.Tensor, labels: torch.Tensor) -> CrossBatchMemory:
        """Append a batch (detached), overwriting the oldest rows once full.

        A batch larger than the memory leaves its last ``size`` rows.

        Args:
            embeddings: the batch's embeddings (under torch.distributed: the global batch).
            labels: their integer classes.

        Shapes:
            embeddings (B, D), labels (B,).

        Returns:
            self.

        Raises:
            DataError: the batch is not 2-D, its labels do not match it, or its
                embedding size differs from the memory's.
        """
        e, y = _check_batch(embeddings, labels)
        if self.embeddings_ is None or self.labels_ is None:
            self.embeddings_ = e.new_empty((self.size, e.shape[1]))
            self.labels_ = torch.empty(self.size, dtype=torch.long, device=e.device)
        elif e.shape[1] != self.embeddings_.shape[1]:
            raise DataError(f"the memory holds {self.embeddings_.shape[1]}-d embeddings, got a batch of {e.shape[1]}-d")
        if e.shape[0] >= self.size:
            e, y = e[-self.size :], y[-self.size :]
        b = e.shape[0]
        head = min(b, self.size - self.next_)  # rows up to the buffer's end, then wrap to its start
        with torch.no_grad():
            self.embeddings_[self.next_ : self.next_ + head] = e[:head]
            self.labels_[self.next_ : self.next_ + head] = y[:head]
            self.embeddings_[: b - head] = e[head:]
            self.labels_[: b - head] = y[head:]
        self.next_ = (self.next_ + b) % self.size
        self.filled_ = min(self.size, self.filled_ + b)
        return self

    def __repr__(self) -> str:
        return f"CrossBatchMemory(size={self.size}, start_after={self.start_after}, filled_={self.filled_})"


def _check_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
        raise DataError(f"the memory takes (B, D) embeddings, got {shape}")
    try:
        y = check_labels(labels, embeddings.shape[0])
    except (TypeError, ValueError) as err:
        raise DataError(f"the memory's labels: {err}") from None
    return embeddings.detach(), y.long()


def _candidates(
    embeddings: torch.Tensor, labels: torch.Tensor, memory: CrossBatchMemory | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch (with gradients) followed by the memory's rows (detached)."""
    e, y = _check_batch(embeddings, labels)
    mem_e, mem_y = (None, None) if memory is None else memory.contents()
    if mem_e is None or mem_y is None or mem_e.shape[0] == 0:
        return embeddings, y
    if mem_e.shape[1] != e.shape[1]:
        raise DataError(f"the memory holds {mem_e.shape[1]}-d embeddings, the batch {e.shape[1]}-d")
    return torch.cat([embeddings, mem_e.to(embeddings.dtype)]), torch.cat([y, mem_y])


def _blocks(b: int, n: int, chunk_elements: int) -> list[tuple[int, int]]:
    rows = max(1, chunk_elements // max(1, n))
    return [(s, min(b, s + rows)) for s in range(0, b, rows)]


def memory_triplets(
    miner: BaseMiner,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    n_anchors: int,
    *,
    chunk_elements: int = _CHUNK_ELEMENTS,
) -> Triplets:
    """A triplet miner's triplets with the first ``n_anchors`` rows as anchors and every
    row as positive / negative candidate, block by block (no gradients).

    Args:
        miner: a :class:`~siamkit.miners.BatchHardMiner` or :class:`~siamkit.miners.SemiHardMiner`.
        candidates: the batch, then the memory.
        labels: their classes.
        n_anchors: B, the batch's rows (the anchors).
        chunk_elements: values per block of the (B, N) distance matrix.

    Shapes:
        candidates (N, D), labels (N,) -> Triplets of indices into the N rows, anchors < B.

    Returns:
        The triplets (empty when no anchor has a positive and a negative).

    Raises:
        SiamkitError: the miner is not a triplet miner.
    """
    if not isinstance(miner, (BatchHardMiner, SemiHardMiner)):
        raise SiamkitError(f"a cross-batch memory's triplet loss needs batch_hard or semi_hard, got {miner.name!r}")
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        x = candidates.detach()
        order = torch.argsort(labels, stable=True)
        sorted_labels = labels[order]
        cand_sq = (x * x).sum(1)
        for r0, r1 in _blocks(n_anchors, x.shape[0], chunk_elements):
            d = row_ranking(x[r0:r1], x, miner.distance, cand_sq)
            rows, cols, counts = same_class_entries(labels, r0, r1, order, sorted_labels)
            if isinstance(miner, BatchHardMiner):
                parts.append(batch_hard_rows(d, rows, cols, counts, r0))
            else:
                parts.append(semi_hard_rows(d, rows, cols, counts, r0, chunk_elements))
    if not parts:
        e = torch.empty(0, dtype=torch.long, device=candidates.device)
        return Triplets(e, e, e)
    a, p, n = (torch.cat(t) for t in zip(*parts))
    return Triplets(a, p, n)


def _pair_block_sum(
    rows: torch.Tensor,
    candidates: torch.Tensor,
    keep: torch.Tensor,
    same: torch.Tensor,
    distance: BaseDistance,
    pos_margin: float,
    neg_margin: float,
) -> torch.Tensor:
    """The summed contrastive loss (power 2) of a block's selected pairs."""
    d = distance.pairwise(rows, candidates)
    per = torch.where(same, F.relu(d - pos_margin) ** 2, F.relu(neg_margin - d) ** 2)
    return torch.where(keep, per, torch.zeros((), dtype=per.dtype, device=per.device)).sum()


def _pair_keep(
    miner: BaseMiner, rows: torch.Tensor, candidates: torch.Tensor, same: torch.Tensor, r0: int, b: int
) -> torch.Tensor:
    """The pairs a pair miner selects in a block: batch pairs i < j (as the miner's),
    every (anchor, memory row) pair; hard pairs must also break their margin."""
    n_rows = rows.shape[0]
    col = torch.arange(candidates.shape[0], device=rows.device)
    keep = (col[None, :] > (r0 + torch.arange(n_rows, device=rows.device))[:, None]) | (col[None, :] >= b)
    if isinstance(miner, HardPairMiner):
        d = miner.distance.pairwise(rows, candidates)
        keep &= (same & (d > miner.pos_margin)) | (~same & (d < miner.neg_margin))
    return keep


def _contrastive_memory_loss(
    miner: BaseMiner,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    b: int,
    *,
    distance: BaseDistance,
    pos_margin: float,
    neg_margin: float,
    chunk_elements: int,
) -> torch.Tensor:
    """Mean contrastive loss over the pair miner's pairs, block by block, each block's
    graph recomputed in the backward pass (checkpointing): peak memory O(one block)."""
    if not isinstance(miner, (AllPairsMiner, HardPairMiner)):
        raise SiamkitError(f"a cross-batch memory's contrastive loss needs all_pairs or hard_pairs, got {miner.name!r}")
    total, count = candidates.sum() * 0.0, 0
    x = candidates.detach()
    for r0, r1 in _blocks(b, candidates.shape[0], chunk_elements):
        with torch.no_grad():
            same = labels[r0:r1, None] == labels[None, :]
            keep = _pair_keep(miner, x[r0:r1], x, same, r0, b)
        k = int(keep.sum())
        if k == 0:
            continue
        count += k
        if torch.is_grad_enabled() and candidates.requires_grad:
            part = checkpoint(_pair_block_sum, candidates[r0:r1], candidates, keep, same, distance, pos_margin,
                              neg_margin, use_reentrant=False)
        else:
            part = _pair_block_sum(candidates[r0:r1], candidates, keep, same, distance, pos_margin, neg_margin)
        total = total + part
    return total / count if count else total


def memory_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    memory: CrossBatchMemory | None,
    miner: BaseMiner,
    *,
    loss: str = "triplet",
    distance: str | BaseDistance = "euclidean",
    margin: float = 0.2,
    pos_margin: float = 0.0,
    chunk_elements: int = _CHUNK_ELEMENTS,
) -> torch.Tensor:
    """The loss of a batch whose anchors are its rows and whose candidates are its rows
    plus the memory's (the memory is read, not changed: :meth:`CrossBatchMemory.enqueue`
    the batch afterwards).

    ``triplet``: :func:`~siamkit.losses.triplet_loss` (mean, ``margin``) over the triplet
    miner's triplets; ``contrastive``: :func:`~siamkit.losses.contrastive_loss`'s per-pair
    loss (power 2, ``pos_margin``, negative margin ``margin``), mean over the pair
    miner's pairs. With an empty (or no) memory, the plain batch loss.

    Args:
        embeddings: the batch (with gradients; under torch.distributed the global batch).
        labels: the batch's classes.
        memory: the memory (None or empty: the batch alone).
        miner: the miner (batch_hard / semi_hard for triplet, all_pairs / hard_pairs for
            contrastive); it ranks with its own distance.
        loss: ``triplet`` or ``contrastive``.
        distance: the loss's distance.
        margin: the triplet margin, or the contrastive negative margin.
        pos_margin: the contrastive positive margin.
        chunk_elements: values per block of the (B, B + M) matrices.

    Shapes:
        embeddings (B, D), labels (B,), memory (M, D) -> scalar.

    Returns:
        The loss, with gradients to ``embeddings`` only (0 with a gradient when nothing
        is selected).

    Raises:
        SiamkitError: an unknown loss, or a miner that does not fit it.
        DataError: the embeddings, labels or memory do not fit together.
    """
    if loss not in MEMORY_LOSSES:
        raise SiamkitError(f"a cross-batch memory works with the {' or '.join(MEMORY_LOSSES)} loss, not {loss!r}")
    if chunk_elements < 1:
        raise SiamkitError(f"chunk_elements must be >= 1, got {chunk_elements}")
    candidates, y = _candidates(embeddings, labels, memory)
    b, dist = embeddings.shape[0], get_distance(distance)
    if loss == "triplet":
        triplets = memory_triplets(miner, candidates, y, b, chunk_elements=chunk_elements)
        return triplet_loss(candidates, triplets, distance=dist, margin=margin)
    return _contrastive_memory_loss(miner, candidates, y, b, distance=dist, pos_margin=pos_margin, neg_margin=margin,
                                    chunk_elements=chunk_elements)
