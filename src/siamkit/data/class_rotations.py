"""Rotations as new classes (Santoro et al. 2016 / Vinyals et al. 2016 class augmentation):
each 90-degree rotation of a class's images is a class of its own.

Used by ``load_omniglot(rotations=...)`` and by ``siamkit train`` (a recipe's
``[data] rotations``, or ``--rotations``) on any folder, so the command line trains on the
same images, labels and order as the library call.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import DataError
from .images import ImageFolderDataset

__all__ = ["ROTATIONS", "check_rotations", "rotated_copies", "with_rotated_classes"]

#: the rotations there are (degrees, counter-clockwise)
ROTATIONS = (0, 90, 180, 270)


def check_rotations(rotations: Sequence[int]) -> tuple[int, ...]:
    """The rotations as a tuple of ints, refused unless distinct values of :data:`ROTATIONS`.

    Args:
        rotations: degrees.

    Returns:
        The rotations.

    Raises:
        ValueError: empty, repeated, or not a multiple of 90 in [0, 270].
    """
    rots = tuple(int(r) for r in rotations)
    if not rots or any(r not in ROTATIONS for r in rots) or len(set(rots)) != len(rots):
        raise ValueError(f"rotations must be distinct values among {ROTATIONS}, got {tuple(rotations)}")
    return rots


def rotated_copies(base: torch.Tensor, rotations: Sequence[int]) -> torch.Tensor:
    """``base`` once per rotation, rotation-major: image ``r * n + i`` is rotation
    ``rotations[r]`` of image ``i`` (``torch.rot90(img, k=R // 90)``, counter-clockwise).

    Args:
        base: the images.
        rotations: degrees, as :func:`check_rotations` accepts.

    Shapes:
        base (N, C, H, W) -> (len(rotations) * N, C, H, W); H == W when 90 or 270 is asked.

    Returns:
        The images (``base`` itself for ``(0,)``).

    Raises:
        DataError: 90 or 270 degrees of non-square images.
    """
    rots = check_rotations(rotations)
    if rots == (0,):
        return base
    if any(r in (90, 270) for r in rots) and base.shape[-1] != base.shape[-2]:
        raise DataError(f"rotations by 90/270 need square images, these are {tuple(base.shape[-2:])}")
    n = base.shape[0]
    images = torch.empty((n * len(rots), *base.shape[1:]), dtype=base.dtype)
    for r_i, r in enumerate(rots):
        images[r_i * n : (r_i + 1) * n] = torch.rot90(base, k=r // 90, dims=(-2, -1)) if r else base
    return images


def with_rotated_classes(ds: ImageFolderDataset, rotations: Sequence[int]) -> ImageFolderDataset:
    """Every class once per rotation, each rotation a new class ``"NAME/rotR"`` (rotation 0
    keeps its name), ordered rotation-major as :func:`rotated_copies`.

    Args:
        ds: the dataset (square images when 90 or 270 is asked).
        rotations: degrees, as :func:`check_rotations` accepts.

    Returns:
        The augmented dataset (``ds`` itself for ``(0,)``).

    Raises:
        DataError: non-square images with 90 / 270.
    """
    rots = check_rotations(rotations)
    if rots == (0,):
        return ds
    k = len(ds.classes)
    return ImageFolderDataset(
        images=rotated_copies(ds.images, rots),
        labels=torch.cat([ds.labels + r_i * k for r_i in range(len(rots))]),
        classes=[c if r == 0 else f"{c}/rot{r}" for r in rots for c in ds.classes],
        paths=list(ds.paths) * len(rots),
    )
