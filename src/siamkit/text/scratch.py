"""Initialising a from-scratch text twin's token embedding from its training texts.

``embedding_init = "idf"``: every word's embedding row is a random Gaussian vector scaled
by the word's inverse document frequency over the training sentences (scikit-learn's
smooth idf, ``log((1 + n) / (1 + df)) + 1``, divided by its mean over the vocabulary).
The masked mean of such rows is a random projection of the sentence's TF-IDF vector, so
before any training the cosine of two mean-pooled sentences approximates their TF-IDF
cosine (Johnson-Lindenstrauss): the twin starts from lexical overlap, weighted by how
rare a word is, and training moves it from there. Nothing pretrained: the statistics are
the training texts' own, computed when the twin is built.

An LSA initialisation (rows of a TruncatedSVD of the same term matrix) was tried and
dropped: its mean-pooled cosine scored far below TF-IDF cosine on STS-B (the SVD keeps
topics and loses the exact word matches STS pairs share; ``bench/bench_text.py`` measures
it beside TF-IDF).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..word_ids import word_ids
from .tokenizer import WordTokenizer

__all__ = ["EMBEDDING_INITS", "token_idf", "idf_embedding", "init_token_embedding"]

EMBEDDING_INITS = ("random", "idf")


def token_idf(tokenizer: WordTokenizer, texts: Sequence[str]) -> np.ndarray:
    """The smooth inverse document frequency of every vocabulary id over ``texts``.

    Padding (id 0) gets 0; the unknown word (1) and the leading ``[CLS]`` (2) get the
    smallest word idf (an unknown word carries no identity to match on); the hash buckets
    of unseen words (seen in no training text) the largest.

    Args:
        tokenizer: a fitted word tokenizer.
        texts: the training texts (one document each).

    Returns:
        (vocab_size,) float64 idf values.
    """
    n = len(texts)
    df = np.zeros(tokenizer.vocab_size, dtype=np.float64)
    for ids in word_ids(texts, tokenizer.vocab_, max_length=1 << 30, hash_buckets=tokenizer.hash_buckets):
        df[list(set(ids))] += 1
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    floor = idf[3:].min() if tokenizer.vocab_size > 3 else 1.0
    idf[0], idf[1], idf[2] = 0.0, floor, floor
    return idf


def idf_embedding(idf: np.ndarray, dim: int, *, seed: int = 0) -> torch.Tensor:
    """Random Gaussian rows scaled by ``idf / mean(idf)`` (row 0, padding, stays zero).

    Args:
        idf: (V,) weights from :func:`token_idf`.
        dim: the embedding width.
        seed: the random rows' seed.

    Shapes:
        idf (V,) -> (V, dim).

    Returns:
        The float32 embedding table.
    """
    gen = torch.Generator().manual_seed(seed)
    w = torch.as_tensor(idf, dtype=torch.float32)
    scale = w / w[3:].mean().clamp_min(1e-6) if len(w) > 3 else w
    return torch.randn(len(w), dim, generator=gen) * scale[:, None]


def init_token_embedding(encoder: nn.Module, table: torch.Tensor) -> None:
    """Copy ``table`` into a sequence encoder's token embedding (its ``inp`` layer).

    Args:
        encoder: an ``rnn`` / ``transformer_seq`` encoder on token ids.
        table: (vocab_size, width) rows.

    Raises:
        ValueError: the encoder has no token embedding of that shape.
    """
    emb = getattr(encoder, "inp", None)
    if not isinstance(emb, nn.Embedding) or tuple(emb.weight.shape) != tuple(table.shape):
        raise ValueError(f"the encoder has no token embedding of shape {tuple(table.shape)}")
    with torch.no_grad():
        emb.weight.copy_(table)
