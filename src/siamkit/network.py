"""SiameseNetwork: one encoder shared by both inputs.

The twins share every weight by construction: there is one encoder module, called on
``cat([x1, x2])``. The network owns no loss, optimiser or index.

Example:
    >>> import torch
    >>> from siamkit import SiameseNetwork, create_encoder
    >>> net = SiameseNetwork(create_encoder("conv4", in_channels=1), distance="euclidean")
    >>> x1, x2 = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    >>> net.pair_distance(x1, x2).shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .distances import BaseDistance, get_distance
from .encoders import encoder_config
from .errors import DataError

__all__ = ["SiameseNetwork", "InputSpec"]


@dataclass(frozen=True)
class InputSpec:
    """What the network takes, saved with the model so that every caller prepares raw
    inputs the same way (the one typed reading of ``config.json``'s ``input_spec``).

    Attributes:
        shape: one sample's shape without the batch dimension, e.g. ``(1, 28, 28)`` or
            ``(8,)``; empty when unknown.
        channels: image channels (1 grey, 3 RGB); None for non-image inputs.
        height: image height in pixels; None for non-image inputs.
        width: image width in pixels; None for non-image inputs.
    """

    shape: tuple[int, ...] = ()
    channels: int | None = None
    height: int | None = None
    width: int | None = None

    @classmethod
    def from_dict(cls, spec: InputSpec | Mapping[str, Any] | None) -> InputSpec:
        """Read the JSON form (as written by :meth:`to_dict`); None gives an empty spec.

        Args:
            spec: the ``input_spec`` mapping of a model config, an InputSpec, or None.

        Returns:
            The typed spec.

        Raises:
            ValueError: a field is not an integer (or the shape not a list of them).
        """
        if spec is None:
            return cls()
        if isinstance(spec, InputSpec):
            return spec
        if not isinstance(spec, Mapping):
            raise ValueError(f"an input spec must be a mapping, got {type(spec).__name__}")

        def _int(name: str) -> int | None:
            v = spec.get(name)
            return None if v is None else int(v)

        shape = tuple(int(s) for s in spec.get("shape", ()) or ())
        return cls(shape=shape, channels=_int("channels"), height=_int("height"), width=_int("width"))

    @classmethod
    def for_sample(cls, sample_shape: tuple[int, ...] | torch.Size) -> InputSpec:
        """The spec of samples shaped ``sample_shape``: (C, H, W) is an image, else a vector/sequence.

        Args:
            sample_shape: one sample's shape, without the batch dimension.

        Returns:
            The spec.
        """
        shape = tuple(int(s) for s in sample_shape)
        if len(shape) == 3:
            return cls(shape=shape, channels=shape[0], height=shape[1], width=shape[2])
        return cls(shape=shape)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: only the fields that are set (``shape`` as a list)."""
        out: dict[str, Any] = {}
        if self.shape:
            out["shape"] = list(self.shape)
        for name in ("channels", "height", "width"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        return out

    @property
    def is_image(self) -> bool:
        """True when the model takes images (height and width are known)."""
        return self.height is not None and self.width is not None

    def require_image(self) -> InputSpec:
        """Self, when the model takes images of 1 or 3 channels.

        Raises:
            DataError: the model was not trained on images, or takes another channel count.
        """
        if not self.is_image:
            raise DataError("this model was not trained on images (its input spec has no image size)")
        if self.channels not in (1, 3):
            raise DataError(f"the model takes {self.channels} channels; images are 1 (grey) or 3 (RGB)")
        return self

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of an image model.

        Raises:
            DataError: the model was not trained on images.
        """
        self.require_image()
        return int(self.height), int(self.width)  # type: ignore[arg-type]


class SiameseNetwork(nn.Module):
    """A shared encoder, optional L2 normalisation, and optionally Koch's L1 pair head.

    Args:
        encoder: any module with ``embedding_dim`` mapping a batch to (B, D).
        distance: how two embeddings compare (lower = closer) when there is no head.
        normalize: L2-normalise embeddings (then Euclidean and cosine agree in ranking).
        head: None, or ``"l1"``: Koch et al.'s learned pair head,
            ``logit = w . |e1 - e2| + b`` (higher = more likely the same).
        input_spec: what inputs the network expects (an :class:`InputSpec` or its JSON
            form, e.g. ``{"channels": 1, "height": 28, "width": 28}``); saved with the
            model so that files can be preprocessed the same way at inference.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        distance: str | BaseDistance = "euclidean",
        normalize: bool = False,
        head: str | None = None,
        input_spec: InputSpec | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not hasattr(encoder, "embedding_dim"):
            raise TypeError("the encoder must expose .embedding_dim")
        if head not in (None, "l1"):
            raise ValueError(f"unknown head {head!r}; choose None or 'l1'")
        self.encoder = encoder
        self.distance = get_distance(distance)
        self.normalize = bool(normalize)
        self.head_type = head
        self.pair_head = nn.Linear(encoder.embedding_dim, 1) if head == "l1" else None
        self.input_spec = InputSpec.from_dict(input_spec)
        #: sha256 of the weights file this network was saved to / loaded from (None: unsaved)
        self.fingerprint: str | None = None

    @property
    def embedding_dim(self) -> int:
        return int(self.encoder.embedding_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch. Shapes: (B, ...) -> (B, D)."""
        e = self.encoder(x)
        return F.normalize(e, dim=1) if self.normalize else e

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed both inputs with the one shared encoder (a single call on cat([x1, x2])).

        Args:
            x1: the first input of each pair.
            x2: the second input of each pair, shaped like ``x1``.

        Shapes:
            x1 (B, ...), x2 (B, ...) -> (B, D), (B, D).

        Returns:
            (e1, e2), each (B, D).

        Raises:
            ValueError: ``x1`` and ``x2`` differ in shape.
        """
        if x1.shape != x2.shape:
            raise ValueError(f"x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)} differ in shape")
        e = self.embed(torch.cat([x1, x2]))
        return e[: x1.shape[0]], e[x1.shape[0] :]

    def pair_logits(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Koch's head on two embedding batches.

        Args:
            e1: the first embedding of each pair.
            e2: the second embedding of each pair.

        Shapes:
            (B, D), (B, D) -> (B,) logits.

        Returns:
            ``w . |e1 - e2| + b`` per pair, higher = more likely the same, with gradients.

        Raises:
            RuntimeError: the network has no pair head.
        """
        if self.pair_head is None:
            raise RuntimeError("this network has no pair head; build it with head='l1'")
        return self.pair_head((e1 - e2).abs()).squeeze(1)

    def embedding_distance(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Distance between paired embeddings, lower = closer. With a head: ``-logit``.

        Args:
            e1: the first embedding of each pair.
            e2: the second embedding of each pair.

        Shapes:
            e1 (B, D), e2 (B, D) -> (B,).

        Returns:
            The distances (lower = closer), with gradients.
        """
        if self.pair_head is not None:
            return -self.pair_logits(e1, e2)
        return self.distance.paired(e1, e2)

    def pair_distance(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Distance between paired inputs (B,), lower = closer.

        Embeds both with :meth:`forward`, then compares with :meth:`embedding_distance`;
        the train/eval mode is left as it is.

        Args:
            x1: the first input of each pair.
            x2: the second input of each pair, shaped like ``x1``.

        Shapes:
            x1 (B, ...), x2 (B, ...) -> (B,).

        Returns:
            The distances (lower = closer; a pair head's ``-logit``), with gradients.

        Raises:
            ValueError: ``x1`` and ``x2`` differ in shape.
        """
        e1, e2 = self(x1, x2)
        return self.embedding_distance(e1, e2)

    def distance_to_score(self, distance: torch.Tensor) -> torch.Tensor:
        """Display score, higher = more similar: sigmoid(logit) with a head, else the
        distance's own monotone map (see :meth:`BaseDistance.to_score`)."""
        if self.pair_head is not None:
            return torch.sigmoid(-distance)
        return self.distance.to_score(distance)

    def config(self) -> dict[str, Any]:
        """The JSON-able recipe that rebuilds this network (weights not included)."""
        return {
            "encoder": encoder_config(self.encoder),
            "distance": self.distance.name,
            "normalize": self.normalize,
            "head": self.head_type,
            "input_spec": self.input_spec.to_dict(),
        }
