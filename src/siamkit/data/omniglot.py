"""Omniglot: the alphabet/character image folders, the official one-shot runs, Koch trials.

Layouts (Lake et al. 2015, https://github.com/brendenlake/omniglot):

- ``images_background/<Alphabet>/characterNN/XXXX_YY.png`` (30 alphabets) and
  ``images_evaluation/...`` (20 alphabets): ``XXXX`` is the global character id and
  ``YY`` the drawer (one of 20 people who drew every character once).
- ``one_shot_runs/runNN/{training/classNN.png, test/itemNN.png, class_labels.txt}``:
  the official 20-way one-shot benchmark (20 runs x 20 queries).

Pixels are kept as in the files: the PNGs are 1-bit, decoded to uint8 greyscale with a
white background (255) and black ink (0); resizing (e.g. to 28x28) gives grey levels in
between. Nothing is inverted: a model that wants bright ink on black can use ``255 - x``.

Example:
    >>> ds = load_omniglot("data/omniglot", split="background", image_size=28)  # doctest: +SKIP
    >>> ds.images.shape, len(ds.classes), ds.alphabets[ds.class_alphabet[0]]  # doctest: +SKIP
    (torch.Size([19280, 1, 28, 28]), 964, 'Alphabet_of_the_Magi')
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from ..distances import BaseDistance, get_distance
from ..errors import DataError
from ._files import _as_size, _decode_files, _images_in, _is_image, _natural_key
from .images import IMAGE_EXTENSIONS, ImageFolderDataset

__all__ = [
    "OmniglotDataset",
    "load_omniglot",
    "OneShotRun",
    "load_official_one_shot_runs",
    "OneShotResult",
    "official_one_shot_accuracy",
    "OneShotTrials",
    "koch_within_alphabet_trials",
    "score_trials",
    "TrialScore",
    "drawer_of",
]

logger = logging.getLogger(__name__)

_ROTATIONS = (0, 90, 180, 270)
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
        base = ImageFolderDataset.subset(self, class_ids)
        ids = torch.as_tensor(list(class_ids), dtype=torch.long)
        remap = torch.full((len(self.classes),), -1, dtype=torch.long)
        remap[ids] = torch.arange(ids.numel())
        keep = remap[self.labels] >= 0
        return OmniglotDataset(
            images=base.images,
            labels=base.labels,
            classes=base.classes,
            paths=base.paths,
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
    rotations = tuple(int(r) for r in rotations)
    if not rotations or any(r not in _ROTATIONS for r in rotations) or len(set(rotations)) != len(rotations):
        raise ValueError(f"rotations must be distinct values among {_ROTATIONS}, got {rotations}")
    size = _as_size(image_size)
    if size is not None and size[0] != size[1] and any(r in (90, 270) for r in rotations):
        raise ValueError(f"rotations by 90/270 degrees need a square image_size, got {size}")
    folder = _resolve_split_dir(Path(root), split)
    alpha_dirs = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    if alphabets is not None:
        names = [a.name for a in alpha_dirs]
        unknown = [a for a in alphabets if a not in names]
        if unknown:
            raise DataError(f"alphabet(s) {unknown} not found in {folder}; available: {names}")
        wanted = set(alphabets)
        alpha_dirs = [a for a in alpha_dirs if a.name in wanted]
    if not alpha_dirs:
        loose = any(_is_image(p) for p in folder.iterdir())
        raise DataError(
            f"no alphabet folders in {folder}"
            + (" (images must sit in <Alphabet>/<character>/ sub-folders)" if loose else "")
        )

    files: list[Path] = []
    base_labels: list[int] = []
    base_classes: list[str] = []
    class_alpha: list[int] = []
    alpha_names: list[str] = []
    for a_dir in alpha_dirs:
        char_dirs = sorted((p for p in a_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: _natural_key(p.name))
        if not char_dirs:
            loose = [p.name for p in a_dir.iterdir() if _is_image(p)]
            if loose:
                raise DataError(
                    f"{a_dir} holds images ({loose[0]}, ...) but no character sub-folders: the layout "
                    f"must be <Alphabet>/<character>/<image>; is {folder} one level too deep?"
                )
            logger.warning("skipping %s: no character folders", a_dir)
            continue
        a_idx = len(alpha_names)
        alpha_names.append(a_dir.name)
        for c_dir in char_dirs:
            imgs = _images_in(c_dir)
            if not imgs:
                logger.warning("skipping %s: no images", c_dir)
                continue
            base_classes.append(f"{a_dir.name}/{c_dir.name}")
            class_alpha.append(a_idx)
            files += imgs
            base_labels += [len(base_classes) - 1] * len(imgs)
    if not files:
        raise DataError(f"no images in {folder} (layout <Alphabet>/<character>/<image>, {', '.join(IMAGE_EXTENSIONS)})")

    base = _decode_files(files, size=size, channels=1, workers=workers, progress=progress, desc="Omniglot")
    if any(r in (90, 270) for r in rotations) and base.shape[2] != base.shape[3]:
        raise DataError(f"rotations by 90/270 need square images, the files are {tuple(base.shape[2:])}")
    n, n_cls = base.shape[0], len(base_classes)
    labels0 = torch.tensor(base_labels, dtype=torch.long)
    drawers0 = torch.tensor([drawer_of(p) for p in files], dtype=torch.long)
    if len(rotations) == 1 and rotations[0] == 0:
        images = base
    else:
        images = torch.empty((n * len(rotations), *base.shape[1:]), dtype=torch.uint8)
        for r_i, r in enumerate(rotations):
            images[r_i * n : (r_i + 1) * n] = torch.rot90(base, k=r // 90, dims=(-2, -1)) if r else base
    classes = [c if r == 0 else f"{c}/rot{r}" for r in rotations for c in base_classes]
    labels = torch.cat([labels0 + r_i * n_cls for r_i in range(len(rotations))])
    logger.info("Omniglot %s: %d images, %d classes, %d alphabets", folder.name, len(labels), len(classes), len(alpha_names))
    return OmniglotDataset(
        images=images,
        labels=labels,
        classes=classes,
        paths=files * len(rotations),
        alphabets=alpha_names,
        class_alphabet=torch.tensor(class_alpha * len(rotations), dtype=torch.long),
        class_rotation=torch.tensor([r for r in rotations for _ in range(n_cls)], dtype=torch.long),
        drawers=drawers0.repeat(len(rotations)),
    )


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
    size = _as_size(image_size)
    run_dirs = sorted(
        (p for p in runs_dir.iterdir() if p.is_dir() and any((p / s).exists() for s in ("training", "test", labels_file))),
        key=lambda p: _natural_key(p.name),
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
        support_paths, query_paths = _images_in(train_dir), _images_in(test_dir)
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
        imgs = _decode_files(support_paths + query_paths, size=size, channels=channels, workers=1)
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


@dataclass
class OneShotResult:
    """Official one-shot benchmark result.

    Attributes:
        accuracy: correct queries / all queries (400 for the official runs).
        per_run_accuracy: accuracy of each run, in run order.
        error_rate: Lake et al.'s number: the mean over runs of each run's error, in
            percent (``demo_classification.py`` prints it as "average error"); equal to
            ``100 * (1 - accuracy)`` when every run has the same number of queries.
        predictions: int64 (Q,) per run, the chosen support of each query.
    """

    accuracy: float
    per_run_accuracy: list[float]
    error_rate: float
    predictions: list[torch.Tensor]

    @property
    def num_queries(self) -> int:
        return sum(int(p.numel()) for p in self.predictions)


def _embed(embed_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        e = embed_fn(images)
    if not isinstance(e, torch.Tensor) or e.ndim != 2 or e.shape[0] != images.shape[0]:
        shape = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
        raise ValueError(f"embed_fn must map {images.shape[0]} images to ({images.shape[0]}, D) embeddings, got {shape}")
    return e.float()


def official_one_shot_accuracy(
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    runs: Sequence[OneShotRun],
    distance: str | BaseDistance = "euclidean",
) -> OneShotResult:
    """Score an embedding on the official one-shot runs: the nearest support wins.

    Args:
        embed_fn: maps uint8 images (B, C, H, W) to embeddings (B, D); called once per
            run on ``cat([support, query])`` under ``torch.no_grad()``. Convert inside it
            (e.g. ``to_float``) and put the model in eval mode first.
        runs: from :func:`load_official_one_shot_runs`.
        distance: a distance name or object (lower = closer). Ties go to the lower
            support index.

    Returns:
        :class:`OneShotResult` (accuracy over all queries, per-run accuracies, Lake et
        al.'s error rate in percent, predictions).

    Example:
        >>> res = official_one_shot_accuracy(lambda x: x.flatten(1).float(), runs)  # doctest: +SKIP
    """
    if not runs:
        raise ValueError("no runs to score")
    dist = get_distance(distance)
    per_run: list[float] = []
    preds: list[torch.Tensor] = []
    correct = total = 0
    for run in runs:
        s = run.support.shape[0]
        e = _embed(embed_fn, torch.cat([run.support, run.query]))
        with torch.no_grad():
            pred = dist.pairwise(e[s:], e[:s]).argmin(1).cpu()
        hit = int((pred == run.answer).sum())
        correct += hit
        total += int(pred.numel())
        per_run.append(hit / pred.numel())
        preds.append(pred)
    error = float(np.mean([100.0 * (1.0 - a) for a in per_run]))
    return OneShotResult(accuracy=correct / total, per_run_accuracy=per_run, error_rate=error, predictions=preds)


# --------------------------------------------------------------------------- Koch trials


@dataclass
class OneShotTrials:
    """Index tensors of N-way one-shot trials into a dataset (see
    :func:`koch_within_alphabet_trials`).

    Attributes:
        support: int64 (T, n_way), image indices of the support set of each trial.
        query: int64 (T,), image index of each trial's query.
        answer: int64 (T,), column of ``support`` holding the query's character.
        episode: int64 (T,), the episode (shared support set) of each trial.
        alphabet: int64 (T,), alphabet index of each trial.
        support_drawer, query_drawer: int64 (T,), drawers A and B of each trial.
    """

    support: torch.Tensor
    query: torch.Tensor
    answer: torch.Tensor
    episode: torch.Tensor
    alphabet: torch.Tensor
    support_drawer: torch.Tensor
    query_drawer: torch.Tensor

    def __len__(self) -> int:
        return int(self.query.numel())

    @property
    def n_way(self) -> int:
        return int(self.support.shape[1])


def koch_within_alphabet_trials(
    dataset: ImageFolderDataset,
    alphabet_index: torch.Tensor | Sequence[int] | None = None,
    n_way: int = 20,
    trials: int = 400,
    seed: int = 0,
    *,
    queries_per_episode: int | None = None,
) -> OneShotTrials:
    """N-way within-alphabet one-shot trials as in Koch et al. (2015), section 4.3.

    Koch et al.: "pick an alphabet, pick 20 characters uniformly at random from it, pick
    two drawers; [one drawer's] characters are test images, each compared against all
    20 characters from the [other] drawer", 2 such episodes for each of 10 evaluation
    alphabets = 400 trials. What this function does, exactly:

    1. Episodes are made until ``trials`` trials exist. Episode ``e`` uses alphabet
       ``order[e % A]``, where ``order`` is a seeded permutation of the A eligible
       alphabets (those with >= ``n_way`` characters; others are skipped with a
       warning), so alphabets are used equally often (+-1 episode).
    2. It draws ``n_way`` distinct characters of that alphabet uniformly at random, and
       two distinct drawers A != B uniformly among the drawers who drew all of them.
    3. Support set: drawer A's drawing of each character, in the drawn (random) order.
    4. Queries: drawer B's drawings of ``queries_per_episode`` of the characters
       (default all ``n_way``, Koch's protocol; 1 gives independent trials), drawn at
       random; each query with the episode's support set is one trial. The last
       episode is cut to reach exactly ``trials``.

    Only rotation-0 classes are used when the dataset has rotation classes. With the 20
    evaluation alphabets and the defaults this gives 20 episodes (1 per alphabet) x 20
    queries = 400 trials; Koch et al. used 10 of these alphabets, 2 episodes each (use
    :meth:`OmniglotDataset.alphabet_subset` to pick alphabets).

    Args:
        dataset: images whose file names end in ``_YY`` (the drawer), e.g. from
            :func:`load_omniglot`.
        alphabet_index: int (num_classes,), alphabet of each class; None = the dataset's
            ``class_alphabet``.
        n_way: characters per trial.
        trials: number of trials T.
        seed: seed of everything random here.
        queries_per_episode: queries per support set (1..n_way); None = n_way.

    Returns:
        :class:`OneShotTrials` (support (T, n_way), query (T,), answer (T,), ...); score
        any embedding of ``dataset.images`` with :func:`score_trials`.

    Raises:
        DataError: file names without a drawer, no alphabet with ``n_way`` characters, or
            characters lacking two common drawers.
    """
    if n_way < 2:
        raise ValueError(f"n_way must be >= 2, got {n_way}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    q_per = n_way if queries_per_episode is None else int(queries_per_episode)
    if not 1 <= q_per <= n_way:
        raise ValueError(f"queries_per_episode must be in 1..{n_way}, got {queries_per_episode}")
    n_cls = len(dataset.classes)
    if alphabet_index is None:
        if not isinstance(dataset, OmniglotDataset):
            raise ValueError("alphabet_index is needed unless the dataset is an OmniglotDataset")
        alphabet_index = dataset.class_alphabet
    alpha = torch.as_tensor(alphabet_index, dtype=torch.long)
    if alpha.shape != (n_cls,):
        raise ValueError(f"alphabet_index must have one entry per class ({n_cls},), got {tuple(alpha.shape)}")
    if isinstance(dataset, OmniglotDataset):
        drawers = dataset.drawers
        use_class = (dataset.class_rotation == 0).tolist()
    else:
        drawers = torch.tensor([drawer_of(p) for p in dataset.paths], dtype=torch.long)
        use_class = [True] * n_cls
    if drawers.numel() != len(dataset) or bool((drawers < 0).any()):
        bad = next((dataset.paths[i] for i in range(len(dataset.paths)) if drawer_of(dataset.paths[i]) < 0), None)
        raise DataError(f"Koch trials need the drawer in every file name (XXXX_YY.png); e.g. {bad} has none")

    # class -> {drawer: image index}
    by_class: list[dict[int, int]] = [{} for _ in range(n_cls)]
    for i, (c, d) in enumerate(zip(dataset.labels.tolist(), drawers.tolist())):
        by_class[c].setdefault(d, i)
    chars_of: dict[int, list[int]] = {}
    for c in range(n_cls):
        if use_class[c] and by_class[c]:
            chars_of.setdefault(int(alpha[c]), []).append(c)
    eligible = sorted(a for a, cs in chars_of.items() if len(cs) >= n_way)
    skipped = sorted(set(chars_of) - set(eligible))
    if skipped:
        logger.warning("Koch trials: skipping %d alphabet(s) with fewer than %d characters: %s", len(skipped), n_way, skipped)
    if not eligible:
        most = max((len(cs) for cs in chars_of.values()), default=0)
        raise DataError(f"no alphabet has {n_way} characters (the largest has {most}); lower n_way")

    g = torch.Generator().manual_seed(seed)
    order = [eligible[i] for i in torch.randperm(len(eligible), generator=g).tolist()]
    rows: dict[str, list] = {k: [] for k in ("support", "query", "answer", "episode", "alphabet", "sd", "qd")}
    e = 0
    while len(rows["query"]) < trials:
        a = order[e % len(order)]
        cs = chars_of[a]
        chosen = [cs[i] for i in torch.randperm(len(cs), generator=g)[:n_way].tolist()]
        common = sorted(set.intersection(*(set(by_class[c]) for c in chosen)))
        if len(common) < 2:
            raise DataError(
                f"characters {[dataset.classes[c] for c in chosen]} have {len(common)} drawer(s) in common; need 2"
            )
        pick = torch.randperm(len(common), generator=g)[:2].tolist()
        da, db = common[pick[0]], common[pick[1]]
        support = [by_class[c][da] for c in chosen]
        cols = torch.randperm(n_way, generator=g)[:q_per].tolist()
        for col in cols[: trials - len(rows["query"])]:
            rows["support"].append(support)
            rows["query"].append(by_class[chosen[col]][db])
            rows["answer"].append(col)
            rows["episode"].append(e)
            rows["alphabet"].append(a)
            rows["sd"].append(da)
            rows["qd"].append(db)
        e += 1
    t = {k: torch.tensor(v, dtype=torch.long) for k, v in rows.items()}
    return OneShotTrials(t["support"], t["query"], t["answer"], t["episode"], t["alphabet"], t["sd"], t["qd"])


class TrialScore(NamedTuple):
    """Accuracy of one-shot trials and the half-width of its 95% confidence interval."""

    accuracy: float
    ci95: float


def score_trials(
    embeddings: torch.Tensor,
    trials: OneShotTrials | tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    distance: str | BaseDistance = "euclidean",
) -> TrialScore:
    """Accuracy of nearest-support classification over one-shot trials.

    Args:
        embeddings: (N, D), one row per image of the dataset the trials index.
        trials: :class:`OneShotTrials`, or a tuple (support (T, n), query (T,), answer (T,)).
        distance: name or object (lower = closer); ties go to the lower support column.

    Returns:
        ``TrialScore(accuracy, ci95)``: ``ci95`` is the half-width of the normal 95%
        interval. With :class:`OneShotTrials` of >= 2 episodes, the standard error is
        taken over episode accuracies (queries of one episode share a support set, so
        they are not independent); otherwise the binomial ``sqrt(p (1 - p) / T)``.
    """
    if isinstance(trials, OneShotTrials):
        support, query, answer, episode = trials.support, trials.query, trials.answer, trials.episode
    else:
        support, query, answer = (torch.as_tensor(t, dtype=torch.long) for t in trials)
        episode = None
    if support.ndim != 2 or query.shape != (support.shape[0],) or answer.shape != query.shape:
        raise ValueError(f"trials must be support (T, n), query (T,), answer (T,); got {tuple(support.shape)}, {tuple(query.shape)}, {tuple(answer.shape)}")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got {tuple(embeddings.shape)}")
    n_trials, n_way = support.shape
    if n_trials == 0:
        raise ValueError("no trials to score")
    hi = int(max(support.max(), query.max()))
    if hi >= embeddings.shape[0]:
        raise ValueError(f"trials index image {hi} but there are {embeddings.shape[0]} embeddings")
    dist = get_distance(distance)
    dev = embeddings.device
    with torch.no_grad():
        s = embeddings[support.reshape(-1).to(dev)]
        q = embeddings[query.to(dev)].repeat_interleave(n_way, 0)
        d = dist.paired(q, s).view(n_trials, n_way)
        hit = (d.argmin(1).cpu() == answer).double()
    p = float(hit.mean())
    if episode is not None and int(episode.unique().numel()) >= 2:
        ep, inv = torch.unique(episode, return_inverse=True)
        per = torch.zeros(ep.numel(), dtype=torch.double).index_add_(0, inv, hit) / torch.bincount(inv).double()
        se = float(per.std(unbiased=True)) / math.sqrt(ep.numel())
    else:
        se = math.sqrt(p * (1 - p) / n_trials)
    return TrialScore(p, 1.96 * se)
