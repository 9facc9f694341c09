"""The compact Omniglot shipped inside the package: all 1,623 characters x 20 drawers at 28x28.

``omniglot28.npz`` (2.6 MB, beside this module; ``np.load(..., allow_pickle=False)``) holds
every drawing of Lake et al.'s background (30 alphabets, 964 characters) and evaluation (20
alphabets, 659 characters) splits, reduced from the 105x105 1-bit PNGs by an exact integer
rule (pad to 112x112, count the ink of each 4x4 block, 17 grey levels; white background
255, black ink 0). ``tools/build_omniglot_compact.py`` rebuilds it from the PNGs in
``../shared/data/omniglot`` and checks it bit for bit. Its licence (MIT, Brenden Lake) and
citation are in ``omniglot28.LICENSE`` and ``omniglot28.README.md`` beside it.

The 28x28 images are close to, but not the same as, ``load_omniglot(root, image_size=28)``
(antialiased bilinear resampling of the unpadded 105x105): train and test on one or the
other, not a mix.

Example:
    >>> ds = load_omniglot_compact("evaluation")
    >>> ds.images.shape, len(ds.classes), len(ds.alphabets)
    (torch.Size([13180, 1, 28, 28]), 659, 20)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError
from .omniglot import OmniglotDataset, OneShotRun

__all__ = ["COMPACT_PATH", "load_omniglot_compact", "compact_official_runs"]

COMPACT_PATH = Path(__file__).with_name("omniglot28.npz")
_FORMAT = 1
_SPLITS = ("background", "evaluation")


@lru_cache(maxsize=1)
def _arrays() -> dict[str, np.ndarray]:
    if not COMPACT_PATH.is_file():
        raise DataError(f"the compact Omniglot {COMPACT_PATH} is missing (rebuild: python tools/build_omniglot_compact.py)")
    with np.load(COMPACT_PATH, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if int(arrays["format"]) != _FORMAT:
        raise DataError(f"{COMPACT_PATH} has format {int(arrays['format'][0])}, this siamkit reads {_FORMAT}")
    return arrays


def load_omniglot_compact(split: str | None = None, *, alphabets: Sequence[str] | None = None) -> OmniglotDataset:
    """The shipped 28x28 Omniglot as an :class:`~siamkit.data.OmniglotDataset` (no download).

    Args:
        split: ``"background"`` (30 alphabets, 964 characters, 19,280 drawings),
            ``"evaluation"`` (20 alphabets, 659 characters, 13,180 drawings) or None (all
            50 alphabets, 1,623 characters, 32,460 drawings: the background split
            first, then the evaluation split, each with its alphabets sorted).
        alphabets: keep only these alphabets (names as in ``dataset.alphabets``).

    Shapes:
        images (N, 1, 28, 28) uint8, white background (255), black ink (0); classes in the
        order of :func:`~siamkit.data.load_omniglot` (alphabets sorted, then characters),
        20 drawings each, ordered by drawer.

    Returns:
        The dataset: ``classes`` ``"Alphabet/characterNN"``, ``alphabets`` (only the
        split's), ``class_alphabet``, ``drawers`` (1..20) and ``paths`` naming the original
        file (``images_<split>/Alphabet/characterNN/XXXX_YY.png``; not on disk).

    Raises:
        DataError: an unknown split or alphabet, or a missing / unreadable file.
    """
    if split is not None and split not in _SPLITS:
        raise DataError(f"split must be one of {list(_SPLITS)} or None, got {split!r}")
    z = _arrays()
    names = [str(a) for a in z["alphabets"]]
    class_split = z["class_split"].astype(np.int64)
    class_alpha = z["class_alphabet"].astype(np.int64)
    keep_cls = np.ones(len(class_split), dtype=bool) if split is None else class_split == _SPLITS.index(split)
    if alphabets is not None:
        known = {names[a] for a in np.unique(class_alpha[keep_cls])}
        unknown = [a for a in alphabets if a not in known]
        if unknown:
            raise DataError(f"unknown alphabet(s) {unknown}; this split has {sorted(known)}")
        keep_cls &= np.isin(class_alpha, [names.index(a) for a in alphabets])
    cls_ids = np.nonzero(keep_cls)[0]
    used_alpha = np.unique(class_alpha[cls_ids])
    alpha_new = np.full(len(names), -1, dtype=np.int64)
    alpha_new[used_alpha] = np.arange(len(used_alpha))
    cls_new = np.full(len(class_split), -1, dtype=np.int64)
    cls_new[cls_ids] = np.arange(len(cls_ids))
    char = z["character"].astype(np.int64)
    img_ids = np.nonzero(keep_cls[char])[0]
    classes = [str(c) for c in z["classes"][cls_ids]]
    drawers = z["drawer"][img_ids].astype(np.int64)
    split_of = z["class_split"][char[img_ids]]
    ids = z["class_id"][char[img_ids]]
    paths = [
        Path(f"images_{_SPLITS[s]}") / classes[c] / f"{i:04d}_{d:02d}.png"
        for s, c, i, d in zip(split_of.tolist(), cls_new[char[img_ids]].tolist(), ids.tolist(), drawers.tolist())
    ]
    return OmniglotDataset(
        images=torch.from_numpy(z["images"][img_ids]).unsqueeze(1),
        labels=torch.from_numpy(cls_new[char[img_ids]]),
        classes=classes,
        paths=paths,
        alphabets=[names[a] for a in used_alpha.tolist()],
        class_alphabet=torch.from_numpy(alpha_new[class_alpha[cls_ids]]),
        class_rotation=torch.zeros(len(cls_ids), dtype=torch.long),
        drawers=torch.from_numpy(drawers),
    )


def compact_official_runs() -> list[OneShotRun]:
    """Lake et al.'s 20 official 20-way one-shot runs, on the compact images.

    Every one of the runs' 800 PNGs is pixel-identical to a drawing of the evaluation split
    (checked when the file is built), so the runs are stored as indices and cost nothing.
    Score them with :func:`siamkit.evaluation.official_one_shot_accuracy`.

    Returns:
        The 20 runs (``run01`` .. ``run20``): support (20, 1, 28, 28), query (20, 1, 28, 28),
        answer (20,); the paths name the runs' original files (not on disk).
    """
    z = _arrays()
    images = torch.from_numpy(z["images"]).unsqueeze(1)
    runs = []
    for r in range(z["runs_support"].shape[0]):
        name = f"run{r + 1:02d}"
        s = torch.from_numpy(z["runs_support"][r].astype(np.int64))
        q = torch.from_numpy(z["runs_query"][r].astype(np.int64))
        runs.append(
            OneShotRun(
                name=name,
                support=images[s],
                query=images[q],
                answer=torch.from_numpy(z["runs_answer"][r].astype(np.int64)),
                support_paths=[Path(name) / "training" / f"class{i + 1:02d}.png" for i in range(len(s))],
                query_paths=[Path(name) / "test" / f"item{i + 1:02d}.png" for i in range(len(q))],
            )
        )
    return runs
