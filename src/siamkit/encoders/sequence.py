"""Sequence encoders for variable-length input: ``rnn`` (bidirectional GRU / LSTM) and
``transformer_seq`` (a small self-attention encoder).

Two kinds of input, chosen at construction:

- token ids (``vocab_size`` set): (B, L) integers, padding id 0; the mask is ``ids != 0``;
- float feature sequences (``in_features`` set): (B, L, F) floats; a time step whose
  features are all NaN is padding (:func:`siamkit.data.sequences.pad_sequences` pads so),
  or pass ``mask`` (B, L) explicitly.

Padding never changes an embedding: the RNN runs on packed sequences and the
Transformer masks padded keys and pools over real steps only.

Two options for small text data sets (token ids only): ``bag=True`` adds the masked mean
of the token embeddings themselves to the pooled vector (a bag-of-embeddings residual
beside the recurrent / attention path, so a word's identity reaches the embedding even
when the sequence model blurs it), and ``token_dropout`` replaces that fraction of the real
tokens of every sequence by the unknown-word id 1 while training (word dropout; never the
first token).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..errors import DataError
from ._registry import register_encoder

__all__ = ["RNNEncoder", "TransformerSeqEncoder", "sequence_mask"]


def sequence_mask(x: torch.Tensor, *, tokens: bool) -> torch.Tensor:
    """Which steps are real: ids != 0, or feature rows that are not all NaN.

    Args:
        x: (B, L) ids or (B, L, F) features.
        tokens: ``x`` holds token ids.

    Shapes:
        x (B, L) or (B, L, F) -> (B, L) bool.

    Returns:
        The mask.
    """
    return x != 0 if tokens else ~torch.isnan(x).all(dim=-1)


class _SequenceInput(nn.Module):
    """Token embedding or a linear map of features, plus the input checks."""

    def _make_input(self, vocab_size: int | None, in_features: int | None, width: int, *, bag: bool = False,
                    token_dropout: float = 0.0) -> None:
        if (vocab_size is None) == (in_features is None):
            raise ValueError("give exactly one of vocab_size (token ids) or in_features (float sequences)")
        if (bag or token_dropout) and vocab_size is None:
            raise ValueError("bag and token_dropout are for token ids (vocab_size)")
        if not 0.0 <= token_dropout < 1.0:
            raise ValueError(f"token_dropout must be in [0, 1), got {token_dropout}")
        self.bag, self.token_dropout = bool(bag), float(token_dropout)
        self.tokens = vocab_size is not None
        if self.tokens:
            self.inp: nn.Module = nn.Embedding(int(vocab_size), width, padding_idx=0)  # type: ignore[arg-type]
        else:
            self.inp = nn.Linear(int(in_features), width)  # type: ignore[arg-type]
        self.in_features = in_features

    def _embed_input(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        name = type(self).__name__
        if self.tokens:
            if x.ndim != 2 or x.dtype not in (torch.int64, torch.int32):
                raise DataError(f"{name} takes (B, L) integer token ids, got {tuple(x.shape)} {x.dtype}")
            m = sequence_mask(x, tokens=True) if mask is None else mask.bool()
            if self.training and self.token_dropout > 0:
                drop = (torch.rand(m.shape, device=m.device) < self.token_dropout) & m
                drop[:, 0] = False
                x = x.masked_fill(drop, 1)  # a dropped word becomes the unknown word (id 1)
            return self.inp(x.long()), m
        if x.ndim != 3 or x.shape[-1] != self.in_features or not x.is_floating_point():
            raise DataError(f"{name} takes (B, L, {self.in_features}) float sequences, got {tuple(x.shape)} {x.dtype}")
        m = sequence_mask(x, tokens=False) if mask is None else mask.bool()
        return self.inp(torch.nan_to_num(x, nan=0.0)), m

    def _make_bag(self, width: int, pooled: int) -> None:
        """The bag-of-embeddings residual's map to the pooled size (identity when equal)."""
        self.bag_proj: nn.Module | None = None
        if self.bag:
            self.bag_proj = nn.Identity() if width == pooled else nn.Linear(width, pooled, bias=False)

    def _add_bag(self, pooled: torch.Tensor, h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """``pooled`` + the masked mean of the token embeddings ``h`` (when ``bag``)."""
        if self.bag_proj is None:
            return pooled
        return pooled + self.bag_proj(_pool(h, m, "mean"))


@register_encoder("rnn")
class RNNEncoder(_SequenceInput):
    """A (bidirectional) GRU or LSTM over a padded batch, pooled to one vector.

    Args:
        vocab_size: token ids in [0, vocab_size) (0 = padding); or None with ``in_features``.
        in_features: features per time step of float sequences; or None with ``vocab_size``.
        input_dim: size of the token embedding / feature projection.
        hidden: hidden units per direction.
        cell: ``gru`` or ``lstm``.
        layers: stacked recurrent layers.
        bidirectional: run both directions (the pooled vector concatenates them).
        pooling: ``mean`` / ``max`` over the real steps, or ``last`` (the final state of
            each direction: forward at the last real step, backward at the first).
        embedding_dim: a linear projection of the pooled vector; None = the pooled vector
            (``hidden * directions``).
        dropout: between stacked layers and before the projection.
        bag: add the masked mean of the token embeddings to the pooled vector (module docstring).
        token_dropout: the fraction of real tokens dropped in training (module docstring).

    Shapes: (B, L) ids or (B, L, in_features) -> (B, embedding_dim).
    """

    def __init__(
        self,
        *,
        vocab_size: int | None = None,
        in_features: int | None = None,
        input_dim: int = 128,
        hidden: int = 128,
        cell: str = "gru",
        layers: int = 1,
        bidirectional: bool = True,
        pooling: str = "mean",
        embedding_dim: int | None = None,
        dropout: float = 0.0,
        bag: bool = False,
        token_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in ("gru", "lstm") or pooling not in ("mean", "max", "last"):
            raise ValueError(f"cell must be gru or lstm and pooling mean, max or last; got {cell!r}, {pooling!r}")
        self._make_input(vocab_size, in_features, input_dim, bag=bag, token_dropout=token_dropout)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(input_dim, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional,
                       dropout=dropout if layers > 1 else 0.0)
        self.pooling = pooling
        self.cell = cell
        pooled = hidden * (2 if bidirectional else 1)
        self._make_bag(input_dim, pooled)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(pooled, embedding_dim) if embedding_dim else nn.Identity()
        self.embedding_dim = int(embedding_dim or pooled)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embed a padded batch.

        Args:
            x: (B, L) token ids (0 = padding) or (B, L, F) features (all-NaN rows = padding).
            mask: (B, L) True at real steps, overriding the padding rule (right padding).

        Shapes:
            x (B, L) or (B, L, F), mask (B, L) -> (B, embedding_dim).

        Returns:
            The embeddings.
        """
        h, m = self._embed_input(x, mask)
        lengths = m.sum(dim=1).clamp_min(1).cpu()
        packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        if self.pooling == "last":
            h_n = state[0] if self.cell == "lstm" else state  # (layers * dirs, B, hidden)
            dirs = 2 if self.rnn.bidirectional else 1
            pooled = torch.cat([h_n[-dirs + k] for k in range(dirs)], dim=1)
        else:
            steps, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
            pooled = _pool(steps, valid, self.pooling)
        return self.proj(self.drop(self._add_bag(pooled, h, m)))


def _pool(steps: torch.Tensor, valid: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "max":
        return steps.masked_fill(~valid[..., None], torch.finfo(steps.dtype).min).amax(dim=1)
    w = valid[..., None].to(steps.dtype)
    return (steps * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """The fixed sine / cosine position table of Vaswani et al. (2017).

    Args:
        length: positions.
        width: model width (even).

    Shapes:
        -> (length, width).

    Returns:
        The table.
    """
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : width // 2]
    return table


@register_encoder("transformer_seq")
class TransformerSeqEncoder(_SequenceInput):
    """A small Transformer encoder (self-attention) over a padded batch.

    Args:
        vocab_size: token ids in [0, vocab_size) (0 = padding); or None with ``in_features``.
        in_features: features per time step of float sequences; or None with ``vocab_size``.
        width: the model width d_model.
        heads: attention heads (must divide ``width``).
        layers: encoder layers.
        ff: feed-forward width.
        dropout: attention / feed-forward dropout.
        positions: ``learned`` (an embedding per position) or ``sinusoidal`` (fixed).
        max_len: the longest sequence (positions table size).
        pooling: ``mean`` (masked mean over real steps) or ``cls`` (a learned token
            prepended to every sequence).
        embedding_dim: a linear projection of the pooled vector; None = ``width``.
        bag, token_dropout: the bag-of-embeddings residual and word dropout, as for
            :class:`RNNEncoder` (token ids only).

    Shapes: (B, L) ids or (B, L, in_features) -> (B, embedding_dim).
    """

    def __init__(
        self,
        *,
        vocab_size: int | None = None,
        in_features: int | None = None,
        width: int = 128,
        heads: int = 4,
        layers: int = 2,
        ff: int = 256,
        dropout: float = 0.1,
        positions: str = "learned",
        max_len: int = 512,
        pooling: str = "mean",
        embedding_dim: int | None = None,
        bag: bool = False,
        token_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if positions not in ("learned", "sinusoidal") or pooling not in ("mean", "cls"):
            raise ValueError(f"positions must be learned or sinusoidal and pooling mean or cls; got {positions!r}, {pooling!r}")
        self._make_input(vocab_size, in_features, width, bag=bag, token_dropout=token_dropout)
        self._make_bag(width, width)
        self.positions = positions
        self.pooling = pooling
        self.max_len = int(max_len)
        n_pos = self.max_len + (1 if pooling == "cls" else 0)
        if positions == "learned":
            self.pos = nn.Parameter(torch.randn(n_pos, width) * 0.02)
        else:
            self.register_buffer("pos", sinusoidal_positions(n_pos, width), persistent=False)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02) if pooling == "cls" else None
        layer = nn.TransformerEncoderLayer(width, heads, ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embedding_dim) if embedding_dim else nn.Identity()
        self.embedding_dim = int(embedding_dim or width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over the real steps (padded keys masked), then CLS or masked-mean pooling.

        Args:
            x: token ids or NaN-padded features, as :meth:`RNNEncoder.forward`.
            mask: True at real steps (None: from the padding).

        Returns:
            (B, embedding_dim) embeddings.
        """
        h, m = self._embed_input(x, mask)
        if h.shape[1] > self.max_len:
            raise DataError(f"sequences of {h.shape[1]} steps are longer than max_len={self.max_len}")
        tokens, token_mask = h, m
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1).to(h.dtype), h], dim=1)
            m = torch.cat([torch.ones_like(m[:, :1]), m], dim=1)
        h = h + self.pos[: h.shape[1]].to(h.dtype)
        # a sequence with no real step would attend to nothing (NaN): let it see its first step
        first = torch.arange(m.shape[1], device=m.device)[None, :] == 0
        m = m | (first & ~m.any(dim=1, keepdim=True))
        h = self.norm(self.encoder(h, src_key_padding_mask=~m))
        pooled = h[:, 0] if self.cls is not None else _pool(h, m, "mean")
        return self.proj(self._add_bag(pooled, tokens, token_mask))
