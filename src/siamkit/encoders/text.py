"""A pretrained transformer sentence encoder (``hf_text``), built on ``transformers``.

The optional extra ``siamkit[text]``: ``transformers`` is imported only when an encoder
is built (it costs seconds). The encoder is rebuilt from its saved architecture
(``config``, the transformers config as a dict) so that a model folder never needs the
original files or the internet; the weights come from the model folder's safetensors.

Why ``transformers`` and not ``sentence-transformers``: the encoder must be an ordinary
``nn.Module`` inside :class:`~siamkit.network.SiameseNetwork` (one state dict, saved as
siamkit's safetensors model folder, trained by siamkit's own loop and losses); what
sentence-transformers adds on top (pooling, normalisation, its fit loop and losses) is a
few lines here, while it costs a second heavy import and its own folder layout.
Sentence-transformers folders are still read: their pooling mode and normalisation are
taken from ``1_Pooling/config.json`` and ``modules.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DataError, ModelFileError
from ._registry import create_encoder, register_encoder

__all__ = ["PretrainedTextEncoder", "POOLINGS", "masked_pool", "model_from_config", "pretrained_text_encoder", "require_transformers"]

POOLINGS = ("mean", "cls", "max")


def require_transformers() -> Any:
    """The ``transformers`` module, imported now.

    Returns:
        The module.

    Raises:
        ModelFileError: it is not installed (``pip install 'siamkit[text]'``).
    """
    try:
        import transformers
    except ImportError:
        raise ModelFileError(
            "text models need the 'text' extra: pip install 'siamkit[text]' (transformers is not installed)"
        ) from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def model_from_config(config: dict[str, Any]) -> tuple[Any, Any]:
    """A transformers model with random weights, built from its config dict (no files, no internet).

    Args:
        config: ``PretrainedConfig.to_dict()`` (with ``model_type``).

    Returns:
        (model, the transformers config).

    Raises:
        ValueError: the config has no ``model_type``, or transformers cannot build it.
    """
    transformers = require_transformers()
    cfg = dict(config)
    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise ValueError("the transformers config has no model_type")
    try:
        hf_config = transformers.AutoConfig.for_model(model_type, **cfg)
        return transformers.AutoModel.from_config(hf_config), hf_config
    except Exception as e:  # noqa: BLE001 - transformers raises KeyError, RuntimeError ... for a bad config
        raise ValueError(f"cannot build a transformers {model_type!r} model from the saved config: {e}") from None


def masked_pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states to one vector per sequence, ignoring padding.

    Args:
        hidden: the token states.
        mask: True (or 1) at real tokens.
        pooling: ``mean`` (masked mean), ``max`` (masked max) or ``cls`` (the first token).

    Shapes:
        hidden (B, L, H), mask (B, L) -> (B, H).

    Returns:
        The pooled vectors.
    """
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


@register_encoder("hf_text")
class PretrainedTextEncoder(nn.Module):
    """A transformers encoder model + pooling, on padded token ids.

    Args:
        config: the transformers model config as a dict (``PretrainedConfig.to_dict()``,
            with ``model_type``); the architecture is rebuilt from it, weights random
            until loaded (see :func:`pretrained_text_encoder`).
        pooling: ``mean``, ``cls`` or ``max`` over the non-padding tokens.
        pad_token_id: the padding id; the attention mask is ``ids != pad_token_id``.

    Shapes: (B, L) int64 token ids -> (B, hidden_size).
    """

    def __init__(self, *, config: dict[str, Any], pooling: str = "mean", pad_token_id: int = 0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}; choose one of {list(POOLINGS)}")
        self.model, hf_config = model_from_config(config)
        self.pooling = pooling
        self.pad_token_id = int(pad_token_id)
        self.embedding_dim = int(hf_config.hidden_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise DataError(f"hf_text takes (B, L) integer token ids, got {tuple(ids.shape)} {ids.dtype}")
        mask = (ids != self.pad_token_id).long()
        out = self.model(input_ids=ids.long(), attention_mask=mask)
        return masked_pool(out.last_hidden_state, mask, self.pooling)


def _sentence_transformers_settings(folder: Path) -> tuple[str | None, bool]:
    """(pooling, normalize) a sentence-transformers folder declares (None, False if none)."""
    pooling = None
    pool_cfg = folder / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        cfg = json.loads(pool_cfg.read_text(encoding="utf-8"))
        if cfg.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif cfg.get("pooling_mode_max_tokens"):
            pooling = "max"
        elif cfg.get("pooling_mode_mean_tokens"):
            pooling = "mean"
    normalize = False
    modules = folder / "modules.json"
    if modules.is_file():
        normalize = any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text(encoding="utf-8")))
    return pooling, normalize


def pretrained_text_encoder(reference: str, *, pooling: str | None = None) -> tuple[PretrainedTextEncoder, Any, bool]:
    """Load a pretrained model and its tokenizer (a local folder, or a hub name in the
    local cache; set ``HF_HUB_OFFLINE=1`` to make sure nothing is downloaded).

    Args:
        reference: a local folder with a transformers (or sentence-transformers) model,
            or a hub name.
        pooling: override the pooling (None: the folder's sentence-transformers pooling,
            else ``mean``).

    Returns:
        (encoder with the pretrained weights, tokenizer, normalize): ``normalize`` is
        True when the folder declares a Normalize module.

    Raises:
        ModelFileError: transformers missing, or the model cannot be loaded.
    """
    transformers = require_transformers()
    folder = Path(reference)
    if pooling is not None and pooling not in POOLINGS:
        raise DataError(f"pooling {pooling!r}; choose one of {list(POOLINGS)}")
    try:
        st_pooling, normalize = _sentence_transformers_settings(folder) if folder.is_dir() else (None, False)
        model = transformers.AutoModel.from_pretrained(reference)
        tokenizer = transformers.AutoTokenizer.from_pretrained(reference)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        encoder = create_encoder(
            "hf_text", config=model.config.to_dict(), pooling=pooling or st_pooling or "mean", pad_token_id=int(pad)
        )
        missing, unexpected = encoder.model.load_state_dict(model.state_dict(), strict=False)
    except Exception as e:  # noqa: BLE001 - every failure to read the files, as one error (below)
        # transformers / safetensors / tokenizers raise OSError, ValueError, RuntimeError (shape
        # mismatch), SafetensorError (a damaged weights file), JSON errors ...: every failure to
        # read the files is one error the CLI and the service report without a traceback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelFileError(f"cannot load the pretrained text model {reference!r} ({type(e).__name__}: {first})") from None
    assert isinstance(encoder, PretrainedTextEncoder)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise ModelFileError(f"the weights of {reference!r} do not fit its config: {missing[:3]} {unexpected[:3]}")
    return encoder, tokenizer, normalize
