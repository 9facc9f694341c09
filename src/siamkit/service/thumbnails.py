"""Thumbnails for the console: a small PNG of a stored gallery sample or a reported image.

The server draws them from what it stores (never from a path a client names, never the
original file): a sample kept as a raw ``uint8`` / ``float32`` array (what the service
stores of an upload: the model's input) or as image-file bytes, and a feedback report's
validated image bytes. The result is at most ``size`` x ``size`` pixels (aspect kept);
inputs smaller than that (a 28 x 28 model input) are enlarged with nearest-neighbour
sampling so that the pixels stay visible.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from ..data.decode import ImageDecodeError, decode_pil

__all__ = ["MIN_SIZE", "MAX_SIZE", "array_image", "thumbnail_png", "stored_sample_png", "image_bytes_png"]

#: the smallest and largest thumbnail edge a request may ask for
MIN_SIZE = 16
MAX_SIZE = 256


def array_image(arr: np.ndarray) -> Image.Image | None:
    """A kept raw array as an image: (C, H, W) or (H, W) with 1 or 3 channels; floats are
    scaled from their own min..max to 0..255. None for any other shape.

    Args:
        arr: the array (uint8 or float).

    Returns:
        A grey (``L``) or ``RGB`` image, or None.

    Shapes:
        arr (C, H, W) or (H, W) -> an H x W image.
    """
    a = np.asarray(arr)
    if a.ndim == 3:
        if a.shape[0] not in (1, 3):
            return None
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
    if a.ndim not in (2, 3) or min(a.shape[:2]) < 1:
        return None
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            return None
        lo, hi = float(a.min()), float(a.max())
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a), "L" if a.ndim == 2 else "RGB")


def thumbnail_png(img: Image.Image, size: int) -> bytes:
    """``img`` fitted into ``size`` x ``size`` (aspect kept; small images enlarged with
    nearest-neighbour sampling), as PNG bytes.

    Args:
        img: the image (any mode; converted to grey or RGB).
        size: the largest edge, :data:`MIN_SIZE`..:data:`MAX_SIZE`.

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: ``size`` out of range.
    """
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"size must be in {MIN_SIZE}..{MAX_SIZE}, got {size}")
    img = img.convert("L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
    w, h = img.size
    scale = int(size) / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = img.resize(new, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def image_bytes_png(data: bytes, size: int, *, max_pixels: int) -> bytes | None:
    """A thumbnail of an image file's bytes (validated and decoded like an upload), or
    None when they are not a PNG / JPEG / GIF / BMP / WebP image this service decodes.

    Args:
        data: the image file's bytes.
        size: the largest edge.
        max_pixels: the pixel cap checked from the header before decoding.

    Returns:
        PNG bytes, or None.
    """
    try:
        img = decode_pil(data, max_bytes=max(1, len(data)), max_pixels=max_pixels, what="the stored image")
    except ImageDecodeError:
        return None
    return thumbnail_png(img, size)


def stored_sample_png(sample: Any, size: int, *, max_pixels: int) -> bytes | None:
    """A thumbnail of a gallery sample's kept input, or None when it cannot be drawn.

    Args:
        sample: a :class:`~siamkit.gallery.store.StoredSample` (raw array or file bytes).
        size: the largest edge.
        max_pixels: the pixel cap of kept image files.

    Returns:
        PNG bytes, or None.
    """
    if sample.format.startswith("file:"):
        return image_bytes_png(sample.data, size, max_pixels=max_pixels)
    try:
        img = array_image(sample.array())
    except Exception:  # noqa: BLE001 - a damaged row: no thumbnail rather than a 500
        return None
    return None if img is None else thumbnail_png(img, size)
