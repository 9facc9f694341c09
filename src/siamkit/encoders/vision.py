"""A pretrained image backbone (``hf_image``): a ``transformers`` vision model as the twin's
shared encoder, fine-tuned by siamkit's own loop and losses.

The backbone comes from a local folder (``config.json`` + ``model.safetensors``, and
``preprocessor_config.json`` when the model has one: what ``save_pretrained`` or
``huggingface-cli download`` writes), or a hub name already in the local cache. Like
``hf_text`` (:mod:`siamkit.encoders.text`), the encoder is rebuilt from its saved
architecture (``config``, the transformers config as a dict) so that a siamkit model
folder never needs the original folder or the internet: the weights come from the model
folder's safetensors. ``transformers`` is imported only when an encoder is built.

The backbone's preprocessing is kept with the model: its input size, channel count and
centre crop become the model's :class:`~siamkit.input_spec.InputSpec` (see
:func:`backbone_input`; every embedding path prepares raw images by it), and its
mean / std normalisation is applied inside the encoder on the [0, 1] input (recorded in
the encoder's arguments, so it is part of every path, ONNX export included). Grey images
(``in_channels=1``) are repeated to the backbone's channels.

Why only ``transformers`` folders and not TorchScript / ONNX files: a siamkit model is
safetensors + a JSON recipe that rebuilds the architecture, and neither a TorchScript
archive nor an ONNX graph can be rebuilt from JSON as a trainable ``nn.Module`` (ONNX is
not trainable in torch at all); they would tie every saved model to the original file.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DataError, ModelFileError
from ._registry import create_encoder, register_encoder
from .text import model_from_config, require_transformers

__all__ = [
    "BackboneInput",
    "IMAGE_POOLINGS",
    "PretrainedImageEncoder",
    "backbone_folder",
    "backbone_input",
    "encoder_from_options",
    "pretrained_image_encoder",
]

#: how the backbone's output becomes one vector per image
IMAGE_POOLINGS = ("auto", "mean", "cls")
#: mean / std when a backbone folder declares none (the ImageNet statistics most vision models use)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: input side when neither the processor nor the config names one
DEFAULT_SIDE = 224


def _feature_dim(hf_config: Any) -> int | None:
    """The width of the backbone's last features, from its config (None: not declared)."""
    sizes = getattr(hf_config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    size = getattr(hf_config, "hidden_size", None)
    return int(size) if size else None


@register_encoder("hf_image")
class PretrainedImageEncoder(nn.Module):
    """A transformers vision model + pooling (+ an optional linear projection).

    Args:
        config: the transformers model config as a dict (``PretrainedConfig.to_dict()``,
            with ``model_type``); the architecture is rebuilt from it, weights random
            until loaded (see :func:`pretrained_image_encoder`).
        in_channels: channels of the images it is given (1 grey: repeated to the
            backbone's channels; or the backbone's own).
        embedding_dim: size of a linear projection on the pooled features; None = the
            backbone's features.
        image_mean: per-channel mean subtracted from the [0, 1] input (the backbone's
            processor's); one value per backbone channel.
        image_std: per-channel standard deviation the input is divided by.
        pooling: ``auto`` (the model's pooler output when it has one, else the first
            token of a token sequence or the mean of a feature map), ``mean`` (mean over
            tokens or positions) or ``cls`` (the first token; token models only).
        source: where the weights came from (a folder or hub name), for the record only:
            nothing is read from it again.

    Shapes: (B, in_channels, H, W) in [0, 1] -> (B, embedding_dim).
    """

    def __init__(
        self,
        *,
        config: dict[str, Any],
        in_channels: int = 3,
        embedding_dim: int | None = None,
        image_mean: list[float] | tuple[float, ...] = IMAGENET_MEAN,
        image_std: list[float] | tuple[float, ...] = IMAGENET_STD,
        pooling: str = "auto",
        source: str | None = None,
    ) -> None:
        super().__init__()
        if pooling not in IMAGE_POOLINGS:
            raise ValueError(f"pooling {pooling!r}; choose one of {list(IMAGE_POOLINGS)}")
        self.model, hf_config = model_from_config(config)
        self.backbone_channels = int(getattr(hf_config, "num_channels", 3))
        if in_channels not in (1, self.backbone_channels):
            raise ValueError(f"in_channels {in_channels}: the backbone takes {self.backbone_channels} channels (or 1, repeated)")
        if len(image_mean) != self.backbone_channels or len(image_std) != self.backbone_channels:
            raise ValueError(f"image_mean and image_std need {self.backbone_channels} values each")
        if min(float(s) for s in image_std) <= 0:
            raise ValueError(f"image_std must be > 0, got {list(image_std)}")
        self.in_channels = int(in_channels)
        self.pooling = pooling
        self.source = source
        side = getattr(hf_config, "image_size", None)
        self._native_size = (int(side), int(side)) if isinstance(side, int) else None
        self._interpolates = "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters
        self.register_buffer("mean", torch.tensor([float(m) for m in image_mean]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in image_std]).view(1, -1, 1, 1), persistent=False)
        features = _feature_dim(hf_config) or self._probe_features()
        self.proj = nn.Linear(features, embedding_dim) if embedding_dim is not None else None
        self.embedding_dim = int(embedding_dim) if embedding_dim is not None else features

    def _probe_features(self) -> int:
        """The feature width of a backbone whose config does not name it (one small forward)."""
        side = self._native_size or (64, 64)
        with torch.no_grad():
            was = self.model.training
            self.model.eval()
            out = self._pool(self._backbone(torch.zeros(1, self.backbone_channels, *side)))
            self.model.train(was)
        return int(out.shape[1])

    def _backbone(self, pixels: torch.Tensor) -> Any:
        kwargs: dict[str, Any] = {}
        if self._interpolates and self._native_size is not None and tuple(pixels.shape[-2:]) != self._native_size:
            kwargs["interpolate_pos_encoding"] = True
        return self.model(pixel_values=pixels, **kwargs)

    def _pool(self, out: Any) -> torch.Tensor:
        hidden = out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        if self.pooling == "auto" and pooled is not None:
            return pooled.flatten(1)
        if hidden.ndim == 4:  # (B, C, h, w) feature map
            if self.pooling == "cls":
                raise DataError("pooling 'cls' needs a token model (ViT-like); this backbone gives a feature map")
            return hidden.mean(dim=(2, 3))
        if self.pooling == "mean":
            return hidden.mean(dim=1)
        return hidden[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise DataError(f"hf_image takes (B, {self.in_channels}, H, W) images, got shape {tuple(x.shape)}")
        if self.in_channels != self.backbone_channels:
            x = x.expand(-1, self.backbone_channels, -1, -1)
        pixels = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        pooled = self._pool(self._backbone(pixels))
        return self.proj(pooled) if self.proj is not None else pooled


@dataclass(frozen=True)
class BackboneInput:
    """What a backbone's own preprocessing asks of its input.

    Attributes:
        size: (height, width) the images are resized to.
        channels: the backbone's channels (3 for RGB models).
        image_mean: per-channel mean of the normalisation.
        image_std: per-channel standard deviation.
        crop_fraction: the central fraction of each side kept before the resize (a
            processor's centre crop, e.g. 0.875); 1.0 = no crop.
    """

    size: tuple[int, int]
    channels: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    crop_fraction: float = 1.0

    def preprocess(self) -> list[dict[str, Any]]:
        """The input-recipe steps of this preprocessing (a centre ``crop`` step, or none)."""
        return [{"kind": "crop", "fraction": self.crop_fraction}] if self.crop_fraction < 1.0 else []


def _side_pair(value: Any) -> tuple[int, int] | None:
    """A processor's ``size`` / ``crop_size`` as (height, width); None when absent."""
    if isinstance(value, int) and value > 0:
        return value, value
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        edge = value.get("shortest_edge")
        if isinstance(edge, int) and edge > 0:
            return edge, edge
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFileError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} is not a JSON object")
    return data


