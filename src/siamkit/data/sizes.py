"""Image sizes as (height, width): the one parser (torch-free)."""

from __future__ import annotations

from typing import Sequence

__all__ = ["as_size"]


def as_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """An image size as ``(height, width)``.

    Args:
        image_size: a side, (H, W), or None.

    Returns:
        ``(H, W)``, or None for None.

    Raises:
        ValueError: not a positive side or pair.
    """
    if image_size is None:
        return None
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]
