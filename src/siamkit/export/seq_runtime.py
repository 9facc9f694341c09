"""Encode texts with a from-scratch twin's ONNX export: numpy and onnxruntime only (no
torch, no ``tokenizers``).

:class:`OnnxWordEncoder` reads the export's ``word_vocab.json`` (the model folder's word
tokenizer file) and gives the ids :class:`siamkit.text.tokenizer.WordTokenizer` gives,
through the same torch-free function (:func:`siamkit.word_ids.word_ids`), hashed unknown
words included. An export without hash buckets also carries a ``tokenizers``
``tokenizer.json`` with the same ids, so :class:`siamkit.export.text_runtime.OnnxTextEncoder`
opens it too; with hash buckets it refuses it (that file format cannot hash).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError, ModelFileError
from ..versioned import read_versioned_json
from ..word_ids import WORD_TOKENIZER_FORMAT, WORD_TOKENIZER_VERSION, word_ids
from .runtime import FORMAT, FORMAT_VERSION, MANIFEST, open_session
from .text_runtime import OnnxTextEncoder

__all__ = ["OnnxWordEncoder", "WORD_VOCAB_FILE"]

WORD_VOCAB_FILE = "word_vocab.json"


class _WordIds:
    """The word tokenizer of an export: texts -> padded int64 ids."""

    def __init__(self, vocab: dict[str, int], max_length: int, hash_buckets: int) -> None:
        self.vocab, self.max_length, self.hash_buckets = vocab, max_length, hash_buckets

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        rows = word_ids(texts, self.vocab, max_length=self.max_length, hash_buckets=self.hash_buckets)
        out = np.zeros((len(rows), max((len(r) for r in rows), default=1)), np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out


class OnnxWordEncoder(OnnxTextEncoder):
    """A from-scratch text twin's ONNX export (``encode`` / ``similarity`` as
    :class:`~siamkit.export.text_runtime.OnnxTextEncoder`). Build it with :meth:`from_dir`."""

    @classmethod
    def from_dir(cls, folder: str | Path, *, precision: str | None = None, threads: int | None = None) -> OnnxWordEncoder:
        """Open the export folder of a word-tokenizer text model.

        Args:
            folder: written by ``siamkit export`` from an ``rnn`` / ``transformer_seq`` text model.
            precision: ``"fp32"`` or ``"int8"``; None takes int8 when there is one.
            threads: onnxruntime's intra-op threads (None: its default).

        Returns:
            The encoder.

        Raises:
            ModelFileError: not a word-tokenizer text export, or a missing / damaged file.
        """
        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise ModelFileError(f"{folder} is not a siamkit ONNX export (no {MANIFEST}): run `siamkit export` first")
        manifest = read_versioned_json(folder / MANIFEST, fmt=FORMAT, version=FORMAT_VERSION, what="ONNX export")
        text: Any = manifest.get("text")
        if manifest.get("kind") != "text" or not isinstance(text, dict) or text.get("tokenizer_kind") != "word":
            raise ModelFileError(f"{folder} is not the export of a from-scratch (word tokenizer) text model")
        files = manifest.get("models") or {}
        precision = precision or ("int8" if "int8" in files else "fp32")
        if precision not in files or not (folder / str(files[precision])).is_file():
            raise ModelFileError(f"{folder} has no {precision} model")
        data = read_versioned_json(folder / WORD_VOCAB_FILE, fmt=WORD_TOKENIZER_FORMAT, version=WORD_TOKENIZER_VERSION,
                                   what="word tokenizer")
        vocab = data.get("vocab")
        if not isinstance(vocab, dict):
            raise ModelFileError(f"{folder / WORD_VOCAB_FILE} has no vocabulary")
        ids = _WordIds({str(k): int(v) for k, v in vocab.items()}, int(text["max_length"]), int(data.get("hash_buckets", 0)))
        return cls(folder, manifest, open_session(folder / str(files[precision]), threads), ids, precision)

    def token_ids(self, texts: Sequence[str]) -> np.ndarray:
        """Padded int64 ids (B, L) of ``texts``, as the torch model's word tokenizer gives them."""
        if isinstance(texts, str):
            raise DataError("pass a list of texts, not one string")
        return self.tokenizer(list(texts))
