"""Image loading: files -> uint8 tensors, decoded once.

``ImageFolderDataset`` reads a folder laid out one sub-folder per class (identity,
character, writer), decodes every image once, resizes it to one size, and keeps the
whole set as a single uint8 tensor (N, C, H, W): a 28x28 Omniglot set of 32k images is
25 MB, so the training loop indexes memory instead of decoding files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .prepare import MAX_PIXELS, decode_path, image_channels

__all__ = [
    "IMAGE_EXTENSIONS", "MAX_PIXELS", "load_image", "ImageFolderDataset", "to_float", "remap_classes", "detect_class_depth",
    "layout_note",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".pbm", ".gif", ".bmp", ".tif", ".tiff", ".webp")


def load_image(
    path: str | Path,
    *,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
    preprocess: Callable[[Image.Image], Image.Image] | None = None,
) -> torch.Tensor:
    """Decode one image file to a uint8 tensor (C, H, W) (the one prepare function,
    :func:`siamkit.data.prepare.decode_path`; with a model, use
    :func:`siamkit.data.prepare.prepare_image` and its input spec).

    Args:
        path: the image file.
        size: (height, width) to resize to (bilinear, antialiased); None keeps it.
        channels: 1 (grey) or 3 (RGB); None keeps the file's own.
        preprocess: optional function on the PIL image before resizing (e.g. cropping
            a scanned signature to its ink).

    Shapes:
        returns (C, H, W) uint8.

    Returns:
        The decoded image.

    Raises:
        DataError: the file is missing, not an image, truncated or too large.
    """
    steps = (preprocess,) if preprocess is not None else ()
    return torch.from_numpy(decode_path(path, size=size, channels=channels, steps=steps))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (.., C, H, W) in [0, 255] -> float32 in [0, 1]."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def remap_classes(
    labels: torch.Tensor, num_classes: int, class_ids: Sequence[int], paths: Sequence[Path]
) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    """Keep the images of some classes and relabel them 0..k-1 in the given order (what
    every dataset's ``subset`` does).

    Args:
        labels: int64 (N,), class of each image, in ``0..num_classes-1``.
        num_classes: the number of classes ``labels`` index.
        class_ids: the classes to keep; class ``class_ids[i]`` becomes label ``i``.
        paths: the file of each image, or empty.

    Shapes:
        labels (N,) -> keep (N,) bool, new labels (M,) with M = keep.sum().

    Returns:
        ``(keep, new_labels, kept_paths)``: which images stay, their new labels, and
        their paths (empty when ``paths`` is).
    """
    remap = torch.full((num_classes,), -1, dtype=torch.long)
    remap[torch.as_tensor(list(class_ids), dtype=torch.long)] = torch.arange(len(class_ids))
    new = remap[labels]
    keep = new >= 0
    idx = keep.nonzero(as_tuple=True)[0].tolist()
    return keep, new[keep], [paths[i] for i in idx] if paths else []


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


@dataclass
class ImageFolderDataset:
    """A folder of images, one sub-folder per class, decoded once into memory.

    Attributes:
        images: uint8 (N, C, H, W).
        labels: int64 (N,), index into ``classes``.
        classes: class (sub-folder) names, sorted.
        paths: the file of each image.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"images must be (N, C, H, W), got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=len(self.classes))

    def subset(self, class_ids: Sequence[int]) -> "ImageFolderDataset":
        """The images of the given classes, relabelled 0..k-1 in the given order."""
        class_ids = list(class_ids)
        keep, labels, paths = remap_classes(self.labels, len(self.classes), class_ids, self.paths)
        return ImageFolderDataset(
            images=self.images[keep], labels=labels, classes=[self.classes[c] for c in class_ids], paths=paths
        )

    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        *,
        image_size: tuple[int, int] | int | None = None,
        channels: int | None = None,
        preprocess: Callable[[Image.Image], Image.Image] | None = None,
        min_per_class: int = 1,
        on_error: str = "raise",
        class_depth: int | None = None,
    ) -> "ImageFolderDataset":
        """Read ``root/CLASS/**/image.ext`` (or the two-level ``root/GROUP/CLASS/image.ext``).

        Args:
            root: the folder of class folders.
            image_size: (H, W) or a side; None = the size of the first image (all images
                are then resized to it).
            channels: 1 or 3; None = infer from the files (refused when the folder mixes
                grey and colour images).
            preprocess: optional function on each PIL image before resizing.
            min_per_class: refuse classes with fewer images (2 for pair training).
            on_error: "raise" on an unreadable image, or "skip" it with a warning.
            class_depth: 1 = classes are the sub-folders of root; 2 = classes are
                sub-sub-folders (e.g. Omniglot's ``ALPHABET/characterNN``); None = 2 when
                every sub-folder of root holds only folders of images (never one class per
                alphabet), else 1 (see :func:`detect_class_depth`). The depth shows in the
                class names (``"GROUP/CLASS"``).

        Returns:
            The dataset: images uint8 (N, C, H, W), labels (N,), classes = the class
            folders' paths relative to ``root``, sorted.

        Raises:
            DataError: missing or empty folder, no class sub-folders, unreadable image,
                too few images in a class, mixed channel counts.
        """
        root = Path(root)
        if not root.exists():
            raise DataError(f"data folder {root} does not exist")
        if not root.is_dir():
            raise DataError(f"{root} is not a folder")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        top = sorted(p for p in root.iterdir() if p.is_dir())
        if not top:
            loose = _list_images(root)
            hint = " (the images must sit in one sub-folder per class)" if loose else ""
            raise DataError(f"data folder {root} has no class sub-folders{hint}")
        _refuse_signature_layout(root, top)
        if class_depth is None:
            class_depth = detect_class_depth(root)
        class_dirs = sorted(p for p in root.glob("/".join(["*"] * class_depth)) if p.is_dir())
        if not class_dirs:
            raise DataError(f"data folder {root} has no class folders {class_depth} level(s) down")
        files: list[tuple[Path, int]] = []
        names: list[str] = []
        for d in class_dirs:
            imgs = _list_images(d)
            if not imgs:
                continue
            names.append(str(d.relative_to(root)))
            files += [(p, len(names) - 1) for p in imgs]
        if not files:
            raise DataError(f"data folder {root} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if channels is None:
            channels = _infer_channels(root, [p for p, _ in files])
        if image_size is None:
            first = load_image(files[0][0], channels=channels, preprocess=preprocess)
            image_size = (int(first.shape[1]), int(first.shape[2]))
        images: list[torch.Tensor] = []
        labels: list[int] = []
        paths: list[Path] = []
        for p, label in files:
            try:
                img = load_image(p, size=image_size, channels=channels, preprocess=preprocess)
            except DataError as e:
                if on_error == "raise":
                    raise
                logger.warning("skipping %s", e)
                continue
            images.append(img)
            labels.append(label)
            paths.append(p)
        if not images:
            raise DataError(f"no readable image in {root}")
        ds = cls(torch.stack(images), torch.tensor(labels, dtype=torch.long), names, paths)
        counts = ds.class_counts()
        small = [(names[i], int(c)) for i, c in enumerate(counts.tolist()) if c < min_per_class]
        if small:
            listed = ", ".join(f"{n!r} ({c})" for n, c in small[:5]) + (" ..." if len(small) > 5 else "")
            raise DataError(
                f"{len(small)} class(es) in {root} have fewer than {min_per_class} images: {listed}"
            )
        return ds


#: the sub-folders of a writer in the signature layout (``WRITER/genuine``, ``WRITER/forged``)
SIGNATURE_SUBFOLDERS = ("genuine", "forged")


def detect_class_depth(root: str | Path) -> int:
    """How deep the class folders of ``root`` are: 2 when every (visible) sub-folder holds
    only folders, and those hold the images (Omniglot's ``ALPHABET/CHARACTER``); else 1
    (classes are the sub-folders; images in deeper folders count for their top folder).

    Args:
        root: the data folder.

    Returns:
        1 or 2.
    """
    top = [p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not top:
        return 1
    for d in top:
        inside = [p for p in d.iterdir() if not p.name.startswith(".")]
        if any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in inside):
            return 1
        subs = [p for p in inside if p.is_dir()]
        if not subs or not any(_has_image(s) for s in subs):
            return 1
    return 2


def _has_image(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def layout_note(classes: Sequence[str]) -> str:
    """A few words on how a folder's classes were read, for a command's summary line:
    ``""`` for one sub-folder per class, else the two-level layout and its group count.

    Args:
        classes: the dataset's class names (``"GROUP/CLASS"`` in the two-level layout).

    Returns:
        The note (empty, or starting with ``"; "``).
    """
    if not classes or any("/" not in c for c in classes):
        return ""
    groups = {c.split("/", 1)[0] for c in classes}
    return f"; two-level layout: class = GROUP/CLASS folder (e.g. {classes[0]}), {len(groups)} groups"


def _refuse_signature_layout(root: Path, class_dirs: list[Path]) -> None:
    """Refuse ``WRITER/genuine`` + ``WRITER/forged`` read as one class per writer: that
    would merge each writer's forgeries into the writer's own class."""
    for d in class_dirs:
        inside = list(d.iterdir())
        sub = {p.name.lower() for p in inside if p.is_dir()}
        if not sub or not sub <= set(SIGNATURE_SUBFOLDERS) or any(p.is_file() for p in inside if p.suffix.lower() in IMAGE_EXTENSIONS):
            return
    first = class_dirs[0]
    raise DataError(
        f"{root} is in the signature layout WRITER/genuine, WRITER/forged (e.g. {first.name}/"
        f"{' and '.join(sorted(p.name for p in first.iterdir() if p.is_dir()))}): read as one class per "
        "writer it would merge every writer's skilled forgeries into that writer's class, and score "
        "forgeries as 'same'. Use the signature task (CLI: siamkit train --task signatures, or --task "
        "signatures-genuine for the genuine signatures only; siamkit evaluate MODEL --protocol signatures; "
        "library: siamkit.data.load_signatures and signature_pairs)"
    )


def _infer_channels(root: Path, paths: list[Path]) -> int:
    grey = colour = 0
    for p in paths:
        try:
            with Image.open(p) as img:
                if image_channels(img) == 1:
                    grey += 1
                else:
                    colour += 1
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue  # reported with its name when the image is decoded
    if grey and colour:
        raise DataError(
            f"data folder {root} mixes {grey} greyscale and {colour} colour images; "
            "choose one with channels=1 or channels=3 (--channels)"
        )
    return 3 if colour else 1
