"""Omniglot: the alphabet/character image folders and the official one-shot runs (the files).

Layouts (Lake et al. 2015, https://github.com/brendenlake/omniglot):

- ``images_background/<Alphabet>/characterNN/XXXX_YY.png`` (30 alphabets) and
  ``images_evaluation/...`` (20 alphabets): ``XXXX`` is the global character id and
  ``YY`` the drawer (one of 20 people who drew every character once).
- ``one_shot_runs/runNN/{training/classNN.png, test/itemNN.png, class_labels.txt}``:
  the official 20-way one-shot benchmark (20 runs x 20 queries).

Pixels are kept as in the files: the PNGs are 1-bit, decoded to uint8 greyscale with a
white background (255) and black ink (0); resizing (e.g. to 28x28) gives grey levels in
between. Nothing is inverted: a model that wants bright ink on black can use ``255 - x``.

Scoring an embedding on these (the official runs, Koch et al.'s within-alphabet trials,
random N-way K-shot episodes) is evaluation: :mod:`siamkit.evaluation.few_shot`.

Example:
    >>> ds = load_omniglot("data/omniglot", split="background", image_size=28)  # doctest: +SKIP
    >>> ds.images.shape, len(ds.classes), ds.alphabets[ds.class_alphabet[0]]  # doctest: +SKIP
    (torch.Size([19280, 1, 28, 28]), 964, 'Alphabet_of_the_Magi')
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ..errors import DataError
from ._files import as_size, decode_files, images_in, is_image, natural_key, select_named, subfolders
from .class_rotations import check_rotations, rotated_copies
from .images import IMAGE_EXTENSIONS, ImageFolderDataset, remap_classes

__all__ = [
    "OmniglotDataset",
    "load_omniglot",
    "OneShotRun",
    "load_official_one_shot_runs",
    "drawer_of",
]

logger = logging.getLogger(__name__)

_DRAWER_RE = re.compile(r"_(\d+)$")


def drawer_of(path: str | Path) -> int:
    """The drawer number ``YY`` of an Omniglot file ``XXXX_YY.png``; -1 when absent."""
    m = _DRAWER_RE.search(Path(path).stem)
    return int(m.group(1)) if m else -1


# --------------------------------------------------------------------------- images


@dataclass
class OmniglotDataset(ImageFolderDataset):
    """Omniglot characters as an :class:`ImageFolderDataset` plus alphabet metadata.

    Each class is one character (``"Alphabet/characterNN"``) or, with rotations, one
    rotation of a character (``"Alphabet/characterNN/rot90"``: a new class).

    Attributes:
        images: uint8 (N, 1, H, W), white background (255), black ink (0).
        labels: int64 (N,), index into ``classes``.
        classes: ``"Alphabet/characterNN"`` or ``"Alphabet/characterNN/rotR"``.
        paths: the file of each image (rotated copies share their original's path).
        alphabets: alphabet names, sorted.
        class_alphabet: int64 (num_classes,), index into ``alphabets`` of each class;
            per image: ``class_alphabet[labels]``.
        class_rotation: int64 (num_classes,), rotation in degrees (0, 90, 180, 270).
        drawers: int64 (N,), the drawer ``YY`` of ``XXXX_YY.png`` (-1 when the file name
            has no ``_YY`` suffix).
    """

    alphabets: list[str] = field(default_factory=list)
    class_alphabet: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    class_rotation: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    drawers: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def __post_init__(self) -> None:
        super().__post_init__()
        n_cls = len(self.classes)
        if self.class_alphabet.shape != (n_cls,) or self.class_rotation.shape != (n_cls,):
            raise DataError(
                f"{n_cls} classes but class_alphabet {tuple(self.class_alphabet.shape)} "
                f"and class_rotation {tuple(self.class_rotation.shape)}"
            )
        if self.drawers.shape != (len(self),):
            raise DataError(f"{len(self)} images but drawers of shape {tuple(self.drawers.shape)}")

    @property
    def image_alphabet(self) -> torch.Tensor:
        """int64 (N,): alphabet index of each image."""
        return self.class_alphabet[self.labels]

    def subset(self, class_ids: Sequence[int]) -> "OmniglotDataset":
        """The images of the given classes, relabelled 0..k-1 in the given order
        (alphabet metadata kept; ``alphabets`` is not renumbered)."""
        ids = torch.as_tensor(list(class_ids), dtype=torch.long)
        keep, labels, paths = remap_classes(self.labels, len(self.classes), ids.tolist(), self.paths)
        return OmniglotDataset(
            images=self.images[keep],
            labels=labels,
            classes=[self.classes[c] for c in ids.tolist()],
            paths=paths,
            alphabets=list(self.alphabets),
            class_alphabet=self.class_alphabet[ids],
            class_rotation=self.class_rotation[ids],
            drawers=self.drawers[keep],
        )

    def alphabet_subset(self, names: Sequence[str]) -> "OmniglotDataset":
        """The classes of the named alphabets (e.g. Koch's 10 evaluation alphabets)."""
        unknown = [n for n in names if n not in self.alphabets]
        if unknown:
            raise DataError(f"unknown alphabet(s) {unknown}; this dataset has {self.alphabets}")
        want = {self.alphabets.index(n) for n in names}
        return self.subset([c for c, a in enumerate(self.class_alphabet.tolist()) if a in want])


def _resolve_split_dir(root: Path, split: str | None) -> Path:
    if not root.exists():
        raise DataError(f"Omniglot folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    if split is None or root.name in (f"images_{split}", split):
        return root
    for cand in (root / f"images_{split}", root / split):
        if cand.is_dir():
            return cand
    subs = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise DataError(
        f"Omniglot split {split!r} not found in {root}: expected {root / f'images_{split}'} "
        f"(or {root / split}); sub-folders there: {subs[:10]}"
        + (" ..." if len(subs) > 10 else "")
        + "; pass split=None if the folder itself holds the alphabets"
    )


def load_omniglot(
    root: str | Path,
    split: str | None = "background",
    image_size: int | tuple[int, int] | None = 105,
    rotations: Sequence[int] = (0,),
    alphabets: Sequence[str] | None = None,
    *,
    workers: int = 1,
    progress: bool = False,
) -> OmniglotDataset:
    """Read Omniglot ``<root>/images_<split>/<Alphabet>/<character>/<XXXX_YY>.png``.

    Args:
        root: the folder holding ``images_background`` / ``images_evaluation`` (or the
            split folder itself, or, with ``split=None``, any folder of alphabets).
        split: "background" (the 30 training alphabets), "evaluation" (the 20 others),
            any other name of a sibling folder, or None.
        image_size: side (or (H, W)) to resize to (bilinear, antialiased); 105 keeps the
            files as they are; None = the size of the first image.
        rotations: degrees, a subset of (0, 90, 180, 270). Each rotation of a character
            becomes its own class (Santoro et al. 2016 / Vinyals et al. 2016 style
            class augmentation). Rotation R of an image is
            ``torch.rot90(img, k=R // 90, dims=(-2, -1))`` (counter-clockwise).
        alphabets: keep only these alphabets (names of sub-folders); None = all.
        workers: decoding threads. 1 is fastest for Omniglot when the files are in the
            page cache (decoding 105x105 1-bit PNGs is bound by Python, so threads only
            contend for the GIL: ~2 s for the 19,280 background images on one thread);
            more threads may help on a cold, slow disk.
        progress: show a progress bar (only when stderr is a terminal; off by default).

    Shapes:
        images (N, 1, H, W) uint8 with N = len(rotations) * number of files. Classes and
        images are ordered rotation-major: all rotation-``rotations[0]`` classes (sorted
        by alphabet, then character) first, then the next rotation, so that image
        ``r * n + i`` is the ``rotations[r]`` rotation of image ``i`` (n = files).

    Returns:
        An :class:`OmniglotDataset` (an ``ImageFolderDataset`` with ``alphabets``,
        ``class_alphabet`` (per class), ``class_rotation`` and ``drawers``).

    Raises:
        DataError: missing folder or split, unknown alphabet names, no character
            folders, images not inside character folders, an unreadable image.
    """
    rotations = check_rotations(rotations)
    size = as_size(image_size)
    if size is not None and size[0] != size[1] and any(r in (90, 270) for r in rotations):
        raise ValueError(f"rotations by 90/270 degrees need a square image_size, got {size}")
    folder = _resolve_split_dir(Path(root), split)
    alpha_dirs = select_named(subfolders(folder, natural=False), alphabets, "alphabet", folder)
    if not alpha_dirs:
        loose = any(is_image(p) for p in folder.iterdir())
        raise DataError(
            f"no alphabet folders in {folder}"
            + (" (images must sit in <Alphabet>/<character>/ sub-folders)" if loose else "")
        )
    chars = _list_characters(folder, alpha_dirs)
    base = decode_files(chars.files, size=size, channels=1, workers=workers, progress=progress, desc="Omniglot")
    if any(r in (90, 270) for r in rotations) and base.shape[2] != base.shape[3]:
        raise DataError(f"rotations by 90/270 need square images, the files are {tuple(base.shape[2:])}")
    n_cls = len(chars.classes)
    labels0 = torch.tensor(chars.labels, dtype=torch.long)
    drawers0 = torch.tensor([drawer_of(p) for p in chars.files], dtype=torch.long)
    classes = [c if r == 0 else f"{c}/rot{r}" for r in rotations for c in chars.classes]
    labels = torch.cat([labels0 + r_i * n_cls for r_i in range(len(rotations))])
    logger.info("Omniglot %s: %d images, %d classes, %d alphabets", folder.name, len(labels), len(classes), len(chars.alphabets))
    return OmniglotDataset(
        images=rotated_copies(base, rotations),
        labels=labels,
        classes=classes,
        paths=chars.files * len(rotations),
        alphabets=chars.alphabets,
        class_alphabet=torch.tensor(chars.class_alphabet * len(rotations), dtype=torch.long),
        class_rotation=torch.tensor([r for r in rotations for _ in range(n_cls)], dtype=torch.long),
        drawers=drawers0.repeat(len(rotations)),
    )


@dataclass
class _Characters:
    """The character folders found under a split folder (before decoding)."""

    files: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # per file, index into classes
    classes: list[str] = field(default_factory=list)  # "Alphabet/characterNN"
    class_alphabet: list[int] = field(default_factory=list)  # per class, index into alphabets
    alphabets: list[str] = field(default_factory=list)


def _list_characters(folder: Path, alpha_dirs: list[Path]) -> _Characters:
    """The image files of every ``<Alphabet>/<character>/`` folder, natural order."""
    out = _Characters()
    for a_dir in alpha_dirs:
        char_dirs = subfolders(a_dir)
        if not char_dirs:
            loose = [p.name for p in a_dir.iterdir() if is_image(p)]
            if loose:
                raise DataError(
                    f"{a_dir} holds images ({loose[0]}, ...) but no character sub-folders: the layout "
                    f"must be <Alphabet>/<character>/<image>; is {folder} one level too deep?"
                )
            logger.warning("skipping %s: no character folders", a_dir)
            continue
        a_idx = len(out.alphabets)
        out.alphabets.append(a_dir.name)
        for c_dir in char_dirs:
            imgs = images_in(c_dir)
            if not imgs:
                logger.warning("skipping %s: no images", c_dir)
                continue
            out.classes.append(f"{a_dir.name}/{c_dir.name}")
            out.class_alphabet.append(a_idx)
            out.files += imgs
            out.labels += [len(out.classes) - 1] * len(imgs)
    if not out.files:
        raise DataError(f"no images in {folder} (layout <Alphabet>/<character>/<image>, {', '.join(IMAGE_EXTENSIONS)})")
    return out


# --------------------------------------------------------------------------- official runs


@dataclass
class OneShotRun:
    """One run of the official one-shot benchmark.

    Attributes:
        name: the run's folder name (``run01``).
        support: uint8 (S, C, H, W), the one example per class, ``training/`` files in
            natural name order (class01 .. class20).
        query: uint8 (Q, C, H, W), ``test/`` files in natural name order.
        answer: int64 (Q,), index into ``support`` of each query's correct class.
        support_paths, query_paths: the files.
    """

    name: str
    support: torch.Tensor
    query: torch.Tensor
    answer: torch.Tensor
    support_paths: list[Path]
    query_paths: list[Path]


def _resolve_label_path(token: str, runs_dir: Path, run_dir: Path, where: str) -> Path:
    for base in (runs_dir, run_dir):
        p = base / token
        if p.is_file():
            return p.resolve()
    raise DataError(f"{where} refers to {token!r}, which exists neither in {runs_dir} nor in {run_dir}")


def load_official_one_shot_runs(
    runs_dir: str | Path,
    image_size: int | tuple[int, int] | None = None,
    *,
    channels: int | None = 1,
    labels_file: str = "class_labels.txt",
    preprocess: Callable[[Image.Image], Image.Image] | None = None,
) -> list[OneShotRun]:
    """Read Lake et al.'s one-shot runs ``runs_dir/runNN/{training,test,class_labels.txt}``.

    Every sub-folder of ``runs_dir`` that has a ``training/`` or ``test/`` folder or a
    labels file is a run. Each line of ``class_labels.txt`` is
    ``runNN/test/itemNN.png runNN/training/classMM.png`` (paths relative to ``runs_dir``;
    paths relative to the run folder are accepted too). Every query file must be answered
    exactly once and every line must name an existing query in ``test/`` and an existing
    support in ``training/`` of that run.

    Args:
        runs_dir: the folder holding the runs (``one_shot_runs``).
        image_size: side or (H, W) to resize to; None = the files' size (105).
        channels: 1 (default; the files are 1-bit greyscale) or 3, or None for the files'.
        labels_file: name of the answer file in each run.
        preprocess: optional function on each PIL image before resizing (a model's
            ``input_spec.preprocessor()``).

    Shapes:
        each run: support (S, C, H, W), query (Q, C, H, W), answer (Q,); the official
        runs have S = Q = 20.

    Returns:
        The runs in natural name order (run01 .. run20).

    Raises:
        DataError: missing folders or files, a malformed line, a line naming a missing
            file or a file outside the run, a query answered twice or never.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise DataError(f"one-shot runs folder {runs_dir} does not exist")
    size = as_size(image_size)
    run_dirs = sorted(
        (p for p in runs_dir.iterdir() if p.is_dir() and any((p / s).exists() for s in ("training", "test", labels_file))),
        key=lambda p: natural_key(p.name),
    )
    if not run_dirs:
        raise DataError(f"{runs_dir} has no run folders (runNN/ with training/, test/ and {labels_file})")
    runs: list[OneShotRun] = []
    for run_dir in run_dirs:
        train_dir, test_dir, label_path = run_dir / "training", run_dir / "test", run_dir / labels_file
        for needed in (train_dir, test_dir):
            if not needed.is_dir():
                raise DataError(f"run {run_dir} has no {needed.name}/ folder")
        if not label_path.is_file():
            raise DataError(f"run {run_dir} has no {labels_file}")
        support_paths, query_paths = images_in(train_dir), images_in(test_dir)
        if not support_paths or not query_paths:
            raise DataError(f"run {run_dir}: {len(support_paths)} training and {len(query_paths)} test images; both must be non-empty")
        s_index = {p.resolve(): i for i, p in enumerate(support_paths)}
        q_index = {p.resolve(): i for i, p in enumerate(query_paths)}
        answer = [-1] * len(query_paths)
        for line_no, line in enumerate(label_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            where = f"{label_path}, line {line_no}"
            parts = line.split()
            if len(parts) != 2:
                raise DataError(f"{where}: expected 'test/itemNN.png training/classMM.png', got {line!r}")
            q = _resolve_label_path(parts[0], runs_dir, run_dir, where)
            s = _resolve_label_path(parts[1], runs_dir, run_dir, where)
            if q not in q_index:
                raise DataError(f"{where}: {parts[0]!r} is not an image of {test_dir}")
            if s not in s_index:
                raise DataError(f"{where}: {parts[1]!r} is not an image of {train_dir}")
            qi = q_index[q]
            if answer[qi] != -1:
                raise DataError(f"{where}: query {parts[0]!r} is answered twice")
            answer[qi] = s_index[s]
        missing = [query_paths[i].name for i, a in enumerate(answer) if a == -1]
        if missing:
            raise DataError(f"{label_path} gives no answer for {len(missing)} test image(s): {missing[:5]}")
        imgs = decode_files(support_paths + query_paths, size=size, channels=channels, workers=1, preprocess=preprocess)
        if size is None:
            size = (int(imgs.shape[2]), int(imgs.shape[3]))
        if channels is None:
            channels = int(imgs.shape[1])
        runs.append(
            OneShotRun(
                name=run_dir.name,
                support=imgs[: len(support_paths)],
                query=imgs[len(support_paths) :],
                answer=torch.tensor(answer, dtype=torch.long),
                support_paths=support_paths,
                query_paths=query_paths,
            )
        )
    return runs
