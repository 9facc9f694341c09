"""Lighting augmentation on batches of tensors: a random smooth illumination field and
a random gamma per image, drawn from the epoch's generator (so resume stays exact).

Deliberately another family than the relit test condition of :mod:`siamkit.data.relight`
(a linear gradient and a hard-edged half-plane shadow): the field here is a 3x3 grid of
random gains, bilinearly upsampled, so a recipe is not judged on the very distortion it
was trained on. It acts on the model's inputs, i.e. after any preprocessing step of the
input recipe (illumination normalisation included).

(kornia has lighting augmentations too, but they draw from torch's global generator, and
the training loop's exact-resume contract needs every draw from the epoch's generator.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["RandomLighting"]


@dataclass
class RandomLighting:
    """Random lighting of a float batch (B, C, H, W) in [0, 1].

    Args:
        strength: in (0, 1]: the darkest gain of the illumination field is
            ``1 - 0.8 * strength``, and gamma is drawn log-uniformly from
            ``[2**-strength, 2**strength]``.
        grid: the illumination field's control points per side (2 = a linear ramp,
            3 = one bump or dip).
        p: probability that an image is changed at all.
    """

    strength: float = 0.5
    grid: int = 3
    p: float = 0.8

    def __post_init__(self) -> None:
        if not 0 < self.strength <= 1:
            raise ValueError(f"lighting strength must be in (0, 1], got {self.strength}")
        if self.grid < 2:
            raise ValueError(f"lighting grid must be >= 2, got {self.grid}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"RandomLighting takes (B, C, H, W), got {tuple(x.shape)}")
        b = x.shape[0]
        if b == 0:
            return x
        lo = 1.0 - 0.8 * self.strength
        gains = torch.rand(b, 1, self.grid, self.grid, generator=generator) * (1.0 - lo) + lo
        gains = gains / gains.amax(dim=(2, 3), keepdim=True)  # the brightest point keeps its light
        log_g = (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * self.strength * math.log(2.0)
        apply = (torch.rand(b, 1, 1, 1, generator=generator) < self.p).to(x.dtype)
        field = F.interpolate(gains, size=x.shape[-2:], mode="bilinear", align_corners=True).to(x.dtype)
        lit = (x.clamp(0, 1) * field).clamp_min(1e-6) ** torch.exp(log_g).to(x.dtype)
        return apply * lit + (1 - apply) * x
