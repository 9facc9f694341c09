"""Image encoders: ``conv4``, ``koch``, ``resnet``.

All take any input size (grey or colour, set by ``in_channels``), end in a fixed-size
pooled feature map, and project to ``embedding_dim`` (or return the pooled features
when ``embedding_dim`` is None). Each returns (B, embedding_dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ._registry import register_encoder

__all__ = ["Conv4Encoder", "KochEncoder", "ResNetEncoder"]


class _SafeMaxPool(nn.Module):
    """2x2 max pooling that leaves maps smaller than 2x2 as they are (tiny inputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 2 or x.shape[-2] < 2:
            return x
        return F.max_pool2d(x, 2)


class _ImageEncoder(nn.Module):
    """Shared input check and projection head for the image encoders."""

    in_channels: int
    embedding_dim: int

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise DataError(f"{type(self).__name__} takes (B, C, H, W) images, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise DataError(
                f"{type(self).__name__} was built for {self.in_channels}-channel images, "
                f"got {x.shape[1]} channels (shape {tuple(x.shape)})"
            )

    def _make_head(self, features: int, embedding_dim: int | None, dropout: float) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        if embedding_dim is not None:
            layers.append(nn.Linear(features, embedding_dim))
        self.head = nn.Sequential(*layers)
        self.embedding_dim = embedding_dim if embedding_dim is not None else features


@register_encoder("conv4")
class Conv4Encoder(_ImageEncoder):
    """Four conv3x3-BN-ReLU-maxpool blocks (Prototypical Networks, Snell et al. 2017).

    Args:
        in_channels: 1 (grey) or 3 (colour).
        embedding_dim: size of a linear projection; None = the pooled features
            (``width * grid**2``, 64 for a 28x28 input as in the paper).
        width: channels of every block (64 in the paper).
        grid: the feature map is average-pooled to grid x grid before flattening
            (1 = global pooling; a 28x28 input is already 1x1).
        dropout: before the projection.
        depth: number of blocks (4 in the paper; fewer keep more spatial layout for
            small inputs).

    Shapes: (B, in_channels, H, W) -> (B, embedding_dim).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        embedding_dim: int | None = None,
        width: int = 64,
        grid: int = 1,
        dropout: float = 0.0,
        depth: int = 4,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.in_channels = in_channels
        blocks: list[nn.Module] = []
        c = in_channels
        for _ in range(depth):
            blocks += [
                nn.Conv2d(c, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                _SafeMaxPool(),
            ]
            c = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self._make_head(width * grid * grid, embedding_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.head(self.pool(self.features(x)))


@register_encoder("koch")
class KochEncoder(_ImageEncoder):
    """The convolutional twin of Koch, Zemel & Salakhutdinov (2015).

    conv 64@10x10 - pool - 128@7x7 - pool - 128@4x4 - pool - 256@4x4, then a 4096-unit
    sigmoid layer. At 105x105 the last map is 6x6 as in the paper; other sizes are
    average-pooled to 6x6 so any input size works. 39M parameters at the default size.

    Args:
        in_channels: 1 or 3.
        embedding_dim: units of the sigmoid layer (4096 in the paper).
        batch_norm: add BatchNorm after each convolution (not in the paper; trains faster).
        dropout: before the sigmoid layer.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        embedding_dim: int = 4096,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels

        def conv(cin: int, cout: int, k: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, k)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            return layers

        self.features = nn.Sequential(
            *conv(in_channels, 64, 10), _SafeMaxPool(),
            *conv(64, 128, 7), _SafeMaxPool(),
            *conv(128, 128, 4), _SafeMaxPool(),
            *conv(128, 256, 4),
        )
        self.pool = nn.AdaptiveAvgPool2d(6)
        self._make_head(256 * 36, embedding_dim, dropout)
        self.head.append(nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if x.shape[-1] < 65 or x.shape[-2] < 65:
            raise DataError(f"the koch encoder needs images of at least 65x65, got {tuple(x.shape[-2:])}")
        return self.head(self.pool(self.features(x)))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


@register_encoder("resnet")
class ResNetEncoder(_ImageEncoder):
    """A small residual network: a 3x3 stem and four stages of basic blocks.

    Args:
        in_channels: 1 or 3.
        embedding_dim: projection size; None = the pooled features (``widths[-1]``).
        widths: channels of the four stages (each halves the resolution).
        blocks_per_stage: basic blocks per stage.
        dropout: before the projection.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        embedding_dim: int | None = 128,
        widths: tuple[int, ...] | list[int] = (32, 64, 128, 256),
        blocks_per_stage: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        widths = tuple(widths)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks_per_stage):
                stages.append(_BasicBlock(c, w, stride=2 if (j == 0 and i > 0) else 1))
                c = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._make_head(c, embedding_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.head(self.pool(self.stages(self.stem(x))))
