"""Losses: pure functions of embeddings and index tuples.

A loss never holds the encoder. Class-labelled batches reach a loss through a miner;
explicit pair batches ``(x1, x2, same)`` through
``embeddings = cat([e1, e2])`` and :func:`siamkit.tuples.pairs_from_pair_batch`.

Every loss returns a scalar with a gradient even when there is nothing to learn from
(no valid pair or triplet): then it is ``0 * embeddings.sum()``, so ``backward()`` still
works in a training loop.

``reduction``: ``"mean"`` (over all tuples), ``"mean_nonzero"`` (over tuples with a
positive loss, as pytorch-metric-learning's AvgNonZeroReducer), ``"sum"`` or ``"none"``
(the per-tuple losses).

Example:
    >>> import torch
    >>> from siamkit.losses import contrastive_loss
    >>> from siamkit.tuples import pairs_from_pair_batch
    >>> e1, e2 = torch.randn(4, 8), torch.randn(4, 8)
    >>> same = torch.tensor([True, False, True, False])
    >>> loss = contrastive_loss(torch.cat([e1, e2]), pairs_from_pair_batch(same))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distances import BaseDistance, get_distance
from .tuples import Pairs, Triplets, as_same_tensor

__all__ = [
    "contrastive_loss",
    "triplet_loss",
    "binary_pair_loss",
    "multiple_negatives_ranking_loss",
    "normalized_softmax_loss",
    "cosent_loss",
    "angle_loss",
    "angle_similarity",
    "SCORED_PAIR_LOSSES",
    "cosine_similarity_loss",
    "pair_distances",
    "LOSSES",
]

_REDUCTIONS = ("mean", "mean_nonzero", "sum", "none")


def _zero(embeddings: torch.Tensor) -> torch.Tensor:
    return embeddings.sum() * 0.0


def _reduce(per: torch.Tensor, reduction: str, embeddings: torch.Tensor) -> torch.Tensor:
    if reduction == "none":
        return per
    if per.numel() == 0:
        return _zero(embeddings)
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    if reduction == "mean_nonzero":
        nz = per > 0
        return per[nz].mean() if bool(nz.any()) else per.sum() * 0.0
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {_REDUCTIONS}")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {_REDUCTIONS}")


def _check_embeddings(embeddings: torch.Tensor) -> None:
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings)
        raise ValueError(f"embeddings must be a 2-D (N, D) tensor, got {shape}")


def pair_distances(
    embeddings: torch.Tensor, a: torch.Tensor, b: torch.Tensor, distance: BaseDistance
) -> torch.Tensor:
    """Distances ``d(E[a], E[b])`` with gradients, in O(N^2) memory at most.

    Few pairs: gathered row by row (O(P D)). Many pairs (more than 4 per embedding):
    one (N, N) matrix and a gather, which bounds memory by N^2 instead of P x D.

    Args:
        embeddings: the batch.
        a: row index of each pair's first side.
        b: row index of each pair's second side.
        distance: a distance object (see :func:`siamkit.distances.get_distance`).

    Shapes:
        embeddings (N, D), a (P,), b (P,) -> (P,).

    Returns:
        The distances, lower = closer, with gradients.
    """
    if a.numel() > 4 * embeddings.shape[0]:
        return distance.pairwise(embeddings)[a, b]
    return distance.paired(embeddings[a], embeddings[b])


def contrastive_loss(
    embeddings: torch.Tensor,
    pairs: Pairs,
    *,
    distance: str | BaseDistance = "euclidean",
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    power: int = 2,
    reduction: str = "mean",
) -> torch.Tensor:
    """Contrastive loss (Hadsell, Chopra & LeCun 2006).

    Per pair with distance d::

        same:      max(0, d - pos_margin) ** power
        different: max(0, neg_margin - d) ** power

    With the defaults (pos_margin 0, power 2) this is the formula of Hadsell et al. and
    of the classic PyTorch tutorial, ``d^2`` for genuine pairs and ``max(0, m - d)^2``
    for impostors, without the factor 1/2. ``power=1`` gives pytorch-metric-learning's
    ContrastiveLoss.

    Args:
        embeddings: (N, D) batch.
        pairs: indices into the batch; ``pairs.same`` is bool.
        distance: name or object; lower = closer.
        pos_margin, neg_margin: the margins, in the distance's units.
        power: 1 or 2.
        reduction: see the module docstring.

    Shapes:
        embeddings (N, D), pairs of length P -> () (or (P,) with reduction="none").

    Returns:
        scalar (or (P,) with reduction="none").
    """
    _check_embeddings(embeddings)
    _check_reduction(reduction)
    dist = get_distance(distance)
    same = as_same_tensor(pairs.same, name="pairs.same")
    if pairs.a.numel() == 0:
        return _reduce(embeddings.new_zeros(0), reduction, embeddings)
    d = pair_distances(embeddings, pairs.a, pairs.b, dist)
    pos = F.relu(d - pos_margin)
    neg = F.relu(neg_margin - d)
    if power != 1:
        pos, neg = pos**power, neg**power
    per = torch.where(same, pos, neg)
    return _reduce(per, reduction, embeddings)


def triplet_loss(
    embeddings: torch.Tensor,
    triplets: Triplets,
    *,
    distance: str | BaseDistance = "euclidean",
    margin: float = 0.2,
    soft: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Triplet margin loss: ``max(0, d(a, p) - d(a, n) + margin)`` per triplet.

    Args:
        embeddings: (N, D) batch.
        triplets: (anchor, positive, negative) indices into the batch.
        distance: name or object; lower = closer.
        margin: how much farther than the positive the negative must be, in the
            distance's units.
        soft: use ``softplus(d(a, p) - d(a, n))`` instead (Hermans et al. 2017's soft
            margin; ``margin`` is then ignored).
        reduction: see the module docstring.

    Shapes:
        embeddings (N, D), triplets of length T -> () (or (T,) with reduction="none").

    Returns:
        scalar (or (T,) with reduction="none").

    Raises:
        ValueError: ``embeddings`` is not 2-D, or an unknown reduction or distance.
    """
    _check_embeddings(embeddings)
    _check_reduction(reduction)
    dist = get_distance(distance)
    if triplets.anchor.numel() == 0:
        return _reduce(embeddings.new_zeros(0), reduction, embeddings)
    # one paired call for both sides: half the small kernels, forward and backward
    t = triplets.anchor.numel()
    # index_select: its backward is index_add, much cheaper than advanced indexing's
    # accumulating index_put on CPU
    anchors = embeddings.index_select(0, triplets.anchor)
    others = embeddings.index_select(0, torch.cat([triplets.positive, triplets.negative]))
    d = dist.paired(anchors.repeat(2, 1), others)
    d_ap, d_an = d[:t], d[t:]
    per = F.softplus(d_ap - d_an) if soft else F.relu(d_ap - d_an + margin)
    return _reduce(per, reduction, embeddings)


