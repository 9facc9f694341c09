"""Tokenizers of text twins: a word-level vocabulary for from-scratch encoders, and a
wrapper around a pretrained model's transformers tokenizer. Both turn a list of texts
into padded (B, L) int64 token ids with padding id 0 and save into a model folder as
JSON / text files only.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

from .._atomic import write_bytes_atomic, write_json_atomic
from ..errors import DataError, ModelFileError
from ..versioned import read_versioned_json
from ..word_ids import WORD_TOKENIZER_FORMAT, WORD_TOKENIZER_VERSION, word_ids, words

__all__ = ["TextTokenizer", "WordTokenizer", "PretrainedTokenizer", "pad_ids", "load_tokenizer"]

TOKENIZER_FORMAT = WORD_TOKENIZER_FORMAT
TOKENIZER_VERSION = WORD_TOKENIZER_VERSION
WORD_FILE = "tokenizer.json"
HF_FOLDER = "tokenizer"
PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"


class TextTokenizer(Protocol):
    """What a text twin needs from a tokenizer."""

    kind: str

    def __call__(self, texts: Sequence[str], *, max_length: int) -> torch.Tensor: ...

    def save(self, folder: Path) -> None: ...


def pad_ids(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Right-pad token id lists with 0.

    Args:
        rows: one id list per text (each at least one id long).

    Shapes:
        -> (B, max length).

    Returns:
        The int64 id matrix.
    """
    width = max((len(r) for r in rows), default=1)
    out = torch.zeros(len(rows), max(width, 1), dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.int64)
    return out


class WordTokenizer:
    """A lower-cased word / punctuation vocabulary built from training text.

    Ids: 0 padding, 1 unknown word, 2 a leading ``[CLS]`` (always added, so no text is
    empty and CLS pooling has its token), then the words by frequency; with
    ``hash_buckets`` K, K hashed ids for unknown words after them (:mod:`siamkit.word_ids`).

    Args:
        max_vocab: keep the most frequent words only.
        min_count: keep words seen at least this often.
        hash_buckets: hashed ids for words outside the vocabulary (0: all are id 1).
    """

    kind = "word"

    def __init__(self, *, max_vocab: int = 30000, min_count: int = 1, hash_buckets: int = 0) -> None:
        if hash_buckets < 0:
            raise ValueError(f"hash_buckets must be >= 0, got {hash_buckets}")
        self.max_vocab = max_vocab
        self.min_count = min_count
        self.hash_buckets = int(hash_buckets)

    @staticmethod
    def words(text: str) -> list[str]:
        """The lower-cased word and punctuation tokens of ``text``."""
        return words(text)

    def fit(self, texts: Sequence[str]) -> WordTokenizer:
        """Build the vocabulary.

        Args:
            texts: the training texts.

        Returns:
            self, with ``vocab_`` (word -> id).
        """
        counts = Counter(w for t in texts for w in self.words(t))
        kept = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= self.min_count]
        self.vocab_ = {PAD: 0, UNK: 1, CLS: 2}
        for w in kept[: max(0, self.max_vocab - 3)]:
            self.vocab_[w] = len(self.vocab_)
        return self

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer gives: the vocabulary and the hash buckets."""
        return len(self.vocab_) + self.hash_buckets

    def __call__(self, texts: Sequence[str], *, max_length: int) -> torch.Tensor:
        """Token ids of ``texts``, truncated to ``max_length`` (the CLS token included).

        Args:
            texts: the texts.
            max_length: the most ids per text.

        Shapes:
            -> (B, L).

        Returns:
            Padded int64 ids.
        """
        if not hasattr(self, "vocab_"):
            raise DataError("the tokenizer has no vocabulary yet: call fit() first")
        return pad_ids(word_ids(texts, self.vocab_, max_length=max_length, hash_buckets=self.hash_buckets))

    def save(self, folder: Path) -> None:
        """Write ``folder/tokenizer.json``.

        Args:
            folder: the model folder.
        """
        write_json_atomic(
            Path(folder) / WORD_FILE,
            {"format": TOKENIZER_FORMAT, "format_version": TOKENIZER_VERSION, "max_vocab": self.max_vocab,
             "min_count": self.min_count, "hash_buckets": self.hash_buckets, "vocab": self.vocab_},
        )

    @classmethod
    def load(cls, folder: Path) -> WordTokenizer:
        """Read ``folder/tokenizer.json``."""
        data = read_versioned_json(Path(folder) / WORD_FILE, fmt=TOKENIZER_FORMAT, version=TOKENIZER_VERSION,
                                   what="word tokenizer")
        tok = cls(max_vocab=int(data["max_vocab"]), min_count=int(data["min_count"]),
                  hash_buckets=int(data.get("hash_buckets", 0)))  # files before hashing: none
        vocab = data.get("vocab")
        if not isinstance(vocab, dict) or vocab.get(PAD) != 0:
            raise ModelFileError(f"{Path(folder) / WORD_FILE} has no valid vocabulary")
        tok.vocab_ = {str(k): int(v) for k, v in vocab.items()}
        return tok


class PretrainedTokenizer:
    """A transformers tokenizer (the pretrained model's), saved as its own JSON/text files.

    Args:
        tokenizer: a transformers tokenizer.
    """

    kind = "pretrained"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, texts: Sequence[str], *, max_length: int) -> torch.Tensor:
        """The transformers tokenizer's padded ids (B, L), special tokens added.

        Args:
            texts: the texts.
            max_length: truncate to this many ids.

        Returns:
            int64 ids, padded with the tokenizer's pad id.
        """
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return enc["input_ids"]

    def save(self, folder: Path) -> None:
        """Write the tokenizer's files into ``folder/tokenizer/`` (each atomically).

        Args:
            folder: the model folder.
        """
        target = Path(folder) / HF_FOLDER
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.tokenizer.save_pretrained(tmp)
            for f in sorted(Path(tmp).iterdir()):
                if f.is_file():
                    write_bytes_atomic(target / f.name, f.read_bytes())

    @classmethod
    def load(cls, folder: Path) -> PretrainedTokenizer:
        """Read ``folder/tokenizer/`` (never the internet)."""
        from ..encoders.text import require_transformers

        transformers = require_transformers()
        try:
            return cls(transformers.AutoTokenizer.from_pretrained(str(Path(folder) / HF_FOLDER), local_files_only=True))
        except Exception as e:  # noqa: BLE001 - OSError, ValueError, JSON, tokenizers' own errors: a damaged folder
            raise ModelFileError(f"cannot read the tokenizer in {Path(folder) / HF_FOLDER}: {type(e).__name__}: {e}") from None


def load_tokenizer(folder: Path, kind: str) -> TextTokenizer:
    """The tokenizer a text model folder holds.

    Args:
        folder: the model folder.
        kind: ``word`` or ``pretrained`` (as its config records).

    Returns:
        The tokenizer.

    Raises:
        ModelFileError: another kind, or its files are missing or damaged.
    """
    if kind == "word":
        return WordTokenizer.load(folder)
    if kind == "pretrained":
        return PretrainedTokenizer.load(folder)
    raise ModelFileError(f"unknown tokenizer kind {kind!r} in {folder}")
