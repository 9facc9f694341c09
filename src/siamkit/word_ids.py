"""Word-level token ids, torch-free: shared by :class:`siamkit.text.tokenizer.WordTokenizer`
(torch) and :mod:`siamkit.export.seq_runtime` (numpy + onnxruntime), so both give the same ids.

Ids: 0 padding, 1 unknown word, 2 a leading ``[CLS]``, then the vocabulary. With
``hash_buckets = K > 0`` a word outside the vocabulary is not the unknown word but one of K
hashed ids after the vocabulary (``vocab_size + crc32(word) % K``): an unseen name or number
shared by two sentences still matches (the hashing trick), while different unseen words
collide only by chance.
"""

from __future__ import annotations

import re
import zlib
from typing import Mapping, Sequence

__all__ = ["WORD_PATTERN", "WORD_TOKENIZER_FORMAT", "WORD_TOKENIZER_VERSION", "words", "word_ids"]

#: the word tokenizer's file (``tokenizer.json`` in a model folder, ``word_vocab.json`` in an export)
WORD_TOKENIZER_FORMAT = "siamkit-word-tokenizer"
WORD_TOKENIZER_VERSION = 1

WORD_PATTERN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def words(text: str) -> list[str]:
    """The lower-cased word and punctuation tokens of ``text``."""
    return WORD_PATTERN.findall(text.lower())


def word_ids(texts: Sequence[str], vocab: Mapping[str, int], *, max_length: int, hash_buckets: int = 0) -> list[list[int]]:
    """Token id lists of ``texts``: ``[CLS]`` then the words, truncated to ``max_length`` ids.

    Args:
        texts: the texts.
        vocab: word -> id (ids 0-2 are padding, unknown, ``[CLS]``).
        max_length: the most ids per text (the ``[CLS]`` included).
        hash_buckets: hashed ids for words outside ``vocab`` (0: they are the unknown id 1).

    Returns:
        One id list per text (at least ``[CLS]``).
    """
    size = len(vocab)

    def one(word: str) -> int:
        found = vocab.get(word)
        if found is not None:
            return found
        return size + zlib.crc32(word.encode("utf-8")) % hash_buckets if hash_buckets > 0 else 1

    return [[2] + [one(w) for w in words(t)[: max(0, max_length - 1)]] for t in texts]