def binary_pair_loss(
    logits: torch.Tensor, same: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """Binary cross-entropy on a pair head's logits (Koch et al. 2015).

    Args:
        logits: the pair head's logit per pair, higher = more likely the same
            (flattened first).
        same: True for genuine pairs.
        reduction: see the module docstring.

    Shapes:
        logits (P,) (higher = more likely the same), same (P,) bool
        -> () (or (P,) with reduction="none").

    Returns:
        scalar (or (P,) with reduction="none").

    Raises:
        ValueError: ``logits`` and ``same`` differ in shape, or an unknown reduction.
        TypeError: ``same`` is not a bool tensor.
    """
    _check_reduction(reduction)
    same = as_same_tensor(same)
    logits = logits.reshape(-1)
    if logits.shape != same.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and same {tuple(same.shape)} differ in shape")
    if logits.numel() == 0:
        return _reduce(logits.new_zeros(0), reduction, logits)
    per = F.binary_cross_entropy_with_logits(logits, same.to(logits.dtype), reduction="none")
    return _reduce(per, reduction, logits)


def multiple_negatives_ranking_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    *,
    scale: float = 20.0,
    labels: torch.Tensor | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """Multiple-negatives ranking loss (InfoNCE with in-batch negatives).

    Row i's positive is ``positives[i]``; every other row of ``positives`` is a negative.
    Similarity is cosine times ``scale`` (sentence-transformers' default of 20).

    Args:
        anchors, positives: (N, D) each.
        scale: the cosine similarities are multiplied by it before the softmax.
        labels: optional (N,) class of each row; other rows of the same class are then
            masked out instead of being treated as negatives (no false negatives).
        symmetric: also rank anchors for each positive, and average.

    Shapes:
        anchors (N, D), positives (N, D), labels (N,) or None -> ().

    Returns:
        The mean cross-entropy, a scalar with gradients (0 for an empty batch).

    Raises:
        ValueError: ``anchors`` or ``positives`` is not 2-D, their shapes differ, or
            ``labels`` is not (N,).
    """
    _check_embeddings(anchors)
    _check_embeddings(positives)
    if anchors.shape != positives.shape:
        raise ValueError(f"anchors {tuple(anchors.shape)} and positives {tuple(positives.shape)} differ in shape")
    n = anchors.shape[0]
    if n == 0:
        return _zero(anchors) + _zero(positives)
    sim = F.normalize(anchors, dim=1) @ F.normalize(positives, dim=1).T * scale
    if labels is not None:
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        same = labels[:, None] == labels[None, :]
        same.fill_diagonal_(False)
        sim = sim.masked_fill(same, float("-inf"))
    target = torch.arange(n, device=anchors.device)
    loss = F.cross_entropy(sim, target)
    if symmetric:
        loss = (loss + F.cross_entropy(sim.T, target)) / 2
    return loss


def normalized_softmax_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    proxies: torch.Tensor,
    *,
    scale: float = 16.0,
    margin: float = 0.0,
) -> torch.Tensor:
    """Cosine-classifier loss over learnt class proxies (NormFace; CosFace with a margin).

    Logit of class c for embedding i: ``scale * (cos(e_i, p_c) - margin * [c == y_i])``,
    then cross-entropy. Every training class is a negative at every step (not only the
    classes in the batch), which is why it pre-trains few-shot encoders well (Wang et
    al. 2018; Chen et al. 2019, "A Closer Look at Few-shot Classification").

    Args:
        embeddings: (N, D).
        labels: (N,) int64 proxy index of each row, in [0, C).
        proxies: (C, D) one learnable vector per class (normalised here).
        scale: logit scale s.
        margin: additive cosine margin m (0 = NormFace).

    Shapes:
        embeddings (N, D), labels (N,), proxies (C, D) -> ().

    Returns:
        The mean cross-entropy, a scalar with gradients to ``embeddings`` and
        ``proxies`` (0 for an empty batch).

    Raises:
        ValueError: ``embeddings`` is not 2-D, ``proxies`` not (C, D), ``labels`` not
            (N,) or outside [0, C).
    """
    _check_embeddings(embeddings)
    if proxies.ndim != 2 or proxies.shape[1] != embeddings.shape[1]:
        raise ValueError(f"proxies must be (C, {embeddings.shape[1]}), got {tuple(proxies.shape)}")
    labels = torch.as_tensor(labels, device=embeddings.device).long()
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(f"labels must have shape ({embeddings.shape[0]},), got {tuple(labels.shape)}")
    if embeddings.shape[0] == 0:
        return _zero(embeddings) + proxies.sum() * 0.0
    if int(labels.min()) < 0 or int(labels.max()) >= proxies.shape[0]:
        raise ValueError(f"labels must index the {proxies.shape[0]} proxies, got values in [{int(labels.min())}, {int(labels.max())}]")
    cos = F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).T
    if margin:
        cos = cos - margin * F.one_hot(labels, proxies.shape[0]).to(cos.dtype)
    return F.cross_entropy(scale * cos, labels)


