"""TextTwin: a Siamese network on text = tokenizer + max length + the shared encoder.

A text model folder is an ordinary siamkit model folder (``config.json`` +
``model.safetensors``) whose config records, under ``extra.text``, the tokenizer kind,
the max length and the pretrained model it started from; the tokenizer's own files sit
beside it (``tokenizer.json`` for the word vocabulary, ``tokenizer/`` for a pretrained
tokenizer). Loading reads only these files: never the internet, never a pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError, ModelFileError
from ..io import load_model, read_config, save_model
from ..network import SiameseNetwork
from .inputs import TextInput, embed_ids_by_length
from .tokenizer import TextTokenizer, load_tokenizer

__all__ = ["TextTwin", "is_text_model", "pretrained_twin", "scratch_twin", "text_settings", "ENCODE_CHUNK"]

#: texts tokenised (and sorted by token count) at a time by :meth:`TextTwin.encode`
ENCODE_CHUNK = 4096


def text_settings(folder: str | Path) -> dict[str, Any] | None:
    """The ``extra.text`` part of a model folder's config (None: not a text model).

    Args:
        folder: a model folder.

    Returns:
        ``{"tokenizer": kind, "max_length": n, "pretrained": ref or None}`` or None.

    Raises:
        ModelFileError: not a model folder.
    """
    extra = read_config(folder).get("extra") or {}
    text = extra.get("text") if isinstance(extra, dict) else None
    return text if isinstance(text, dict) else None


def is_text_model(folder: str | Path) -> bool:
    """True when ``folder`` is a text model folder (False for image models and non-folders)."""
    try:
        return text_settings(folder) is not None
    except ModelFileError:
        return False


class TextTwin:
    """Encode and compare texts with one shared encoder.

    Args:
        network: the Siamese network (its encoder takes (B, L) token ids).
        tokenizer: texts -> padded ids.
        max_length: the most tokens per text.
        pretrained: the pretrained model reference it started from (a path or hub name),
            recorded in the model folder; None for from-scratch twins.
    """

    def __init__(
        self, network: SiameseNetwork, tokenizer: TextTokenizer, *, max_length: int, pretrained: str | None = None
    ) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.network = network
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.pretrained = pretrained
        network.text_input = TextInput(tokenizer, max_length=self.max_length)  # a gallery on this network takes texts

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Padded token ids (B, L) of ``texts``."""
        if isinstance(texts, str):
            raise DataError("pass a list of texts, not one string")
        return self.tokenizer(list(texts), max_length=self.max_length)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> torch.Tensor:
        """Embed texts in eval mode, in batches of similar token count (less padding).

        The texts are tokenised in chunks of :data:`ENCODE_CHUNK`, sorted within a chunk by
        their number of tokens (not characters: on STS-B that processes 21% fewer token
        positions at batch 32), and each batch is cut to the columns it uses.

        Args:
            texts: the texts.
            batch_size: texts per forward pass.

        Shapes:
            -> (N, D).

        Returns:
            The embeddings (L2-normalised when the network normalises), in input order.
        """
        texts = list(texts)
        dim = self.network.embedding_dim
        if not texts:
            return torch.zeros(0, dim)
        return torch.cat([embed_ids_by_length(self.network, self.tokenize(texts[c : c + ENCODE_CHUNK]), batch_size)
                          for c in range(0, len(texts), ENCODE_CHUNK)])

    def similarity(self, texts_a: Sequence[str], texts_b: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Cosine similarity of each pair (higher = more similar).

        Args:
            texts_a: the first text of each pair.
            texts_b: the second text of each pair (as many).
            batch_size: texts per forward pass.

        Returns:
            (N,) float64 cosine similarities in [-1, 1].
        """
        if len(texts_a) != len(texts_b):
            raise DataError(f"{len(texts_a)} first texts but {len(texts_b)} second texts")
        ea = self.encode(texts_a, batch_size=batch_size)
        eb = self.encode(texts_b, batch_size=batch_size)
        return F.cosine_similarity(ea, eb, dim=1).double().numpy()

    def save(self, folder: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write the model folder (weights, config, tokenizer files).

        Args:
            folder: the model folder (created if needed).
            extra: more JSON-able information for config.json's ``extra``.

        Returns:
            The folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(folder)
        text = {"tokenizer": self.tokenizer.kind, "max_length": self.max_length, "pretrained": self.pretrained}
        return save_model(self.network, folder, extra={**(extra or {}), "text": text})

    @classmethod
    def load(cls, folder: str | Path) -> TextTwin:
        """Load a text model folder (offline, in eval mode).

        Args:
            folder: a folder written by :meth:`save`.

        Returns:
            The twin.

        Raises:
            ModelFileError: not a text model folder, or its files are missing or damaged.
        """
        folder = Path(folder)
        settings = text_settings(folder)
        if settings is None:
            raise ModelFileError(f"{folder} is not a text model (its config.json records no text settings)")
        tokenizer = load_tokenizer(folder, str(settings.get("tokenizer")))
        network = load_model(folder)
        return cls(network, tokenizer, max_length=int(settings.get("max_length", 128)),
                   pretrained=settings.get("pretrained"))


def pretrained_twin(reference: str, *, max_length: int = 128, pooling: str | None = None) -> TextTwin:
    """A text twin on a pretrained sentence encoder (cosine distance).

    Args:
        reference: a local model folder or a hub name (see
            :func:`~siamkit.encoders.text.pretrained_text_encoder`).
        max_length: the most tokens per text (capped at the model's position count).
        pooling: override the pooling (None: the folder's own, else mean).

    Returns:
        The twin, with the pretrained weights.

    Raises:
        ModelFileError: the extra is not installed or the model cannot be loaded.
    """
    from ..encoders.text import pretrained_text_encoder
    from .tokenizer import PretrainedTokenizer

    encoder, tokenizer, normalize = pretrained_text_encoder(reference, pooling=pooling)
    limit = int(encoder.encoder_kwargs["config"].get("max_position_embeddings") or max_length)
    network = SiameseNetwork(encoder, distance="cosine", normalize=normalize)
    return TextTwin(network, PretrainedTokenizer(tokenizer), max_length=min(max_length, limit), pretrained=reference)


def scratch_twin(
    texts: Sequence[str],
    *,
    encoder: str = "rnn",
    max_length: int = 64,
    embedding_dim: int = 128,
    max_vocab: int = 30000,
    min_count: int = 1,
    seed: int = 0,
    input_dim: int = 128,
    layers: int = 2,
    dropout: float | None = None,
    bag: bool = False,
    token_dropout: float = 0.0,
    embedding_init: str = "random",
    hash_buckets: int = 0,
) -> TextTwin:
    """A from-scratch text twin: a word vocabulary built from ``texts`` and a sequence
    encoder (``rnn``: a bidirectional GRU with mean pooling; ``transformer_seq``:
    self-attention layers of width ``embedding_dim``, masked-mean pooling).

    Args:
        texts: the training texts the vocabulary (and the idf initialisation) is built from.
        encoder: ``rnn`` or ``transformer_seq``.
        max_length: the most tokens per text.
        embedding_dim: the embedding size.
        max_vocab: the vocabulary size cap.
        min_count: the fewest occurrences of a kept word.
        seed: the weights' seed.
        input_dim: the GRU's token embedding width (the Transformer's is ``embedding_dim``).
        layers: the Transformer's layers (the GRU has one).
        dropout: the encoder's dropout (None: 0 for the GRU, 0.1 for the Transformer).
        bag: add the bag-of-embeddings residual (:mod:`siamkit.encoders.sequence`).
        token_dropout: word dropout while training.
        embedding_init: ``random`` or ``idf`` (:mod:`siamkit.text.scratch`).
        hash_buckets: hashed ids for words outside the vocabulary (:mod:`siamkit.word_ids`).

    Returns:
        The untrained twin (cosine distance, normalised embeddings).

    Raises:
        ValueError: another encoder name or embedding_init.
    """
    from ..encoders import create_encoder
    from .scratch import EMBEDDING_INITS, idf_embedding, init_token_embedding, token_idf
    from .tokenizer import WordTokenizer

    if embedding_init not in EMBEDDING_INITS:
        raise ValueError(f"embedding_init {embedding_init!r}; choose one of {list(EMBEDDING_INITS)}")
    tokenizer = WordTokenizer(max_vocab=max_vocab, min_count=min_count, hash_buckets=hash_buckets).fit(texts)
    torch.manual_seed(seed)
    common = {"vocab_size": tokenizer.vocab_size, "bag": bag, "token_dropout": token_dropout}
    if encoder == "rnn":
        enc = create_encoder("rnn", input_dim=input_dim, hidden=embedding_dim // 2, cell="gru", pooling="mean",
                             dropout=0.0 if dropout is None else dropout, **common)
    elif encoder == "transformer_seq":
        enc = create_encoder("transformer_seq", width=embedding_dim, heads=4, layers=layers, ff=2 * embedding_dim,
                             max_len=max_length, pooling="mean", dropout=0.1 if dropout is None else dropout, **common)
    else:
        raise ValueError(f"encoder {encoder!r}; choose rnn or transformer_seq")
    if embedding_init == "idf":
        width = enc.inp.weight.shape[1]
        init_token_embedding(enc, idf_embedding(token_idf(tokenizer, texts), width, seed=seed))
    return TextTwin(SiameseNetwork(enc, distance="cosine", normalize=True), tokenizer, max_length=max_length)
