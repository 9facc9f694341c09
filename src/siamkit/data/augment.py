"""Augmentation on batches of tensors (no torchvision needed).

:class:`RandomAffine` draws one affine transform per image (rotation, shear, scale,
translation, as Koch et al. 2015 used for Omniglot) and applies all of them with a
single ``affine_grid`` + ``grid_sample`` call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["RandomAffine"]


@dataclass
class RandomAffine:
    """Random affine transforms of a float batch (B, C, H, W).

    Args:
        degrees: rotation drawn from [-degrees, degrees].
        shear: shear factor from [-shear, shear], x and y independently (Koch: 0.3).
        scale: (low, high) isotropic scale range.
        translate: largest shift as a fraction of the image size.
        fill: value of pixels that come from outside the image (1.0 for dark ink on
            white paper, 0.0 for bright strokes on black).
        p: probability that an image is transformed at all.
    """

    degrees: float = 10.0
    shear: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.1
    fill: float = 0.0
    p: float = 1.0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"RandomAffine takes (B, C, H, W), got {tuple(x.shape)}")
        b = x.shape[0]
        if b == 0:
            return x

        def u(lo: float, hi: float, n: int = b) -> torch.Tensor:
            return torch.rand(n, generator=generator) * (hi - lo) + lo

        ang = u(-self.degrees, self.degrees) * math.pi / 180
        shx = u(-self.shear, self.shear)
        shy = u(-self.shear, self.shear)
        sc = u(*self.scale)
        tx = u(-self.translate, self.translate) * 2
        ty = u(-self.translate, self.translate) * 2
        apply = torch.rand(b, generator=generator) < self.p
        cos, sin = torch.cos(ang), torch.sin(ang)
        # inverse map (output -> input coords): rotation @ shear, divided by scale
        a11 = (cos - sin * shy) / sc
        a12 = (cos * shx - sin) / sc
        a21 = (sin + cos * shy) / sc
        a22 = (sin * shx + cos) / sc
        theta = torch.stack([torch.stack([a11, a12, tx], 1), torch.stack([a21, a22, ty], 1)], 1)
        eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        theta = torch.where(apply[:, None, None], theta, eye)
        theta = theta.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out + self.fill
