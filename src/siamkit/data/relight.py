"""Seeded test conditions a model was never tuned on: other lighting, other framing.

A face set from another camera differs in two ways a class-disjoint split of one set
never shows: the light (a side lamp, a darker room, a cast shadow) and the framing (a
tighter or looser crop, the face off-centre). :func:`relight` and :func:`reframe` make
such a test set from any set of grey images, deterministically: image ``i`` under seed
``s`` always gets the same change, so every recipe and every fold is judged on the very
same relit / reframed images. They are test conditions: apply them to test images only,
never to training images (a lighting augmentation for training lives elsewhere and is
drawn from other distributions).

- relit: a directional light gradient (a random direction; the far side keeps 15-50% of
  the light), a global gamma in [0.5, 2.0] (log-uniform) and, on half the images, a
  soft-edged cast shadow (a half-plane darkened to 35-65%).
- reframed: a scale in [0.8, 1.2] about the centre (zoom in = a tighter crop, zoom out
  = a looser one, edges replicated) and a shift of up to 10% of each side.

numpy and scipy only.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import affine_transform

from ..errors import DataError

__all__ = ["relight", "reframe", "relight_image", "reframe_image", "CONDITIONS", "apply_condition"]


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _unit_ramp(h: int, w: int, angle: float) -> np.ndarray:
    """(H, W) in [0, 1], rising along the direction ``angle`` (radians)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = (xx - (w - 1) / 2) * math.cos(angle) + (yy - (h - 1) / 2) * math.sin(angle)
    span = t.max() - t.min()
    return (t - t.min()) / span if span > 0 else np.zeros((h, w))


def relight_image(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One image under a random light (gradient, gamma, maybe a cast shadow).

    Args:
        img: (H, W) uint8 grey image.
        rng: the draws' source.

    Returns:
        (H, W) uint8.
    """
    h, w = img.shape
    x = img.astype(np.float64) / 255.0
    floor = rng.uniform(0.15, 0.5)
    light = floor + (1.0 - floor) * _unit_ramp(h, w, rng.uniform(0, 2 * math.pi))
    gamma = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    if rng.random() < 0.5:
        # a cast shadow: a half-plane through a random point, soft over ~8% of the image
        edge = _unit_ramp(h, w, rng.uniform(0, 2 * math.pi)) - rng.uniform(0.3, 0.7)
        inside = 1.0 / (1.0 + np.exp(-edge / 0.04))
        light = light * (1.0 - (1.0 - rng.uniform(0.35, 0.65)) * inside)
    out = np.power(np.clip(x * light, 0.0, 1.0), gamma)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def reframe_image(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One image under a random framing (scale about the centre, shift).

    Args:
        img: (H, W) uint8 grey image.
        rng: the draws' source.

    Returns:
        (H, W) uint8 (pixels from outside the image replicate the edge).
    """
    h, w = img.shape
    s = rng.uniform(0.8, 1.2)
    dy, dx = rng.uniform(-0.1, 0.1) * h, rng.uniform(-0.1, 0.1) * w
    cy, cx = (h - 1) / 2, (w - 1) / 2
    # output (y, x) reads input centre + (out - centre - shift) / s
    offset = (cy - (cy + dy) / s, cx - (cx + dx) / s)
    out = affine_transform(img.astype(np.float64), [1 / s, 1 / s], offset=offset, order=1, mode="nearest")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _apply(images: np.ndarray, seed: int, one: object) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise DataError(f"test conditions take uint8 images (N, C, H, W), got {arr.dtype} {arr.shape}")
    out = np.empty_like(arr)
    for i in range(arr.shape[0]):
        rng = _rng(seed, i)
        for c in range(arr.shape[1]):
            out[i, c] = one(arr[i, c], rng)  # type: ignore[operator]
    return out


def relight(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The seeded "relit" condition of a set of images (see the module).

    Args:
        images: (N, C, H, W) uint8 (at the source resolution, before any input recipe).
        seed: image ``i`` draws from ``(seed, i)``: the same set gives the same images.

    Returns:
        (N, C, H, W) uint8.

    Raises:
        DataError: not uint8 (N, C, H, W).
    """
    return _apply(images, seed, relight_image)


def reframe(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The seeded "reframed" condition of a set of images (see the module).

    Args:
        images: (N, C, H, W) uint8.
        seed: image ``i`` draws from ``(seed, i)``.

    Returns:
        (N, C, H, W) uint8.

    Raises:
        DataError: not uint8 (N, C, H, W).
    """
    return _apply(images, seed, reframe_image)


#: condition name -> function (images, seed) -> images; "clean" leaves them as they are
CONDITIONS = {"clean": lambda images, seed=0: np.asarray(images).copy(), "relit": relight, "reframed": reframe}


def apply_condition(name: str, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """One of :data:`CONDITIONS` by name.

    Args:
        name: "clean", "relit" or "reframed".
        images: (N, C, H, W) uint8.
        seed: the condition's seed.

    Returns:
        (N, C, H, W) uint8.

    Raises:
        DataError: an unknown condition.
    """
    if name not in CONDITIONS:
        raise DataError(f"unknown test condition {name!r}; choose one of {sorted(CONDITIONS)}")
    return CONDITIONS[name](images, seed)
