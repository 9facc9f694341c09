"""Matryoshka embeddings: one embedding whose prefixes are each trained to work.

Kusupati et al. 2022 (Matryoshka Representation Learning): the loss is summed over the
prefixes ``e[:, :d]`` of a list of sizes (each prefix re-normalised when the network
L2-normalises its embeddings), so the first 16 values of a 128-value embedding are a
usable 16-value embedding. A model trained that way records its sizes
(``SiameseNetwork.matryoshka_dims``) and every consumer can take a size (``dim=``).

The rule for sizes (:func:`resolve_dim`):

- a Matryoshka model takes the sizes it was trained for (and its full size); any other
  size is refused with :class:`~siamkit.errors.EmbeddingSizeError` naming the trained
  ones (a prefix that was never trained is not guaranteed to work);
- a plain model takes any prefix 1..D with a warning (truncating a model that was not
  trained for it loses accuracy: ``bench/bench_matryoshka.py`` measures how much);
- a size outside 1..D is always refused.

This module is torch + errors only, so the network and every consumer can use it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import EmbeddingSizeError

__all__ = [
    "check_dims",
    "matryoshka_loss",
    "parse_dims",
    "prefix",
    "resolve_dim",
    "TruncationWarning",
]


class TruncationWarning(UserWarning):
    """A plain (non-Matryoshka) model's embeddings were truncated to a prefix."""


def parse_dims(text: str) -> tuple[int, ...]:
    """``"16,32,64"`` -> ``(16, 32, 64)`` (the CLI's ``--dims`` / ``--matryoshka-dims``).

    Args:
        text: comma-separated positive integers.

    Returns:
        The sizes, in the order given.

    Raises:
        EmbeddingSizeError: an empty list or a value that is not a positive integer.
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise EmbeddingSizeError(f"no embedding sizes in {text!r}; give e.g. 16,32,64,128")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise EmbeddingSizeError(f"embedding sizes must be integers, got {text!r}") from None
    if any(d < 1 for d in dims):
        raise EmbeddingSizeError(f"embedding sizes must be >= 1, got {text!r}")
    return dims


def check_dims(dims: Sequence[int], full: int | None = None) -> tuple[int, ...]:
    """Validate a Matryoshka size list: positive, strictly increasing, ending at the full size.

    Args:
        dims: the nested sizes, e.g. (16, 32, 64, 128).
        full: the embedding size (None: not known yet, only the order is checked).

    Returns:
        The sizes as a tuple of ints.

    Raises:
        EmbeddingSizeError: empty, not increasing, a size < 1, or the largest is not ``full``.
    """
    try:
        out = tuple(int(d) for d in dims)
    except (TypeError, ValueError):
        raise EmbeddingSizeError(f"matryoshka_dims must be integers, got {dims!r}") from None
    if not out:
        raise EmbeddingSizeError("matryoshka_dims is empty; give e.g. (16, 32, 64, 128) or None")
    if out[0] < 1 or any(b <= a for a, b in zip(out, out[1:])):
        raise EmbeddingSizeError(f"matryoshka_dims must be positive and strictly increasing, got {list(out)}")
    if full is not None and out[-1] != full:
        raise EmbeddingSizeError(
            f"matryoshka_dims must end at the embedding size {full} (the full embedding is one of the "
            f"trained sizes), got {list(out)}: add {full} or set the embedding size to {out[-1]}"
        )
    return out


def resolve_dim(dim: int | None, full: int, trained: Sequence[int] | None) -> int:
    """The prefix size to use, by the module's rule (see the module docstring).

    Args:
        dim: the size asked for (None: the full size).
        full: the model's embedding size.
        trained: the model's Matryoshka sizes (None: a plain model).

    Returns:
        The size, 1..full.

    Raises:
        EmbeddingSizeError: outside 1..full, or a size a Matryoshka model was not trained for.
    """
    if dim is None:
        return full
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise EmbeddingSizeError(f"an embedding size is an integer, got {dim!r}")
    if not 1 <= dim <= full:
        raise EmbeddingSizeError(f"embedding size {dim} is outside 1..{full} (this model's embeddings have {full} values)")
    if dim == full:
        return dim
    if trained:
        if dim not in trained:
            raise EmbeddingSizeError(
                f"this model was trained for the embedding sizes {list(trained)}, not {dim}: choose one of them"
            )
        return dim
    warnings.warn(
        f"this model was not trained for truncated embeddings (no matryoshka_dims): its first {dim} of "
        f"{full} values may work poorly; train with --matryoshka-dims for sizes that work",
        TruncationWarning,
        stacklevel=3,
    )
    return dim


def prefix(embeddings: torch.Tensor, dim: int, *, normalize: bool) -> torch.Tensor:
    """The first ``dim`` values of every embedding, re-normalised when ``normalize``.

    Truncating an L2-normalised embedding and re-normalising it gives the same vector as
    normalising the raw prefix, so stored (normalised) embeddings can be truncated later.

    Args:
        embeddings: the full embeddings.
        dim: the prefix size.
        normalize: L2-normalise each prefix (the network normalises its embeddings).

    Shapes:
        (N, D) -> (N, dim).

    Returns:
        The prefixes (a view when not normalised; with gradients).
    """
    e = embeddings[:, :dim]
    return F.normalize(e, dim=1) if normalize else e


def matryoshka_loss(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    embeddings: torch.Tensor,
    dims: Sequence[int],
    *,
    normalize: bool,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Any loss, summed over the prefixes: ``sum_i w_i * loss_fn(prefix(e, d_i))``.

    Each prefix gets the whole loss, its own mining included (the miner sees the prefix's
    distances), as in Kusupati et al. and sentence-transformers' MatryoshkaLoss.

    Args:
        loss_fn: the loss of one batch's embeddings (any size).
        embeddings: the batch's full embeddings.
        dims: the prefix sizes.
        normalize: re-normalise each prefix (see :func:`prefix`).
        weights: one weight per size (None: 1 each, the paper's choice).

    Shapes:
        embeddings (N, D) -> scalar.

    Returns:
        The weighted sum, with its gradient.

    Raises:
        EmbeddingSizeError: ``weights`` of another length than ``dims``.
    """
    w = [1.0] * len(dims) if weights is None else [float(x) for x in weights]
    if len(w) != len(dims):
        raise EmbeddingSizeError(f"{len(w)} matryoshka weights for {len(dims)} sizes")
    total = embeddings.new_zeros(())
    for d, wd in zip(dims, w):
        if wd:
            total = total + wd * loss_fn(prefix(embeddings, int(d), normalize=normalize))
    return total
