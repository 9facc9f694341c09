"""``mlp``: an encoder for vectors (tabular features)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import DataError
from ._registry import register_encoder

__all__ = ["MLPEncoder"]


@register_encoder("mlp")
class MLPEncoder(nn.Module):
    """Linear-BN-ReLU(-Dropout) blocks, then a linear projection.

    Args:
        in_features: input vector size.
        embedding_dim: output size.
        hidden: sizes of the hidden layers.
        dropout: after each hidden block.
        batch_norm: BatchNorm1d in each hidden block.

    Shapes: (B, in_features) -> (B, embedding_dim). Images (B, C, H, W) are flattened
    first, so ``mlp`` also serves as a raw-pixel baseline encoder.
    """

    def __init__(
        self,
        *,
        in_features: int,
        embedding_dim: int = 64,
        hidden: tuple[int, ...] | list[int] = (256, 256),
        dropout: float = 0.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        layers: list[nn.Module] = []
        c = in_features
        for h in hidden:
            layers.append(nn.Linear(c, h, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            c = h
        layers.append(nn.Linear(c, embedding_dim))
        self.net = nn.Sequential(*layers)
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise DataError(f"mlp encoder was built for {self.in_features} features, got {x.shape[1]}")
        return self.net(x)
