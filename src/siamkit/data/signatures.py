"""Offline signatures: scan preprocessing, the CEDAR-style layout, writer splits, protocol pairs.

Layout (CEDAR): ``root/WRITER/genuine/*.png`` and ``root/WRITER/forged/*.png``, where the
forgeries in ``WRITER/forged`` are skilled forgeries *of* WRITER's signature.

Preprocessing (:class:`SignaturePreprocess`) turns a scan (dark ink on a light, maybe
noisy background) into a fixed-size image with bright ink on black:

1. Otsu's threshold (:func:`otsu_threshold`, numpy) separates ink from background; the
   smaller of the two classes is the ink, so scans with bright ink also work.
2. Optionally, ink specks (8-connected components smaller than ``min_speck_area``
   pixels) are removed, and the background is cleaned to pure white.
3. The image is cropped to the ink's bounding box plus a small margin, padded with
   background to the target aspect ratio (so resizing does not distort the strokes),
   inverted (``255 - x``: ink bright, background 0) and resized.

The writer-independent protocol (Dey et al. 2017, "SigNet", on CEDAR): train and test on
disjoint writers; per test writer, all pairs of distinct genuine signatures
(C(24, 2) = 276 on CEDAR) are "same" and every (genuine, skilled forgery) pair
(24 x 24 = 576) is "different" (:func:`signature_pairs`).

Example:
    >>> sig = load_signatures("data/cedar_signatures", image_size=(155, 220))  # doctest: +SKIP
    >>> train, val, test, info = split_writers(sig, test_writers=10, seed=0)  # doctest: +SKIP
    >>> a, b, same = signature_pairs(test.writer_labels, test.is_genuine)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ..errors import DataError
from ..tuples import Pairs
from ._files import as_size, decode_files, images_in, is_image, select_named, subfolders
from .images import ImageFolderDataset, remap_classes
from .signature_scan import SignaturePreprocess, otsu_threshold
from .splits import IdentitySplit, split_parts

__all__ = [
    "otsu_threshold",
    "SignaturePreprocess",
    "SignatureDataset",
    "load_signatures",
    "split_writers",
    "signature_pairs",
]

logger = logging.getLogger(__name__)


@dataclass
class SignatureDataset:
    """Signature images with their writer and genuine / forged flag.

    Attributes:
        images: uint8 (N, 1, H, W).
        writer_labels: int64 (N,), index into ``writers``; a forgery carries the label
            of the writer whose signature it imitates.
        is_genuine: bool (N,): True = genuine, False = skilled forgery.
        writers: writer folder names (natural order: 1, 2, ..., 10).
        paths: the file of each image.
    """

    images: torch.Tensor
    writer_labels: torch.Tensor
    is_genuine: torch.Tensor
    writers: list[str]
    paths: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4:
            raise DataError(f"images must be (N, C, H, W), got {tuple(self.images.shape)}")
        if self.writer_labels.shape != (n,) or self.is_genuine.shape != (n,):
            raise DataError(
                f"{n} images but writer_labels {tuple(self.writer_labels.shape)} and is_genuine {tuple(self.is_genuine.shape)}"
            )
        if self.is_genuine.dtype != torch.bool:
            raise DataError(f"is_genuine must be a bool tensor, got {self.is_genuine.dtype}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, writer_ids: Sequence[int]) -> "SignatureDataset":
        """The images of the given writers, relabelled 0..k-1 in the given order."""
        ids = [int(w) for w in writer_ids]
        keep, labels, paths = remap_classes(self.writer_labels, len(self.writers), ids, self.paths)
        return SignatureDataset(
            images=self.images[keep],
            writer_labels=labels,
            is_genuine=self.is_genuine[keep],
            writers=[self.writers[i] for i in ids],
            paths=paths,
        )

    def genuine_only(self) -> ImageFolderDataset:
        """The genuine signatures as an :class:`ImageFolderDataset` (class = writer), for
        training with class-based samplers and losses (forgeries are not a class)."""
        keep = self.is_genuine
        idx = keep.nonzero(as_tuple=True)[0].tolist()
        return ImageFolderDataset(
            images=self.images[keep],
            labels=self.writer_labels[keep],
            classes=list(self.writers),
            paths=[self.paths[i] for i in idx] if self.paths else [],
        )


def load_signatures(
    root: str | Path,
    image_size: int | tuple[int, int] = (155, 220),
    preprocess: bool | Callable[[Image.Image], Image.Image] = True,
    *,
    writers: Sequence[str] | None = None,
    genuine_dir: str = "genuine",
    forged_dir: str = "forged",
    require_forged: bool = True,
    workers: int = 2,
    progress: bool = False,
) -> SignatureDataset:
    """Read ``root/WRITER/genuine/*`` and ``root/WRITER/forged/*`` (CEDAR layout).

    Args:
        root: the folder of writer folders.
        image_size: output (H, W) (or a side); (155, 220) is SigNet's input size.
        preprocess: True = :class:`SignaturePreprocess` with ``size=image_size`` (Otsu,
            crop, pad to aspect, bright ink on black); False = plain resize of the scan
            (aspect not kept, dark ink on white); or any callable on a PIL "L" image.
        writers: load only these writer folders; None = all.
        genuine_dir, forged_dir: sub-folder names.
        require_forged: refuse a writer without a forged folder (False: allowed, the
            writer then has genuine signatures only).
        workers: decoding threads (scans are large, so threads help here).
        progress: show a progress bar (only when stderr is a terminal).

    Returns:
        :class:`SignatureDataset`: images (N, 1, H, W) uint8, writer_labels (N,),
        is_genuine (N,) bool, writers, paths; per writer the genuine files come first,
        then the forgeries, each in natural name order.

    Raises:
        DataError: missing folder, no writer folders, a writer folder without
            ``genuine/`` (or ``forged/`` when required) or with an empty one, unknown
            writer names, an unreadable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"signature folder {root} does not exist" if not root.exists() else f"{root} is not a folder")
    size = as_size(image_size)
    assert size is not None
    if root.joinpath(genuine_dir).is_dir():
        raise DataError(
            f"{root} has a {genuine_dir}/ folder itself: it looks like one writer's folder; "
            f"pass the folder that holds the writer folders ({root.parent})"
        )
    w_dirs = subfolders(root)
    if not w_dirs:
        raise DataError(f"signature folder {root} has no writer folders (layout WRITER/{genuine_dir}/*, WRITER/{forged_dir}/*)")
    w_dirs = select_named(w_dirs, writers, "writer", root, show=10)
    files: list[Path] = []
    w_labels: list[int] = []
    genuine: list[bool] = []
    for w_i, w_dir in enumerate(w_dirs):
        g_dir, f_dir = w_dir / genuine_dir, w_dir / forged_dir
        if not g_dir.is_dir():
            inside = sorted(p.name for p in w_dir.iterdir())[:5]
            raise DataError(
                f"writer folder {w_dir} has no {genuine_dir}/ sub-folder (found {inside}); the layout must be "
                f"WRITER/{genuine_dir}/*.png and WRITER/{forged_dir}/*.png"
            )
        g_files = images_in(g_dir)
        if not g_files:
            raise DataError(f"{g_dir} has no images")
        f_files: list[Path] = []
        if f_dir.is_dir():
            f_files = images_in(f_dir)
            if not f_files:
                raise DataError(f"{f_dir} has no images")
        elif require_forged:
            raise DataError(
                f"writer folder {w_dir} has no {forged_dir}/ sub-folder (skilled forgeries); "
                "pass require_forged=False to load writers with genuine signatures only"
            )
        loose = [p.name for p in w_dir.iterdir() if is_image(p)]
        if loose:
            logger.warning("ignoring %d image(s) directly in %s (e.g. %s)", len(loose), w_dir, loose[0])
        files += g_files + f_files
        w_labels += [w_i] * (len(g_files) + len(f_files))
        genuine += [True] * len(g_files) + [False] * len(f_files)
    if preprocess is True:
        fn: Callable[[Image.Image], Image.Image] | None = SignaturePreprocess(size=size)
    elif preprocess is False or preprocess is None:
        fn = None
    elif callable(preprocess):
        fn = preprocess
    else:
        raise TypeError(f"preprocess must be a bool or a callable, got {type(preprocess).__name__}")
    images = decode_files(files, size=size, channels=1, preprocess=fn, workers=workers, progress=progress, desc="signatures")
    logger.info("signatures: %d images of %d writers from %s", len(files), len(w_dirs), root)
    return SignatureDataset(
        images=images,
        writer_labels=torch.tensor(w_labels, dtype=torch.long),
        is_genuine=torch.tensor(genuine, dtype=torch.bool),
        writers=[d.name for d in w_dirs],
        paths=files,
    )


def split_writers(
    dataset: SignatureDataset,
    test_writers: int | Sequence[str],
    val_writers: int | Sequence[str] = 0,
    seed: int = 0,
) -> IdentitySplit:
    """Writer-independent split: train / val / test parts with disjoint writers.

    Args:
        dataset: from :func:`load_signatures`.
        test_writers: writer names (honoured exactly) or a count drawn at random.
        val_writers: the same for validation, drawn from the rest; 0 = none.
        seed: seeds the random draws (test first, then val).

    Returns:
        ``IdentitySplit(train, val, test, info)`` of :class:`SignatureDataset` parts
        (writers relabelled 0..k-1) and a JSON-able ``info`` with the writer names of
        each part, the seed and image counts.

    Raises:
        DataError: unknown or repeated names, or no writer left for training.
    """
    return split_parts(dataset, dataset.writers, test_writers, val_writers, seed, what="writer")


def signature_pairs(
    writer_labels: torch.Tensor,
    is_genuine: torch.Tensor,
    *,
    writers: Sequence[int] | None = None,
    max_pairs_per_writer: int | None = None,
    seed: int = 0,
) -> Pairs:
    """The verification protocol's pairs, writer by writer (never across writers).

    Per writer with G genuine signatures and F skilled forgeries:

    - same = True: every unordered pair of distinct genuine signatures, the one earlier
      in the dataset as ``a`` (the reference): G (G - 1) / 2 pairs (276 on CEDAR).
    - same = False: every (genuine reference ``a``, forgery ``b``) pair: G x F pairs
      (576 on CEDAR), as in SigNet (Dey et al. 2017).

    Random forgeries (other writers' genuine signatures) are not included.

    Args:
        writer_labels: int (N,), writer of each image (a forgery: the imitated writer).
        is_genuine: bool (N,).
        writers: the writer labels to build pairs for; None = all present.
        max_pairs_per_writer: at most this many pairs per writer, a seeded random
            subset, split as evenly as possible between same and different pairs (the
            kind with fewer pairs keeps all of them and the other fills the rest).
        seed: seeds that subsampling.

    Returns:
        :class:`~siamkit.tuples.Pairs` ``(a, b, same)``: int64 (P,), int64 (P,), bool
        (P,), grouped by writer (ascending label), same pairs first.
    """
    writer_labels = torch.as_tensor(writer_labels)
    is_genuine = torch.as_tensor(is_genuine)
    if writer_labels.ndim != 1 or writer_labels.is_floating_point() or writer_labels.dtype == torch.bool:
        raise TypeError(f"writer_labels must be a 1-D integer tensor, got {writer_labels.dtype} {tuple(writer_labels.shape)}")
    if is_genuine.dtype != torch.bool or is_genuine.shape != writer_labels.shape:
        raise TypeError(
            f"is_genuine must be a bool tensor shaped like writer_labels {tuple(writer_labels.shape)}, "
            f"got {is_genuine.dtype} {tuple(is_genuine.shape)}"
        )
    if max_pairs_per_writer is not None and max_pairs_per_writer < 2:
        raise ValueError(f"max_pairs_per_writer must be >= 2, got {max_pairs_per_writer}")
    present = writer_labels.unique().tolist()
    todo = present if writers is None else [int(w) for w in writers]
    missing = sorted(set(todo) - set(present))
    if missing:
        raise DataError(f"writer label(s) {missing} have no images")
    g = torch.Generator().manual_seed(seed)
    parts_a: list[torch.Tensor] = []
    parts_b: list[torch.Tensor] = []
    parts_s: list[torch.Tensor] = []
    empty = torch.zeros(0, dtype=torch.long)
    for w in sorted(set(todo)):
        mine = writer_labels == w
        gen = (mine & is_genuine).nonzero(as_tuple=True)[0]
        forg = (mine & ~is_genuine).nonzero(as_tuple=True)[0]
        if gen.numel() >= 2:
            ga, gb = torch.combinations(gen, 2).unbind(1)
        else:
            ga = gb = empty
        fa = gen.repeat_interleave(forg.numel())
        fb = forg.repeat(gen.numel())
        if max_pairs_per_writer is not None and ga.numel() + fa.numel() > max_pairs_per_writer:
            n_same = min(ga.numel(), max(max_pairs_per_writer // 2, max_pairs_per_writer - fa.numel()))
            n_diff = min(fa.numel(), max_pairs_per_writer - n_same)
            ks = torch.randperm(ga.numel(), generator=g)[:n_same].sort().values
            kd = torch.randperm(fa.numel(), generator=g)[:n_diff].sort().values
            ga, gb, fa, fb = ga[ks], gb[ks], fa[kd], fb[kd]
        if gen.numel() < 2:
            logger.warning("writer %d has %d genuine signature(s): no genuine pairs", w, gen.numel())
        parts_a += [ga, fa]
        parts_b += [gb, fb]
        parts_s += [torch.ones(ga.numel(), dtype=torch.bool), torch.zeros(fa.numel(), dtype=torch.bool)]
    if not parts_a:
        return Pairs(empty, empty.clone(), torch.zeros(0, dtype=torch.bool))
    return Pairs(torch.cat(parts_a), torch.cat(parts_b), torch.cat(parts_s))
