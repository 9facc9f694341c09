"""Pairs given as a CSV file of ``path_a,path_b,same``."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import DataError
from .images import load_image

__all__ = ["PairCSVDataset", "parse_same"]

_TRUE = {"1", "true", "yes", "same", "genuine"}
_FALSE = {"0", "false", "no", "different", "impostor", "forged"}


def parse_same(value: str, *, where: str = "") -> bool:
    """Read a ``same`` cell: 1/true/yes/same/genuine or 0/false/no/different/impostor/forged.

    Args:
        value: the cell (case and surrounding spaces ignored).
        where: prefix of the error message (file and line).

    Returns:
        True for a same-identity pair.

    Raises:
        DataError: any other value.
    """
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise DataError(f"{where}'same' must be 1/0 or true/false (1 = same identity), got {value!r}")


@dataclass
class PairCSVDataset:
    """Image pairs from a CSV with a header ``path_a,path_b,same`` (1 = same identity).

    Relative paths are resolved against the CSV's folder. Images are decoded once.

    Attributes:
        images: uint8 (U, C, H, W), the distinct images.
        a, b: int64 (P,), indices into ``images``.
        same: bool (P,).
    """

    images: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    same: torch.Tensor
    paths: list[Path]

    def __len__(self) -> int:
        return int(self.a.numel())

    @classmethod
    def from_csv(
        cls, path: str | Path, *, image_size: tuple[int, int], channels: int, preprocess: Callable[[Any], Any] | None = None
    ) -> "PairCSVDataset":
        """Read the pair file and decode each distinct image once.

        Args:
            path: the CSV (header ``path_a,path_b,same``).
            image_size: (H, W) every image is resized to.
            channels: 1 or 3.
            preprocess: the model's preprocessing steps as one PIL -> PIL function
                (``InputSpec.preprocessor()``), or None.

        Returns:
            The pairs: images (U, C, H, W) uint8, a (P,), b (P,), same (P,).

        Raises:
            DataError: a missing file, header or image, no rows, a bad ``same`` cell.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"pair file {path} does not exist")
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            need = {"path_a", "path_b", "same"}
            if reader.fieldnames is None or not need <= set(reader.fieldnames):
                raise DataError(f"{path} must have a header with columns path_a,path_b,same; got {reader.fieldnames}")
            rows = list(reader)
        if not rows:
            raise DataError(f"{path} has no pairs")
        index: dict[Path, int] = {}
        a: list[int] = []
        b: list[int] = []
        same: list[bool] = []
        for n, row in enumerate(rows, start=2):
            ids = []
            for col in ("path_a", "path_b"):
                p = Path(row[col] or "")
                if not p.is_absolute():
                    p = path.parent / p
                ids.append(index.setdefault(p, len(index)))
            a.append(ids[0])
            b.append(ids[1])
            same.append(parse_same(row["same"] or "", where=f"{path}, line {n}: "))
        paths = list(index)
        images = torch.stack([load_image(p, size=image_size, channels=channels, preprocess=preprocess) for p in paths])
        return cls(images, torch.tensor(a), torch.tensor(b), torch.tensor(same), paths)
