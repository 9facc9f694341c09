"""Face folders (one sub-folder per identity) and identity-disjoint splits.

The AT&T / ORL "Database of Faces" layout is ``root/sN/M.pgm`` (40 identities x 10
images, 92x112 greyscale), but any one-folder-per-identity layout works (LFW, a folder
of enrolled users, ...). Verification and identification are judged on people never
seen in training, so splits are made by identity, never by image.

Example:
    >>> faces = load_face_folder("data/att_faces", image_size=(112, 92))  # doctest: +SKIP
    >>> train, val, test, info = split_identities(faces, ["s5", "s6", "s7"])  # doctest: +SKIP
    >>> info["test"]  # doctest: +SKIP
    ['s5', 's6', 's7']
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from ..errors import DataError
from .images import ImageFolderDataset
from .splits import IdentitySplit, split_parts
from ._files import is_image, subfolders

__all__ = ["load_face_folder", "split_identities", "IdentitySplit"]

logger = logging.getLogger(__name__)


def load_face_folder(
    root: str | Path,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    *,
    min_per_identity: int = 1,
    on_error: str = "raise",
    preprocess: Callable[[Image.Image], Image.Image] | None = None,
) -> ImageFolderDataset:
    """Read ``root/IDENTITY/image.ext``: one sub-folder per person.

    Args:
        root: the folder of identity folders (files directly in ``root``, such as the
            AT&T ``README``, are ignored).
        image_size: (H, W) or a side to resize to (bilinear, antialiased); None = the
            size of the first image (AT&T: 112x92).
        channels: 1 or 3; None = the files' own (refused if they mix grey and colour).
        min_per_identity: refuse identities with fewer images (2 for verification pairs).
        on_error: "raise" on an unreadable image, or "skip" it with a warning.
        preprocess: optional PIL -> PIL function before resizing (a recipe's steps:
            ``InputSpec.preprocessor()``).

    Returns:
        :class:`ImageFolderDataset` with ``classes`` = identity folder names, sorted
        (AT&T: ``s1, s10, s11, ..., s2, ...``), images uint8 (N, C, H, W).

    Raises:
        DataError: missing or empty folder, images not inside identity folders, identity
            folders that only hold further folders (e.g. a ``training/`` + ``testing/``
            split folder passed as root), an unreadable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"face folder {root} does not exist" if not root.exists() else f"{root} is not a folder")
    id_dirs = subfolders(root, natural=False)
    if not id_dirs:
        loose = [p.name for p in root.iterdir() if is_image(p)]
        raise DataError(
            f"face folder {root} has no identity sub-folders"
            + (f" ({len(loose)} images lie directly in it; put each person's images in their own folder)" if loose else "")
        )
    nested = [d.name for d in id_dirs if not any(is_image(p) for p in d.iterdir()) and any(p.is_dir() for p in d.iterdir())]
    if nested and len(nested) == len(id_dirs):
        raise DataError(
            f"the folders of {root} ({', '.join(nested[:5])}) hold sub-folders, not images: the layout must be "
            f"root/IDENTITY/image; pass one of them (e.g. {root / nested[0]}) or merge them"
        )
    if nested:
        logger.warning("face folders %s hold only sub-folders; their images count as one identity each", nested[:5])
    return ImageFolderDataset.from_folder(
        root, image_size=image_size, channels=channels, min_per_class=min_per_identity, on_error=on_error,
        preprocess=preprocess,
    )


def split_identities(
    dataset: ImageFolderDataset,
    test_identities: int | Sequence[str],
    val_identities: int | Sequence[str] = 0,
    seed: int = 0,
) -> IdentitySplit:
    """Split a dataset into train / val / test parts with disjoint identities (classes).

    Args:
        dataset: any :class:`ImageFolderDataset` (classes = identities).
        test_identities: a list of identity names, honoured exactly (e.g. AT&T's
            original test split ``["s5", "s6", "s7"]``), or a count drawn at random.
        val_identities: the same for a validation part, drawn from what the test part
            leaves; 0 = no validation part (an empty dataset).
        seed: seeds the random draws (test first, then val), so a split is reproducible
            from (dataset classes, arguments, seed).

    Returns:
        :class:`IdentitySplit` ``(train, val, test, info)``: three datasets whose labels
        are renumbered 0..k-1 (classes kept in the dataset's order), and ``info``, a
        JSON-able dict with the identity names of each part, the seed and image counts.

    Raises:
        DataError: unknown or repeated names, a name in both parts, or a split leaving
            no identity for training.
    """
    return split_parts(dataset, dataset.classes, test_identities, val_identities, seed)
