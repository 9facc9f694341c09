"""Many pairs at once: a CSV of ``path_a,path_b`` -> one decision per pair, and whether the
pairs still look like the data the calibration was fitted on.

:func:`compare_pair_list` decodes each distinct image once (as
:func:`siamkit.verify.load_image_for` loads it), embeds them in batches, and decides every
pair with the :class:`~siamkit.verify.Verifier`. When the model's calibration keeps a
score summary (:mod:`siamkit.calibration.domain`) it also checks for a shift on impostor
distances: the pairs labelled different when the CSV has a ``same`` column, else
*cross pairs* (``path_a`` of one row with ``path_b`` of another, distinct files), which are
impostors whenever the batch covers many identities (say so in the report: a batch of
few people makes some of them genuine, which only makes a warning more likely).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .calibration import ShiftReport, check_shift
from .data.pairs import parse_same
from .errors import DataError
from .inference import embed_all, pair_distances_of_embeddings
from .verify import Verifier, load_image_for

__all__ = ["BatchComparison", "read_pair_list", "compare_pair_list"]

#: impostor distances the shift check uses at most
MAX_SHIFT_PAIRS = 100_000


@dataclass
class BatchComparison:
    """The answer of :func:`compare_pair_list`.

    Attributes:
        rows: per pair, in file order: path_a, path_b, distance, score, same,
            confidence, threshold (and truth when the CSV has a ``same`` column).
        shift: the shift check (None: no score summary in the calibration, or too few
            impostor distances).
        impostor_source: which distances the shift check used.
    """

    rows: list[dict[str, Any]]
    shift: ShiftReport | None = None
    impostor_source: str = ""
    notes: list[str] = field(default_factory=list)


def read_pair_list(path: str | Path) -> tuple[list[tuple[Path, Path]], np.ndarray | None]:
    """Read a CSV with a header holding ``path_a,path_b`` (and optionally ``same``).

    Relative paths are resolved against the CSV's folder.

    Args:
        path: the CSV file.

    Returns:
        ``(pairs, same)``: the path pairs, and the ``same`` column as bools (None
        without one).

    Raises:
        DataError: a missing file or header, no rows, an empty cell or a bad ``same``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pair file {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        if not {"path_a", "path_b"} <= cols:
            raise DataError(f"{path} must have a header with columns path_a,path_b (and optionally same); got {reader.fieldnames}")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path} has no pairs")
    pairs: list[tuple[Path, Path]] = []
    same: list[bool] = []
    for n, row in enumerate(rows, start=2):
        ps = []
        for col in ("path_a", "path_b"):
            cell = (row.get(col) or "").strip()
            if not cell:
                raise DataError(f"{path}, line {n}: empty {col}")
            p = Path(cell)
            ps.append(p if p.is_absolute() else path.parent / p)
        pairs.append((ps[0], ps[1]))
        if "same" in cols:
            same.append(parse_same(row.get("same") or "", where=f"{path}, line {n}: "))
    return pairs, (np.array(same, dtype=bool) if "same" in cols else None)


def _impostors(
    emb: torch.Tensor, a: torch.Tensor, b: torch.Tensor, same: np.ndarray | None, verifier: Verifier, seed: int
) -> tuple[np.ndarray, str]:
    """Impostor distances for the shift check and where they came from."""
    net = verifier.network
    if same is not None:
        d = pair_distances_of_embeddings(net, emb, a[~torch.from_numpy(same)], b[~torch.from_numpy(same)])
        return d.double().numpy(), "the pairs labelled different (same = 0)"
    rng = np.random.default_rng(seed)
    n = a.numel()
    i = rng.integers(0, n, size=min(MAX_SHIFT_PAIRS, n * (n - 1)))
    j = rng.integers(0, n, size=i.size)
    keep = (i != j) & (a[i].numpy() != b[j].numpy())
    d = pair_distances_of_embeddings(net, emb, a[i[keep]], b[j[keep]])
    return d.double().numpy(), "cross pairs (path_a of one row with path_b of another), presumed impostors"


def compare_pair_list(verifier: Verifier, path: str | Path, *, batch_size: int = 256, seed: int = 0, min_shift_pairs: int = 30) -> BatchComparison:
    """Decide every pair of a CSV and check the pairs against the calibration's domain.

    Args:
        verifier: the model and its calibration.
        path: a CSV with ``path_a,path_b`` (optionally ``same``), see :func:`read_pair_list`.
        batch_size: images embedded per batch.
        seed: the seed of the cross-pair sample.
        min_shift_pairs: fewer impostor distances than this: no shift check.

    Returns:
        The :class:`BatchComparison`.

    Raises:
        DataError: see :func:`read_pair_list`; an image that cannot be read.
    """
    pairs, same = read_pair_list(path)
    index: dict[Path, int] = {}
    a = torch.tensor([index.setdefault(p, len(index)) for p, _ in pairs])
    b = torch.tensor([index.setdefault(q, len(index)) for _, q in pairs])
    net = verifier.network
    images = torch.stack([load_image_for(net, p) for p in index])
    emb = embed_all(net, images, batch_size=batch_size)
    dist = pair_distances_of_embeddings(net, emb, a, b)
    rows = []
    for k, r in enumerate(verifier.decide(dist)):
        row = {"path_a": str(pairs[k][0]), "path_b": str(pairs[k][1]), **r.to_dict()}
        if same is not None:
            row["truth"] = bool(same[k])
        rows.append(row)
    out = BatchComparison(rows)
    summary = None if verifier.calibrator is None else getattr(verifier.calibrator, "scores_", None)
    if summary is None:
        out.notes.append("no shift check: the model's calibration has no score summary (recalibrate with this siamkit)"
                         if verifier.calibrator is not None else "no shift check: the model is not calibrated")
        return out
    imp, source = _impostors(emb, a, b, same, verifier, seed)
    out.impostor_source = source
    if imp.size < min_shift_pairs:
        out.notes.append(f"no shift check: {imp.size} impostor distances, {min_shift_pairs} needed")
        return out
    out.shift = check_shift(summary, imp, threshold=float(verifier.calibrator.threshold_), data=f"{Path(path).name} ({source})")
    return out
