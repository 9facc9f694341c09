"""Illumination normalisation: one input-recipe step, PIL image -> PIL image.

Lighting is what breaks a face model on a new camera: a side light, a darker room, a
cast shadow. :class:`IlluminationNorm` removes most of it from each image before the
network sees it, for training and test images alike (and at inference, in the model's
input recipe). Methods:

- ``"histeq"``: global histogram equalisation (the grey levels' cumulative histogram
  becomes a straight line; :func:`PIL.ImageOps.equalize`).
- ``"tantriggs"``: the preprocessing chain of Tan and Triggs (2010), "Enhanced local
  texture feature sets for face recognition under difficult lighting conditions": gamma
  correction (``gamma`` 0.2), a difference of Gaussians (``sigma0`` 1, ``sigma1`` 2:
  removes the slowly varying shading and the finest noise), and the two-stage contrast
  equalisation (``alpha`` 0.1, ``tau`` 10) with a final ``tau * tanh(x / tau)``. It is
  exactly invariant to a global gain and nearly invariant to a global gamma change.
- ``"standardize"``: per-image zero mean and unit variance, clipped to ``clip``
  standard deviations.

Every method returns a grey ("L") uint8 image (floats rescaled to 0..255), so the step
composes with resizing and the rest of an input recipe. numpy, PIL and scipy only: the
torch-free ONNX runtime applies the same step.

Example:
    >>> from PIL import Image
    >>> norm = IlluminationNorm(method="tantriggs")
    >>> norm(Image.new("L", (46, 56), 128)).mode
    'L'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from scipy.ndimage import gaussian_filter

from ..errors import SiamkitError

__all__ = ["IlluminationNorm", "METHODS", "tan_triggs", "standardize", "to_uint8"]

#: the methods :class:`IlluminationNorm` knows
METHODS = ("histeq", "tantriggs", "standardize")
KIND = "illumination"


def tan_triggs(
    img: np.ndarray,
    *,
    gamma: float = 0.2,
    sigma0: float = 1.0,
    sigma1: float = 2.0,
    alpha: float = 0.1,
    tau: float = 10.0,
) -> np.ndarray:
    """The Tan and Triggs (2010) chain on one grey image, as floats.

    Args:
        img: (H, W) grey levels (any non-negative scale).
        gamma: the exponent of the gamma correction (0 = log).
        sigma0: the inner Gaussian of the difference of Gaussians (pixels).
        sigma1: the outer Gaussian.
        alpha: the exponent that makes the contrast equalisation robust to outliers.
        tau: the level large values are compressed to (``tau * tanh(x / tau)``).

    Returns:
        (H, W) float64 in (-tau, tau), zero-centred; all zeros for a flat image.
    """
    x = np.asarray(img, dtype=np.float64)
    x = np.log1p(x) if gamma == 0 else np.power(np.maximum(x, 0.0), gamma)
    x = gaussian_filter(x, sigma0, mode="reflect") - gaussian_filter(x, sigma1, mode="reflect")
    for cap in (None, tau):
        a = np.abs(x) if cap is None else np.minimum(np.abs(x), cap)
        scale = np.mean(a**alpha) ** (1.0 / alpha)
        if not scale > 1e-12:
            return np.zeros_like(x)
        x = x / scale
    return tau * np.tanh(x / tau)


def standardize(img: np.ndarray) -> np.ndarray:
    """Per-image standardisation: zero mean, unit variance (a flat image gives zeros).

    Args:
        img: (H, W) grey levels.

    Returns:
        (H, W) float64.
    """
    x = np.asarray(img, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


def to_uint8(x: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Floats -> uint8 0..255, linearly from [lo, hi] (default: the image's min and max).

    Args:
        x: (H, W) floats.
        lo: the value that becomes 0 (values below are clipped).
        hi: the value that becomes 255.

    Returns:
        (H, W) uint8; mid-grey 128 where ``hi == lo`` (a flat image).
    """
    lo = float(x.min()) if lo is None else lo
    hi = float(x.max()) if hi is None else hi
    if not hi - lo > 1e-12:
        return np.full(x.shape, 128, dtype=np.uint8)
    return np.clip(np.rint((x - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class IlluminationNorm:
    """Illumination normalisation of one image, PIL -> PIL ("L", uint8): see the module.

    Args:
        method: "histeq", "tantriggs" or "standardize".
        gamma, sigma0, sigma1, alpha, tau: the Tan and Triggs parameters (tantriggs).
        clip: standardize maps [-clip, clip] standard deviations to 0..255.

    Raises:
        SiamkitError: an unknown method or a parameter out of range.
    """

    method: str = "tantriggs"
    gamma: float = 0.2
    sigma0: float = 1.0
    sigma1: float = 2.0
    alpha: float = 0.1
    tau: float = 10.0
    clip: float = 3.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SiamkitError(f"unknown illumination method {self.method!r}; choose one of {list(METHODS)}")
        if not 0 <= self.gamma <= 1:
            raise SiamkitError(f"illumination gamma must be in [0, 1], got {self.gamma}")
        if not 0 < self.sigma0 < self.sigma1:
            raise SiamkitError(f"illumination needs 0 < sigma0 < sigma1, got {self.sigma0}, {self.sigma1}")
        if not 0 < self.alpha <= 1 or not self.tau > 0 or not self.clip > 0:
            raise SiamkitError("illumination alpha must be in (0, 1], tau and clip > 0")

    def __call__(self, img: Image.Image) -> Image.Image:
        grey = img.convert("L")
        if self.method == "histeq":
            return ImageOps.equalize(grey)
        arr = np.asarray(grey, dtype=np.float64)
        if self.method == "standardize":
            return Image.fromarray(to_uint8(standardize(arr), -self.clip, self.clip), mode="L")
        t = tan_triggs(arr, gamma=self.gamma, sigma0=self.sigma0, sigma1=self.sigma1, alpha=self.alpha, tau=self.tau)
        return Image.fromarray(to_uint8(t), mode="L")

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "illumination", "method": ..., <parameters>}``, JSON-able."""
        return {"kind": KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IlluminationNorm":
        """The step of :meth:`to_dict`'s output (missing parameters take their defaults).

        Args:
            d: ``{"method": ..., ...}``, with or without ``"kind": "illumination"``.

        Returns:
            The step.

        Raises:
            SiamkitError: another kind, an unknown key or a bad value.
        """
        d = dict(d)
        kind = d.pop("kind", KIND)
        if kind != KIND:
            raise SiamkitError(f"an illumination step has kind {KIND!r}, got {kind!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SiamkitError(f"unknown illumination option(s) {unknown}; known: {sorted(known)}")
        return cls(**d)
