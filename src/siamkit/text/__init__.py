"""Text twins: tokenizers, the TextTwin model (encode / compare texts) and its folder.

The pretrained path needs the ``text`` extra (``pip install 'siamkit[text]'``); the
from-scratch word-level twins need only the core.
"""

from __future__ import annotations

from .model import TextTwin, is_text_model, pretrained_twin, scratch_twin, text_settings
from .tokenizer import PretrainedTokenizer, WordTokenizer, load_tokenizer

__all__ = [
    "TextTwin",
    "is_text_model",
    "pretrained_twin",
    "scratch_twin",
    "text_settings",
    "PretrainedTokenizer",
    "WordTokenizer",
    "load_tokenizer",
]
