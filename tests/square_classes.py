"""Synthetic image classes shared by the fine-tuning tests."""

from __future__ import annotations

import numpy as np
import torch


def square_classes(n_classes: int = 8, per: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright 8x8 square at a class-specific place of a 28x28 noise image.

    Args:
        n_classes: the classes.
        per: images per class.
        seed: the noise's seed.

    Returns:
        (images (N, 1, 28, 28) uint8, labels (N,)).
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(n_classes):
        for _ in range(per):
            a = (rng.random((28, 28)) * 60).astype(np.uint8)
            r0, c0 = (c * 3) % 20, (c * 5) % 20
            a[r0 : r0 + 8, c0 : c0 + 8] = 230
            xs.append(torch.from_numpy(a)[None])
            ys.append(c)
    return torch.stack(xs), torch.tensor(ys)
