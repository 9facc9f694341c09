"""Class-disjoint splits: the one place that decides which classes (identities, writers,
characters) go to training, validation and test.

A Siamese network is judged on classes it has never seen, so every split here holds out
whole classes, and every random draw comes from an explicit seed or generator.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, Sequence

import torch

from ..errors import DataError

__all__ = ["IdentitySplit", "choose_parts", "split_parts", "split_by_class", "permute_classes"]


class _Subsettable(Protocol):
    def subset(self, class_ids: Sequence[int]) -> Any: ...

    def __len__(self) -> int: ...


def permute_classes(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The distinct classes of ``labels`` in a random order drawn from ``generator``.

    Args:
        labels: class of every sample.
        generator: the source of randomness (advanced by one permutation).

    Shapes:
        labels (N,) -> (C,) with C the number of distinct classes.

    Returns:
        The shuffled class ids.
    """
    classes = torch.unique(labels)
    return classes[torch.randperm(len(classes), generator=generator)]


def split_by_class(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices so that a ``fraction`` of the classes is held out whole.

    Args:
        labels: class of every sample.
        fraction: share of the classes held out (at least 2 when > 0).
        seed: seeds the choice of classes.

    Shapes:
        labels (N,) -> two index tensors whose lengths add up to N.

    Returns:
        (train indices, validation indices); no class appears in both.

    Raises:
        DataError: too few classes to hold out and still train on 2.
    """
    classes = torch.unique(labels)
    n_val = int(round(len(classes) * fraction))
    if fraction > 0 and n_val < 2:
        n_val = 2
    if fraction > 0 and len(classes) - n_val < 2:
        raise DataError(
            f"{len(classes)} classes are too few to hold out {fraction:.0%} for validation and keep 2 for "
            "training; use more classes or val_fraction=0 (--val-fraction 0)"
        )
    perm = permute_classes(labels, torch.Generator().manual_seed(seed))
    val_classes = perm[:n_val]
    is_val = torch.isin(labels, val_classes)
    return (~is_val).nonzero(as_tuple=True)[0], is_val.nonzero(as_tuple=True)[0]


class IdentitySplit(NamedTuple):
    """Identity-disjoint parts of a dataset, plus a JSON-able record of the split.

    ``info`` = ``{"seed", "test_given", "val_given", "train", "val", "test", "num_images"}``
    where train/val/test are the identity names of each part.
    """

    train: Any
    val: Any
    test: Any
    info: dict[str, Any]


def choose_parts(
    names: Sequence[str],
    test: int | Sequence[str],
    val: int | Sequence[str],
    seed: int,
    what: str = "identity",
) -> tuple[list[int], list[int], list[int], dict[str, Any]]:
    """Pick test then val class indices (fixed names or seeded random counts).

    Args:
        names: the class names, in the dataset's order.
        test: a list of names (honoured exactly) or a count drawn at random.
        val: the same for validation, drawn from what the test part leaves.
        seed: seeds the random draws (test first, then val).
        what: how messages name a class ("identity", "writer").

    Returns:
        train, val, test class indices (each ascending) and the JSON-able description
        (without image counts).

    Raises:
        DataError: unknown or repeated names, a name in both parts, or no class left for
            training.
    """
    n = len(names)
    index = {name: i for i, name in enumerate(names)}
    g = torch.Generator().manual_seed(seed)
    taken: set[int] = set()
    parts: list[list[int]] = []
    for part, spec in (("test", test), ("val", val)):
        if isinstance(spec, (str, bytes)):
            raise TypeError(f"{part} must be a count or a list of names, got the string {spec!r}; use [{spec!r}]")
        if isinstance(spec, bool) or not isinstance(spec, (int, Sequence)):
            raise TypeError(f"{part} must be an int or a list of names, got {type(spec).__name__}")
        if isinstance(spec, int):
            free = [i for i in range(n) if i not in taken]
            if spec < 0:
                raise ValueError(f"number of {part} {what}s must be >= 0, got {spec}")
            if spec > len(free) - 1:
                raise DataError(
                    f"cannot draw {spec} {part} {what}s: {n} {what}s, {len(taken)} already used, "
                    f"and at least one must stay for training"
                )
            chosen = [free[i] for i in torch.randperm(len(free), generator=g)[:spec].tolist()]
        else:
            spec = [str(s) for s in spec]
            unknown = [s for s in spec if s not in index]
            if unknown:
                known = ", ".join(list(names)[:10]) + (" ..." if n > 10 else "")
                raise DataError(f"unknown {what} name(s) {unknown} for the {part} part; known: {known}")
            dup = sorted({s for s in spec if spec.count(s) > 1})
            if dup:
                raise DataError(f"{what} name(s) {dup} listed twice for the {part} part")
            chosen = [index[s] for s in spec]
            clash = [names[i] for i in chosen if i in taken]
            if clash:
                raise DataError(f"{what} name(s) {clash} are in both the test and the val part")
        taken.update(chosen)
        parts.append(sorted(chosen))
    test_ids, val_ids = parts
    train_ids = [i for i in range(n) if i not in taken]
    if not train_ids:
        raise DataError(f"the split leaves no {what} for training ({n} in total)")
    info: dict[str, Any] = {
        "seed": int(seed),
        "test_given": "random" if isinstance(test, int) else "list",
        "val_given": "random" if isinstance(val, int) else "list",
        "train": [names[i] for i in train_ids],
        "val": [names[i] for i in val_ids],
        "test": [names[i] for i in test_ids],
    }
    return train_ids, val_ids, test_ids, info


def split_parts(
    dataset: _Subsettable,
    names: Sequence[str],
    test: int | Sequence[str],
    val: int | Sequence[str] = 0,
    seed: int = 0,
    *,
    what: str = "identity",
) -> IdentitySplit:
    """Split any dataset with ``subset(class_ids)`` into class-disjoint train / val / test.

    Args:
        dataset: a dataset whose classes are ``names`` (image folder, signatures, ...).
        names: its class names, in its order.
        test: test class names (honoured exactly) or a count drawn at random.
        val: the same for validation, drawn from the rest; 0 = none.
        seed: seeds the random draws (test first, then val).
        what: how messages name a class.

    Returns:
        :class:`IdentitySplit` ``(train, val, test, info)`` with image counts in ``info``.

    Raises:
        DataError: see :func:`choose_parts`.
    """
    train_ids, val_ids, test_ids, info = choose_parts(names, test, val, seed, what)
    train, val_part, test_part = (dataset.subset(ids) for ids in (train_ids, val_ids, test_ids))
    info["num_images"] = {"train": len(train), "val": len(val_part), "test": len(test_part)}
    return IdentitySplit(train, val_part, test_part, info)