def _check_scored_pairs(e1: torch.Tensor, e2: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    _check_embeddings(e1)
    if e1.shape != e2.shape:
        raise ValueError(f"e1 {tuple(e1.shape)} and e2 {tuple(e2.shape)} differ in shape")
    scores = torch.as_tensor(scores, device=e1.device)
    if scores.shape != (e1.shape[0],):
        raise ValueError(f"scores must have shape ({e1.shape[0]},), got {tuple(scores.shape)}")
    return scores.to(e1.dtype)


def _ranked_pair_loss(sim: torch.Tensor, scores: torch.Tensor, scale: float) -> torch.Tensor:
    """``log(1 + sum over (i, j) with scores[i] > scores[j] of exp(scale * (sim[j] - sim[i])))``."""
    diff = scale * (sim[None, :] - sim[:, None])  # [i, j] = s * (sim_j - sim_i)
    higher = scores[:, None] > scores[None, :]
    diff = diff.masked_fill(~higher, float("-inf"))
    zero = torch.zeros(1, dtype=sim.dtype, device=sim.device)
    return torch.logsumexp(torch.cat([zero, diff.flatten()]), dim=0)


def cosent_loss(e1: torch.Tensor, e2: torch.Tensor, scores: torch.Tensor, *, scale: float = 20.0) -> torch.Tensor:
    """CoSENT (Su 2022): every pair scored higher must have the higher cosine.

    ``log(1 + sum_{(i, j): score_i > score_j} exp(scale * (cos_j - cos_i)))`` over the
    batch's pairs; only the order of the scores matters, not their scale.

    Args:
        e1: the first embedding of each pair.
        e2: the second embedding of each pair.
        scores: the graded similarity of each pair (any scale; higher = more similar).
        scale: the inverse temperature (20 in the paper and sentence-transformers).

    Shapes:
        e1 (N, D), e2 (N, D), scores (N,) -> ().

    Returns:
        The loss (0 with a gradient when no two scores differ).

    Raises:
        ValueError: shapes that do not match.
    """
    scores = _check_scored_pairs(e1, e2, scores)
    if e1.shape[0] == 0:
        return _zero(e1) + _zero(e2)
    return _ranked_pair_loss(F.cosine_similarity(e1, e2, dim=1), scores, scale)


def angle_similarity(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """AnglE's angle similarity: each embedding's halves are the real and imaginary parts
    of complex vectors; the (absolute) sum of the normalised complex quotient e1 / e2.

    Args:
        e1: first embeddings (D even).
        e2: second embeddings.

    Shapes:
        e1 (N, D), e2 (N, D) -> (N,).

    Returns:
        The similarity per pair (higher = closer in angle).
    """
    if e1.shape[1] % 2:
        raise ValueError(f"AnglE needs an even embedding size, got {e1.shape[1]}")
    a, b = torch.chunk(e1, 2, dim=1)
    c, d = torch.chunk(e2, 2, dim=1)
    z = (c**2 + d**2).sum(dim=1, keepdim=True)
    re = (a * c + b * d) / z
    im = (b * c - a * d) / z
    ratio = (a**2 + b**2).sum(dim=1, keepdim=True).sqrt() / z.sqrt()
    return (torch.cat([re, im], dim=1) / ratio).sum(dim=1).abs()


def angle_loss(e1: torch.Tensor, e2: torch.Tensor, scores: torch.Tensor, *, scale: float = 20.0) -> torch.Tensor:
    """AnglE (Li and Li 2023): CoSENT's ranking objective on :func:`angle_similarity`
    instead of the cosine (its gradient does not vanish where the cosine saturates).

    Args:
        e1: the first embedding of each pair (D even).
        e2: the second embedding of each pair.
        scores: the graded similarity of each pair (higher = more similar).
        scale: the inverse temperature.

    Shapes:
        e1 (N, D), e2 (N, D), scores (N,) -> ().

    Returns:
        The loss (0 with a gradient when no two scores differ).
    """
    scores = _check_scored_pairs(e1, e2, scores)
    if e1.shape[0] == 0:
        return _zero(e1) + _zero(e2)
    return _ranked_pair_loss(angle_similarity(e1, e2), scores, scale)


def cosine_similarity_loss(e1: torch.Tensor, e2: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Cosine-similarity regression: the mean squared error between each pair's cosine
    and its score (scores in [-1, 1], usually the graded score scaled to [0, 1]).

    Args:
        e1: the first embedding of each pair.
        e2: the second embedding of each pair.
        scores: the target cosine of each pair.

    Shapes:
        e1 (N, D), e2 (N, D), scores (N,) -> ().

    Returns:
        The mean squared error (0 with a gradient for an empty batch).
    """
    scores = _check_scored_pairs(e1, e2, scores)
    if e1.shape[0] == 0:
        return _zero(e1) + _zero(e2)
    return F.mse_loss(F.cosine_similarity(e1, e2, dim=1), scores)


LOSSES = ("contrastive", "triplet", "binary", "mnr", "normsoftmax")
#: losses of pairs with a graded score (text twins)
SCORED_PAIR_LOSSES = ("cosent", "angle", "cosine")
