"""Signature scan preprocessing (numpy + PIL only, no torch): ink crop, aspect padding, inversion.

:class:`SignaturePreprocess` is the ``signature`` kind of :mod:`siamkit.data.preprocess`
(so a model trained on scans records it, and the torch-free ONNX runtime applies it);
:mod:`siamkit.data.signatures` re-exports it with the CEDAR loaders. See that module's
doc for the steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .sizes import as_size

__all__ = ["otsu_threshold", "SignaturePreprocess"]


def otsu_threshold(gray: np.ndarray) -> int:
    """Otsu's threshold of a uint8 image: the t maximising the between-class variance.

    Returns:
        t in 0..255; the two classes are ``gray <= t`` and ``gray > t``. A constant
        image returns its value (one class is then empty).
    """
    gray = np.asarray(gray)
    if gray.dtype != np.uint8:
        raise TypeError(f"otsu_threshold takes a uint8 image, got {gray.dtype}")
    if gray.size == 0:
        raise ValueError("otsu_threshold got an empty image")
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    omega = np.cumsum(p)  # weight of class gray <= t
    mu = np.cumsum(p * np.arange(256))
    denom = omega * (1.0 - omega)
    valid = denom > 1e-12
    if not valid.any():
        return int(gray.flat[0])
    between = np.zeros(256)
    between[valid] = (mu[-1] * omega[valid] - mu[valid]) ** 2 / denom[valid]
    return int(np.argmax(between))


def _remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` without its 8-connected components of fewer than ``min_area`` pixels."""
    from scipy import ndimage  # scikit-learn (a dependency) requires scipy

    lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return mask
    area = np.bincount(lab.ravel(), minlength=n + 1)
    keep = area >= min_area
    keep[0] = False
    return keep[lab]


@dataclass(frozen=True)
class SignaturePreprocess:
    """Crop a scanned signature to its ink, keep its aspect ratio, make the ink bright.

    A callable for the ``preprocess`` argument of :func:`~siamkit.data.images.load_image`
    and ``ImageFolderDataset.from_folder``: takes and returns a PIL image in mode "L".

    Args:
        size: output (H, W): the crop is padded with background to the aspect ratio
            W / H, then resized (bilinear, antialiased) to exactly (H, W). None = no
            padding or resizing (the crop only).
        margin: background kept around the ink's bounding box, as a fraction of the
            box's longer side (at least 1 pixel when > 0).
        min_speck_area: ink components (8-connected) smaller than this many pixels of
            the input scan are erased before cropping; 0 or 1 = keep everything. The
            default 4 removes scanner dust without touching the dots of an "i".
        clean_background: set every non-ink pixel (above the Otsu threshold) to pure
            background, so the output background is exactly 0 (inverted). Makes raw and
            background-cleaned scans look alike.
        invert: output ``255 - x``: bright ink on black (the usual input for networks).

    Returns (when called):
        PIL "L" image of ``size``; a scan with no ink (a constant image) gives a blank
        background image.
    """

    size: tuple[int, int] | None = (155, 220)
    margin: float = 0.02
    min_speck_area: int = 4
    clean_background: bool = True
    invert: bool = True

    def __post_init__(self) -> None:
        if self.size is not None:
            object.__setattr__(self, "size", as_size(self.size))
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be a fraction in [0, 1), got {self.margin}")
        if self.min_speck_area < 0:
            raise ValueError(f"min_speck_area must be >= 0, got {self.min_speck_area}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SignaturePreprocess:
        """The step from its JSON fields (``size`` as [height, width] or null)."""
        kw = dict(d)
        if kw.get("size") is not None:
            kw["size"] = tuple(kw["size"])
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """The step's fields, JSON-able."""
        return {
            "size": list(self.size) if self.size is not None else None,
            "margin": self.margin,
            "min_speck_area": self.min_speck_area,
            "clean_background": self.clean_background,
            "invert": self.invert,
        }

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.mode != "L":
            img = img.convert("L")
        a = np.asarray(img, dtype=np.uint8)
        t = otsu_threshold(a)
        dark = a <= t
        n_dark = int(dark.sum())
        if n_dark == 0 or n_dark == a.size:
            return self._finish(np.full((1, 1), 255, dtype=np.uint8))  # no ink
        if n_dark <= a.size - n_dark:
            ink = dark
        else:  # bright ink on a dark background: flip to dark-on-light first
            ink, a = ~dark, 255 - a
        if self.min_speck_area > 1:
            kept = _remove_small_components(ink, self.min_speck_area)
            if kept.any():  # only specks: keep them rather than lose the signature
                ink = kept
        a = np.where(ink, a, np.uint8(255)) if self.clean_background else a.copy()
        if not self.clean_background and self.min_speck_area > 1:
            a[(a <= t) & ~ink] = 255  # erase the removed specks
        rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        m = 0 if self.margin == 0 else max(1, int(round(self.margin * max(r1 - r0, c1 - c0))))
        crop = np.full((r1 - r0 + 2 * m, c1 - c0 + 2 * m), 255, dtype=np.uint8)
        crop[m : m + r1 - r0, m : m + c1 - c0] = a[r0:r1, c0:c1]
        return self._finish(crop)

    def _finish(self, crop: np.ndarray) -> Image.Image:
        if self.size is not None:
            h, w = crop.shape
            th, tw = self.size
            if w * th < tw * h:  # too narrow: pad left and right
                new_h, new_w = h, max(w, int(round(h * tw / th)))
            else:  # too flat: pad top and bottom
                new_h, new_w = max(h, int(round(w * th / tw))), w
            canvas = np.full((new_h, new_w), 255, dtype=np.uint8)
            top, left = (new_h - h) // 2, (new_w - w) // 2
            canvas[top : top + h, left : left + w] = crop
            crop = canvas
        if self.invert:
            crop = 255 - crop
        out = Image.fromarray(np.ascontiguousarray(crop), mode="L")
        if self.size is not None and out.size != (self.size[1], self.size[0]):
            out = out.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        return out
