"""``conv4_multiscale``: a multi-granularity twin, embeddings from two depths of conv4.

The seeds' "hierarchical structures": the last block's map carries the global shape, an
earlier block's map (pooled to ``tap_grid`` x ``tap_grid``) the local detail. Two ways to
combine them (``mode``):

- ``"fused"``: both pooled maps concatenated, one linear projection to ``embedding_dim``
  (the network learns the weighting);
- ``"concat"``: each map projected on its own, ``embedding_dim - local_dim`` values of
  global shape first, then ``local_dim`` values of local detail; each part is
  L2-normalised and scaled by ``sqrt(weight)`` (``local_weight`` for the local part,
  ``1 - local_weight`` for the global), so the squared distance of the whole is the
  weighted sum of the parts' (before the network's own normalisation).

``bench/bench_multiscale.py`` measures on Omniglot whether either helps over conv4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_encoder
from .conv import Conv4Encoder

__all__ = ["MultiScaleConv4Encoder"]


@register_encoder("conv4_multiscale")
class MultiScaleConv4Encoder(Conv4Encoder):
    """conv4 with a second embedding from an intermediate block (see the module docstring).

    Args:
        in_channels: 1 (grey) or 3 (colour).
        embedding_dim: the embedding's size.
        width: channels of every block.
        grid: the last map is average-pooled to grid x grid.
        depth: number of blocks.
        tap: the block (1-based, < depth) whose output is the local map.
        tap_grid: the local map is average-pooled to tap_grid x tap_grid.
        mode: ``"fused"`` or ``"concat"``.
        local_dim: ``"concat"``: the local part's size (< embedding_dim).
        local_weight: ``"concat"``: the local part's share of the squared distance (0..1).
        dropout: before the projections.

    Shapes: (B, in_channels, H, W) -> (B, embedding_dim).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        embedding_dim: int = 128,
        width: int = 64,
        grid: int = 1,
        depth: int = 4,
        tap: int = 2,
        tap_grid: int = 3,
        mode: str = "fused",
        local_dim: int = 32,
        local_weight: float = 0.25,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels=in_channels, embedding_dim=embedding_dim, width=width, grid=grid,
                         dropout=dropout, depth=depth)
        if not 1 <= tap < depth:
            raise ValueError(f"tap must be a block before the last (1..{depth - 1}), got {tap}")
        if mode not in ("fused", "concat"):
            raise ValueError(f"mode must be 'fused' or 'concat', got {mode!r}")
        if mode == "concat" and not (0 < local_dim < embedding_dim and 0.0 < local_weight < 1.0):
            raise ValueError(f"concat needs 0 < local_dim < embedding_dim and 0 < local_weight < 1, got {local_dim}, {local_weight}")
        self.tap, self.mode, self.local_dim, self.local_weight = tap, mode, local_dim, float(local_weight)
        self.tap_pool = nn.AdaptiveAvgPool2d(tap_grid)
        g_feat, l_feat = width * grid * grid, width * tap_grid * tap_grid
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        if mode == "fused":
            self.head = nn.Sequential(*drop, nn.Linear(g_feat + l_feat, embedding_dim))
        else:
            self.head = nn.Sequential(*drop, nn.Linear(g_feat, embedding_dim - local_dim))
            self.local_head = nn.Sequential(*drop, nn.Linear(l_feat, local_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        cut = 4 * self.tap  # each block is conv, BN, ReLU, pool
        mid = self.features[:cut](x)
        glob = self.pool(self.features[cut:](mid)).flatten(1)
        loc = self.tap_pool(mid).flatten(1)
        if self.mode == "fused":
            return self.head(torch.cat([glob, loc], 1))
        g = F.normalize(self.head(glob), dim=1) * math.sqrt(1.0 - self.local_weight)
        loc_e = F.normalize(self.local_head(loc), dim=1) * math.sqrt(self.local_weight)
        return torch.cat([g, loc_e], 1)
