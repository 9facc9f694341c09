"""Which classes a run trained and validated on: ``RUN/split.json``.

A run that holds classes out (``val_fraction``, a list of class names, or a separate
validation folder) records their names here, so that evaluation can refuse a test set
that shares classes with training (a model scored on the identities it was trained on
looks far better than it is).

Example:
    >>> from siamkit.training.split_record import SplitRecord
    >>> rec = SplitRecord(train_classes=["a", "b"], val_classes=["c"], source="val_fraction 0.2")
    >>> rec.overlap(["b", "z"])
    ['b']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from .._atomic import write_json_atomic
from ..errors import ClassOverlapError
from ..io import read_versioned_json

__all__ = ["SplitRecord", "SPLIT_FILE"]

SPLIT_FILE = "split.json"
FORMAT = "siamkit.split"
FORMAT_VERSION = 1


@dataclass
class SplitRecord:
    """The class names of a run's training and validation data.

    Attributes:
        train_classes: the classes trained on.
        val_classes: the classes held out for validation (early stopping, best epoch).
        source: how the validation classes were chosen (e.g. ``"val_fraction 0.2, seed 0"``,
            ``"--val-classes FILE"``, ``"--val-data DIR"``).
        val_data: the separate validation folder, when there was one.
        rotations: the rotations of every training class trained on as new classes
            (``[0]``: none); the class names above are the folder's own.
    """

    train_classes: list[str]
    val_classes: list[str]
    source: str
    val_data: str | None = None
    rotations: list[int] = field(default_factory=lambda: [0])

    def save(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/split.json`` atomically.

        Args:
            run_dir: the run folder.

        Returns:
            The file written.
        """
        path = Path(run_dir) / SPLIT_FILE
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "siamkit_version": __version__,
                                 "train_classes": self.train_classes, "val_classes": self.val_classes,
                                 "source": self.source, "val_data": self.val_data, "rotations": list(self.rotations)})
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> "SplitRecord | None":
        """Read ``run_dir/split.json``; None when the run has none.

        Args:
            run_dir: the run folder.

        Returns:
            The record, or None.

        Raises:
            ModelFileError: the file exists but is not a split record of this version.
        """
        path = Path(run_dir) / SPLIT_FILE
        if not path.is_file():
            return None
        d: dict[str, Any] = read_versioned_json(path, fmt=FORMAT, version=FORMAT_VERSION, what="split record")
        return cls([str(c) for c in d["train_classes"]], [str(c) for c in d["val_classes"]], str(d["source"]), d.get("val_data"),
                   [int(r) for r in d.get("rotations", [0])])

    def overlap(self, classes: Sequence[str]) -> list[str]:
        """The given class names that were trained on, sorted.

        Args:
            classes: class names of another set (e.g. a test folder's).

        Returns:
            The names in both.
        """
        return sorted(set(classes) & set(self.train_classes))

    def check_disjoint(self, classes: Sequence[str], where: str) -> None:
        """Refuse a set that shares classes with training.

        Args:
            classes: class names of the set.
            where: names the set in the message (a path).

        Raises:
            ClassOverlapError: some class was trained on.
        """
        common = self.overlap(classes)
        if common:
            shown = ", ".join(repr(c) for c in common[:5]) + (" ..." if len(common) > 5 else "")
            raise ClassOverlapError(
                f"{len(common)} of the {len(classes)} classes in {where} were trained on ({shown}): "
                "scores on training classes overstate the model; use a class-disjoint test set "
                "(or --allow-overlap to score it anyway, marked in the report)"
            )
