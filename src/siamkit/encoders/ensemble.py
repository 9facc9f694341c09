"""``ensemble``: several encoders trained apart (seeds apart), used as one.

Each member's embedding is L2-normalised, the unit vectors are concatenated and divided
by ``sqrt(n)``: the result is a unit vector again, and the squared Euclidean distance of
two ensemble embeddings is the mean of the members' squared distances. Because it is one
encoder in the registry, an ensemble is saved, loaded, exported to ONNX, calibrated and
enrolled in a gallery like any other model (``model.safetensors`` holds every member's
weights under ``members.K.``).

Build one from trained networks with :meth:`EnsembleEncoder.from_networks`, or train one
with ``TrainConfig(ensemble=n)`` (:func:`siamkit.training.ensemble.fit_ensemble`).
On AT&T faces (docs/benchmarks.md, "Generalisation (faces)") 3 members cut the unseen
identities' EER from 9.0% to 7.2% clean and from 10.3% to 7.6% relit (flip TTA, 5 folds;
other member seeds: 7.6% and 8.6% with shift+flip), for 3x the training and embedding cost.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import create_encoder, encoder_config, register_encoder

__all__ = ["EnsembleEncoder"]


@register_encoder("ensemble")
class EnsembleEncoder(nn.Module):
    """Encoders used as one: the concatenation of their unit embeddings over sqrt(n).

    Args:
        members: each member as ``{"name": ..., "kwargs": {...}}`` (what
            :func:`~siamkit.encoders.encoder_config` returns), at least 2.

    Raises:
        ValueError: fewer than 2 members, or a member that is not a name + kwargs mapping.
    """

    def __init__(self, *, members: Sequence[dict[str, Any]]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        built = []
        for i, m in enumerate(members):
            if not isinstance(m, dict) or "name" not in m:
                raise ValueError(f"ensemble member {i} must be a mapping with 'name' (and 'kwargs'), got {m!r}")
            built.append(create_encoder(m["name"], **dict(m.get("kwargs") or {})))
        self.members = nn.ModuleList(built)
        self.embedding_dim = sum(int(e.embedding_dim) for e in built)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [F.normalize(m(x), dim=1) for m in self.members]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))

    @classmethod
    def from_networks(cls, networks: Sequence[nn.Module]) -> "EnsembleEncoder":
        """The encoders of trained :class:`~siamkit.network.SiameseNetwork` s as one
        ensemble encoder, their weights copied.

        Args:
            networks: 2 or more networks whose encoders were made by
                :func:`~siamkit.encoders.create_encoder`, without a pair head, all taking
                the same inputs.

        Returns:
            The ensemble encoder (registered by name, so the network built on it saves).

        Raises:
            ValueError: fewer than 2 networks, or a network with a pair head.
        """
        if len(networks) < 2:
            raise ValueError(f"an ensemble needs at least 2 networks, got {len(networks)}")
        if any(getattr(n, "pair_head", None) is not None for n in networks):
            raise ValueError("networks with a pair head cannot be ensembled by their embeddings")
        enc = create_encoder("ensemble", members=[encoder_config(n.encoder) for n in networks])
        for member, net in zip(enc.members, networks):
            member.load_state_dict(net.encoder.state_dict())
        return enc  # type: ignore[return-value]