def backbone_folder(reference: str | Path) -> Path:
    """The local folder of a backbone: ``reference`` itself, or a hub name's snapshot in
    the local Hugging Face cache (never downloaded here).

    Args:
        reference: a folder, or a hub name such as ``google/vit-base-patch16-224-in21k``.

    Returns:
        The folder.

    Raises:
        ModelFileError: neither a folder nor a cached hub model.
    """
    folder = Path(reference)
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(reference), local_files_only=True))
    except Exception as e:  # noqa: BLE001 - any failure of the cache lookup means "not here"
        raise ModelFileError(
            f"backbone {str(reference)!r} is neither a folder nor a model in the local Hugging Face cache "
            f"({type(e).__name__}); download it first, e.g. hf download NAME --local-dir FOLDER"
        ) from None


def backbone_input(reference: str | Path) -> BackboneInput:
    """Read a backbone folder's preprocessing: ``preprocessor_config.json`` (size, centre
    crop, mean / std, whether it normalises) and ``config.json`` (channels, image size).

    Without a processor file: the config's ``image_size`` (else 224) and the ImageNet
    mean / std.

    Args:
        reference: the backbone folder (or a hub name in the local cache).

    Returns:
        The backbone's input.

    Raises:
        ModelFileError: no such folder, the folder has no ``config.json``, or a file is
            not valid JSON.
    """
    folder = backbone_folder(reference)
    if not (folder / "config.json").is_file():
        raise ModelFileError(f"{folder} is not a transformers model folder (no config.json)")
    cfg = _read_json(folder / "config.json")
    proc = _read_json(folder / "preprocessor_config.json") if (folder / "preprocessor_config.json").is_file() else {}
    channels = int(cfg.get("num_channels", 3))
    side = cfg.get("image_size")
    resize = _side_pair(proc.get("size")) or _side_pair(side) or (DEFAULT_SIDE, DEFAULT_SIDE)
    crop = _side_pair(proc.get("crop_size")) if proc.get("do_center_crop") else None
    crop_pct = proc.get("crop_pct")
    fraction = 1.0
    if crop is not None and crop[0] < resize[0]:
        fraction, resize = crop[0] / resize[0], crop
    elif isinstance(crop_pct, (int, float)) and 0 < crop_pct < 1 and resize[0] < 384:
        fraction = float(crop_pct)  # ConvNeXt-style: resize to size / crop_pct, then crop to size
    if proc and proc.get("do_normalize") is False:
        mean, std = (0.0,) * channels, (1.0,) * channels
    else:
        mean = tuple(float(v) for v in proc.get("image_mean", IMAGENET_MEAN[:channels]))
        std = tuple(float(v) for v in proc.get("image_std", IMAGENET_STD[:channels]))
    if len(mean) == 1 and channels > 1:
        mean, std = mean * channels, std * channels
    return BackboneInput(size=resize, channels=channels, image_mean=mean, image_std=std, crop_fraction=fraction)


