"""Stroke normalisation for signature inputs (the ``strokes`` preprocessing step), and the
input-side shortcut features it is meant to remove (numpy + scipy, torch-free).

CEDAR's skilled forgeries were scanned at other sizes and ink levels than the genuine
signatures. After the ``signature`` step (crop to the ink, pad, resize to a fixed canvas)
those cues survive in the input as *stroke width* (a scan at another resolution, resized
to the same canvas, has thinner or thicker strokes) and *ink intensity / density*.
:class:`StrokeNormalize` takes them out: binarise the ink (Otsu), thin it to a
one-pixel skeleton (Zhang and Suen 1984), and redraw that skeleton at one fixed width. What is left is the signature's shape.

:func:`input_features` measures what is left: one number per prepared input (ink
density, stroke width, ink bounding-box aspect and fill), the inputs of the input-side
shortcut probes of :mod:`siamkit.evaluation.signatures`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .signature_scan import otsu_threshold
from .sizes import as_size

__all__ = ["INPUT_PROBES", "StrokeNormalize", "input_features", "ridge", "thin"]

#: the input-side probes, in report order
INPUT_PROBES = ("input_ink", "input_stroke_width", "input_aspect", "input_fill")


def _ink_mask(a: np.ndarray) -> np.ndarray:
    """Bright ink on black -> a boolean ink mask (Otsu on the non-zero levels)."""
    if a.max() == 0:
        return np.zeros(a.shape, dtype=bool)
    t = otsu_threshold(a)
    mask = a > t
    return mask if mask.any() else a > 0


def thin(mask: np.ndarray, max_iterations: int = 100) -> np.ndarray:
    """Zhang and Suen's (1984) thinning: the ink reduced to one-pixel-wide lines that keep
    its connectivity (vectorised over the image; one pass per pixel of stroke half-width).

    Args:
        mask: (H, W) boolean ink.
        max_iterations: a bound on the passes (strokes are a few pixels wide).

    Returns:
        (H, W) boolean skeleton.
    """
    img = mask.astype(np.uint8)
    for _ in range(max_iterations):
        changed = False
        for sub in (0, 1):
            p = np.pad(img, 1)
            n = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:], p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]
            count = sum(x.astype(np.int32) for x in n)  # P2..P9, clockwise from the top
            transitions = sum(((n[i] == 0) & (n[(i + 1) % 8] == 1)).astype(np.int32) for i in range(8))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            if sub == 0:
                side = ((p2 * p4 * p6) == 0) & ((p4 * p6 * p8) == 0)
            else:
                side = ((p2 * p4 * p8) == 0) & ((p2 * p6 * p8) == 0)
            remove = (img == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if remove.any():
                img[remove] = 0
                changed = True
        if not changed:
            break
    return img.astype(bool)


def ridge(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The skeleton of an ink mask and its distance map.

    Args:
        mask: (H, W) boolean ink.

    Returns:
        (skeleton, distance): the one-pixel-wide skeleton (:func:`thin`) and the
        Euclidean distance of every ink pixel to the background (float64, 0 off the ink):
        on the skeleton, about half the local stroke width.
    """
    from scipy import ndimage  # scikit-learn (a dependency) requires scipy

    return thin(mask), ndimage.distance_transform_edt(mask)


@dataclass(frozen=True)
class StrokeNormalize:
    """Binarise the ink and redraw it at one stroke width.

    Takes the output of the ``signature`` step (bright ink on black); returns ink of value
    255 and ``width`` pixels wide on 0.

    Args:
        width: the stroke width of the output, in pixels (odd widths are exact:
            every skeleton pixel becomes a disc of radius (width - 1) / 2).
        size: ``(height, width)`` of a fixed canvas the input is first stretched to
            (bilinear, aspect ratio not kept: after a ``signature`` step without a size,
            the ink's bounding box then fills the canvas whatever its proportions); None =
            the input's size.
    """

    width: float = 3.0
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not 1.0 <= float(self.width) <= 25.0:
            raise ValueError(f"stroke width must be in [1, 25] pixels, got {self.width!r}")
        if self.size is not None:
            object.__setattr__(self, "size", as_size(tuple(self.size)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StrokeNormalize:
        """The step from its fields (see the class)."""
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """The step's fields, JSON-able (``size`` only when set)."""
        return {"width": float(self.width), **({"size": list(self.size)} if self.size is not None else {})}

    def __call__(self, img: Image.Image) -> Image.Image:
        from scipy import ndimage

        img = img.convert("L") if img.mode != "L" else img
        if self.size is not None and (img.height, img.width) != self.size:
            img = img.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
        mask = _ink_mask(a)
        if not mask.any():
            return Image.fromarray(np.zeros_like(a), "L")
        core, _ = ridge(mask)
        radius = (float(self.width) - 1.0) / 2.0
        out = ndimage.distance_transform_edt(~core) <= radius + 1e-9
        return Image.fromarray(np.where(out, 255, 0).astype(np.uint8), "L")


def input_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """One number per prepared input for each input-side shortcut probe.

    Args:
        images: the network inputs, bright ink on black.

    Shapes:
        images (N, 1, H, W) or (N, H, W) uint8 -> each feature (N,).

    Returns:
        ``{"input_ink": mean value / 255, "input_stroke_width": 2 x the mean distance to
        the background on the ink's skeleton - 1 (a stroke's width in pixels), "input_aspect": log(width / height) of the
        ink's bounding box, "input_fill": the share of that box that is ink}``
        (float64; an input without ink gives 0 for each).
    """
    arr = np.asarray(images)
    if arr.ndim == 4:
        arr = arr[:, 0]
    out = {k: np.zeros(len(arr)) for k in INPUT_PROBES}
    for i, a in enumerate(arr):
        out["input_ink"][i] = float(a.mean()) / 255.0
        mask = _ink_mask(a)
        if not mask.any():
            continue
        core, dist = ridge(mask)
        out["input_stroke_width"][i] = 2.0 * float(dist[core].mean()) - 1.0  # a w-px stroke: (w + 1) / 2 at its centre
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        out["input_aspect"][i] = float(np.log(w / h))
        out["input_fill"][i] = float(mask.sum()) / float(h * w)
    return out
