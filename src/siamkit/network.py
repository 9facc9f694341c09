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

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .distances import BaseDistance, get_distance
from .encoders import encoder_config
from .input_spec import InputSpec
from .matryoshka import check_dims, resolve_dim

__all__ = ["SiameseNetwork", "InputSpec"]


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
        matryoshka_dims: the nested embedding sizes the network was trained for
            (:mod:`siamkit.matryoshka`; ending at the full size), saved with the model;
            None for a plain network. :meth:`at_dim` gives the network at one of them.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        distance: str | BaseDistance = "euclidean",
        normalize: bool = False,
        head: str | None = None,
        input_spec: InputSpec | Mapping[str, Any] | None = None,
        matryoshka_dims: Sequence[int] | None = None,
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
        full = int(encoder.embedding_dim)
        self.matryoshka_dims = None if matryoshka_dims is None else check_dims(matryoshka_dims, full)
        #: the prefix size this network embeds to (None: the full size; see :meth:`at_dim`)
        self.dim: int | None = None
        #: sha256 of the weights file this network was saved to / loaded from (None: unsaved)
        self.fingerprint: str | None = None

    @property
    def embedding_dim(self) -> int:
        """The size of this network's embeddings (a view's prefix size, see :meth:`at_dim`)."""
        return int(self.dim) if self.dim is not None else self.full_dim

    @property
    def full_dim(self) -> int:
        """The encoder's embedding size (every prefix is at most this)."""
        return int(self.encoder.embedding_dim)

    def embed(self, x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        """Embed a batch.

        Args:
            x: the inputs.
            dim: the prefix size (None: this network's own, :attr:`embedding_dim`); the
                rule of :func:`siamkit.matryoshka.resolve_dim` applies.

        Shapes:
            (B, ...) -> (B, dim or D).

        Returns:
            The embeddings (L2-normalised after truncation when the network normalises).

        Raises:
            EmbeddingSizeError: a size the model does not take.
        """
        e = self.encoder(x)
        d = self.embedding_dim if dim is None else resolve_dim(dim, self.full_dim, self.matryoshka_dims)
        if d < e.shape[1]:
            e = e[:, :d]
        return F.normalize(e, dim=1) if self.normalize else e

    def at_dim(self, dim: int | None) -> "SiameseNetwork":
        """This network embedding to the prefix size ``dim``: a view sharing every weight.

        Every consumer (embed_all, Verifier, evaluation, a gallery) then works at that
        size. The view's ``fingerprint`` is the weights' with ``#dim=D`` appended, so a
        calibration or gallery made at one size is refused at another.

        Args:
            dim: the size (None or the full size: this network itself).

        Returns:
            The view (or ``self``).

        Raises:
            EmbeddingSizeError: a size the model does not take
                (:func:`siamkit.matryoshka.resolve_dim`).
        """
        d = resolve_dim(dim, self.full_dim, self.matryoshka_dims)
        if d == self.embedding_dim:
            return self
        view = SiameseNetwork(self.encoder, distance=self.distance, normalize=self.normalize,
                              input_spec=self.input_spec, matryoshka_dims=self.matryoshka_dims)
        view.head_type, view.pair_head = self.head_type, self.pair_head
        view.train(self.training)
        base = self.fingerprint.split("#dim=")[0] if self.fingerprint else None
        view.dim = None if d == self.full_dim else d
        view.fingerprint = base if base is None or view.dim is None else f"{base}#dim={d}"
        return view

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
        d = e1.shape[1]  # a Matryoshka prefix uses the head's first d weights
        return F.linear((e1 - e2).abs(), self.pair_head.weight[:, :d], self.pair_head.bias).squeeze(1)

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
        """The JSON-able recipe that rebuilds this network (weights not included; a
        Matryoshka network's ``matryoshka_dims``, a view's ``dim``)."""
        out: dict[str, Any] = {
            "encoder": encoder_config(self.encoder),
            "distance": self.distance.name,
            "normalize": self.normalize,
            "head": self.head_type,
            "input_spec": self.input_spec.to_dict(),
        }
        if self.matryoshka_dims is not None:
            out["matryoshka_dims"] = list(self.matryoshka_dims)
        if self.dim is not None:
            out["dim"] = self.dim
        return out