def pretrained_image_encoder(
    reference: str | Path,
    *,
    in_channels: int | None = None,
    embedding_dim: int | None = None,
    pooling: str = "auto",
) -> PretrainedImageEncoder:
    """Load a pretrained vision backbone as an ``hf_image`` encoder, offline.

    Args:
        reference: a local transformers model folder, or a hub name already in the local
            Hugging Face cache (nothing is downloaded).
        in_channels: channels of the images it will get (None: the backbone's own).
        embedding_dim: a linear projection's size on top (None: the backbone's features).
        pooling: see :class:`PretrainedImageEncoder`.

    Returns:
        The encoder with the pretrained weights (the projection, if any, random), its
        mean / std those of the folder's processor.

    Raises:
        ModelFileError: transformers missing, or the model cannot be loaded or its
            weights do not fit its config.
    """
    transformers = require_transformers()
    folder = backbone_folder(reference)
    info = backbone_input(folder)
    try:
        model = transformers.AutoModel.from_pretrained(str(folder))
    except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: weights of other shapes than the config's
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"cannot load the pretrained image model {str(reference)!r}: {first}") from None
    channels = int(getattr(model.config, "num_channels", 3))
    encoder = create_encoder(
        "hf_image", config=model.config.to_dict(), in_channels=int(in_channels or channels), embedding_dim=embedding_dim,
        image_mean=list(info.image_mean), image_std=list(info.image_std), pooling=pooling, source=str(reference),
    )
    assert isinstance(encoder, PretrainedImageEncoder)
    missing, unexpected = encoder.model.load_state_dict(model.state_dict(), strict=False)
    if unexpected or missing:
        raise ModelFileError(f"the weights of {str(reference)!r} do not fit its config: {missing[:3]} {unexpected[:3]}")
    return encoder


def encoder_from_options(kwargs: dict[str, Any]) -> PretrainedImageEncoder:
    """The ``hf_image`` encoder of a training config's ``encoder_kwargs``: pretrained from
    ``backbone`` (a folder), or rebuilt from a ``config`` dict (random weights).

    Args:
        kwargs: ``backbone`` (or ``config``), ``in_channels``, ``embedding_dim``,
            ``pooling`` (and, with ``config``, the other encoder arguments).

    Returns:
        The encoder.

    Raises:
        DataError: neither ``backbone`` nor ``config`` is given.
    """
    kwargs = dict(kwargs)
    backbone = kwargs.pop("backbone", None)
    if backbone is None:
        if "config" not in kwargs:
            raise DataError("the hf_image encoder needs a pretrained backbone folder (--backbone PATH)")
        encoder = create_encoder("hf_image", **kwargs)
        assert isinstance(encoder, PretrainedImageEncoder)
        return encoder
    unknown = sorted(set(kwargs) - {"in_channels", "embedding_dim", "pooling"})
    if unknown:
        raise DataError(f"hf_image with a backbone takes in_channels, embedding_dim and pooling, not {unknown}")
    return pretrained_image_encoder(str(backbone), **kwargs)
