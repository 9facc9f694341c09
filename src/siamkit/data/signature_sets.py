"""The signature task's data: a writer-class training view, random-forgery pairs, scan features.

:mod:`siamkit.data.signatures` reads the CEDAR layout (``WRITER/genuine``, ``WRITER/forged``);
this module turns it into what the task needs:

- :class:`SignatureTrainingSet`: the genuine signatures as one class per writer (what
  ``siamkit train --task signatures`` trains on), keeping each writer's skilled forgeries
  beside it, never in the writer's class. It has the interface of
  :class:`~siamkit.data.images.ImageFolderDataset` that class-disjoint splitting needs
  (``classes``, ``labels``, ``subset``), so writers are split like classes; the held-out
  writers' forgeries then serve validation (genuine vs skilled forgery pairs,
  :func:`siamkit.evaluation.signatures.signature_validator`). This is the recipe of
  ``bench/bench_signatures.py``: the training writers' forgeries did not help there.
- :func:`random_forgery_pairs`: a writer's genuine signatures against other writers'
  genuine signatures (the "random forgery" protocol, reported apart from skilled ones).
- :func:`scan_features`: per file, what the scan alone gives away (pixel count, aspect
  ratio), the inputs of the shortcut probes.

Example:
    >>> ts = load_signature_task("data/cedar_signatures", (75, 110))  # doctest: +SKIP
    >>> ts.classes[:2], ts.labels.shape, ts.signatures.is_genuine.sum()  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..tuples import Pairs
from .images import ImageFolderDataset
from .signatures import SignatureDataset, load_signatures

__all__ = ["SignatureTrainingSet", "load_signature_task", "random_forgery_pairs", "scan_features"]


@dataclass
class SignatureTrainingSet:
    """Genuine signatures, one class per writer, with the writers' skilled forgeries kept apart.

    Attributes:
        signatures: every image (genuine and forged) of the writers.
        genuine: the genuine signatures as an :class:`ImageFolderDataset` (class = writer):
            ``images``, ``labels``, ``classes``, ``channels``, ``image_size`` and ``len``
            are its.
    """

    signatures: SignatureDataset
    genuine: ImageFolderDataset = field(init=False)

    def __post_init__(self) -> None:
        self.genuine = self.signatures.genuine_only()

    def __len__(self) -> int:
        return len(self.genuine)

    @property
    def images(self) -> torch.Tensor:
        return self.genuine.images

    @property
    def labels(self) -> torch.Tensor:
        return self.genuine.labels

    @property
    def classes(self) -> list[str]:
        return list(self.signatures.writers)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return self.signatures.image_size

    @property
    def n_forgeries(self) -> int:
        return int((~self.signatures.is_genuine).sum())

    def subset(self, class_ids: Sequence[int]) -> SignatureTrainingSet:
        """The given writers (genuine and forged), relabelled 0..k-1 in the given order."""
        return SignatureTrainingSet(self.signatures.subset(class_ids))


def load_signature_task(
    root: str | Path, image_size: tuple[int, int] | None, channels: int | None = None, *, preprocess: Any = True
) -> SignatureTrainingSet:
    """Read a CEDAR-layout folder for ``train --task signatures``.

    Args:
        root: the folder of ``WRITER/genuine`` + ``WRITER/forged`` folders.
        image_size: (H, W) of the network input; None = (155, 220), SigNet's.
        channels: None or 1 (signatures are greyscale).
        preprocess: as :func:`~siamkit.data.signatures.load_signatures` (True = the
            signature scan step at ``image_size``; or the model's input-recipe function).

    Returns:
        The training set (every writer must have both folders: the forgeries are what
        validation scores against).

    Raises:
        DataError: not the signature layout (the message says what was found), a writer
            without forgeries, more than 1 channel asked, fewer than 2 writers.
    """
    if channels not in (None, 1):
        raise DataError(f"signatures are greyscale: --channels must be 1, got {channels}")
    sigs = load_signatures(root, image_size=image_size or (155, 220), require_forged=True, preprocess=preprocess)
    if len(sigs.writers) < 2:
        raise DataError(f"{root} has {len(sigs.writers)} writer folder(s); the signature task needs at least 2")
    return SignatureTrainingSet(sigs)


def random_forgery_pairs(writer_labels: torch.Tensor, is_genuine: torch.Tensor, per_writer: int, seed: int = 0) -> Pairs:
    """Random forgeries: a writer's genuine signature against another writer's genuine one.

    Per writer ``w``, ``per_writer`` distinct pairs (genuine of ``w`` as ``a``, genuine of
    any other writer as ``b``) drawn without replacement (all of them when fewer exist).
    Every pair is "different".

    Args:
        writer_labels: int (N,), writer of each image.
        is_genuine: bool (N,).
        per_writer: pairs per writer (e.g. the number of its skilled-forgery pairs).
        seed: seeds the draw.

    Returns:
        ``Pairs(a, b, same)``, same all False, grouped by writer (ascending label).
    """
    writer_labels, is_genuine = torch.as_tensor(writer_labels), torch.as_tensor(is_genuine)
    if per_writer < 1:
        raise ValueError(f"per_writer must be >= 1, got {per_writer}")
    g = torch.Generator().manual_seed(seed)
    parts_a, parts_b = [], []
    for w in writer_labels.unique().tolist():
        mine = (is_genuine & (writer_labels == w)).nonzero(as_tuple=True)[0]
        others = (is_genuine & (writer_labels != w)).nonzero(as_tuple=True)[0]
        total = mine.numel() * others.numel()
        if total == 0:
            continue
        pick = torch.randperm(total, generator=g)[: min(per_writer, total)].sort().values
        parts_a.append(mine[pick // others.numel()])
        parts_b.append(others[pick % others.numel()])
    empty = torch.zeros(0, dtype=torch.long)
    a = torch.cat(parts_a) if parts_a else empty
    b = torch.cat(parts_b) if parts_b else empty.clone()
    return Pairs(a, b, torch.zeros(a.numel(), dtype=torch.bool))


def scan_features(paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """What the scanned file alone says, read from each file's header (no decoding).

    Args:
        paths: the image files (e.g. ``SignatureDataset.paths``).

    Returns:
        ``{"scan_size": log(width x height) of the original file, "aspect_ratio":
        log(width / height)}``, float64 (N,) each. Logs, so that the absolute difference
        of two files is a ratio (scale-free).

    Raises:
        DataError: a missing or unreadable file.
    """
    size = np.empty(len(paths))
    aspect = np.empty(len(paths))
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as img:
                w, h = img.size
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"cannot read the size of {p}: {e}") from None
        size[i], aspect[i] = math.log(max(1, w * h)), math.log(max(1, w) / max(1, h))
    return {"scan_size": size, "aspect_ratio": aspect}
