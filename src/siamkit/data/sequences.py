"""Float feature sequences (sensor readings, pen trajectories, any time series) from
CSV or NPY files: one file per sequence, one row per time step, one column per feature.
Batches are right-padded with NaN rows, which the sequence encoders read as padding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError

__all__ = ["read_sequence_file", "pad_sequences"]


def read_sequence_file(path: str | Path) -> np.ndarray:
    """One sequence: ``.npy`` (a 2-D float array, read without pickle) or ``.csv``
    (comma-separated numbers; a first line that is not numeric is taken as a header).

    Args:
        path: the file.

    Returns:
        (L, F) float32, L >= 1.

    Raises:
        DataError: missing, not 1-D/2-D numeric data, empty, or not finite.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix.lower() in (".csv", ".txt"):
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            try:
                [float(v) for v in first.split(",")]
                skip = 0
            except ValueError:
                skip = 1
            arr = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
        else:
            raise DataError(f"{path}: a sequence file is .npy or .csv")
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a numeric sequence ({e})") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: expected a (steps, features) numeric array, got shape {arr.shape} {arr.dtype}")
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: the sequence holds NaN or infinite values")
    return arr.astype(np.float32)


def pad_sequences(sequences: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
    """Right-pad (L_i, F) sequences with NaN rows into one batch.

    Args:
        sequences: the sequences, all with the same feature count.

    Shapes:
        each (L_i, F) -> (B, max L_i, F).

    Returns:
        float32 batch; padded steps are all-NaN.

    Raises:
        DataError: no sequences, or differing feature counts.
    """
    if not sequences:
        raise DataError("no sequences to pad")
    seqs = [torch.as_tensor(s, dtype=torch.float32) for s in sequences]
    feats = {s.shape[-1] for s in seqs}
    if len(feats) != 1 or any(s.ndim != 2 for s in seqs):
        raise DataError(f"sequences must be (steps, features) with one feature count, got {sorted(feats)}")
    out = torch.full((len(seqs), max(s.shape[0] for s in seqs), feats.pop()), float("nan"))
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out
