"""Encoders behind one registry: ``create_encoder(name, **explicit_kwargs)``.

Every encoder exposes ``embedding_dim`` and maps its input batch to (B, embedding_dim).
"""

from __future__ import annotations

from . import conv as _conv  # noqa: F401  (registers conv4, koch, resnet)
from . import mlp as _mlp  # noqa: F401  (registers mlp)
from . import ensemble as _ensemble  # noqa: F401  (registers ensemble)
from . import multiscale as _multiscale  # noqa: F401  (registers conv4_multiscale)
from . import sequence as _sequence  # noqa: F401  (registers rnn, transformer_seq)
from . import text as _text  # noqa: F401  (registers hf_text; transformers imported only when built)
from . import vision as _vision  # noqa: F401  (registers hf_image; transformers imported only when built)
from ._registry import create_encoder, encoder_config, list_encoders, register_encoder

__all__ = ["create_encoder", "encoder_config", "list_encoders", "register_encoder"]
