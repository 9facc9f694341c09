"""Text pairs: ``text_a, text_b, label_or_score`` CSV/TSV files and the STS Benchmark,
SICK and MRPC layouts (as in ``../shared/data``).

A pair's target is either binary (same / paraphrase: 1.0, else 0.0) or a graded score
(e.g. STS 0-5, SICK relatedness 1-5). :class:`TextPairs` says which.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError

__all__ = ["TextPairs", "read_pair_csv", "read_sts", "read_sick", "read_mrpc", "load_text_pairs", "parse_target"]

_TRUE = {"1", "true", "yes", "same", "y", "t", "paraphrase", "match"}
_FALSE = {"0", "false", "no", "different", "n", "f", "not", "nonmatch", "non-match"}


@dataclass(frozen=True)
class TextPairs:
    """Text pairs with one target each.

    Attributes:
        texts_a: the first text of each pair.
        texts_b: the second text of each pair.
        targets: (N,) float64: 1.0 / 0.0 for binary pairs, else the graded score.
        binary: True when every target is a same / different label.
        source: where they came from (a path), for messages.
    """

    texts_a: tuple[str, ...]
    texts_b: tuple[str, ...]
    targets: np.ndarray
    binary: bool
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.texts_a)
        if len(self.texts_b) != n or self.targets.shape != (n,):
            raise DataError(f"{self.source or 'text pairs'}: {n} first texts, {len(self.texts_b)} second texts, "
                            f"{self.targets.shape[0] if self.targets.ndim else 0} targets")
        if not np.isfinite(self.targets).all():
            raise DataError(f"{self.source or 'text pairs'}: a target is not a finite number")

    def __len__(self) -> int:
        return len(self.texts_a)

    def subset(self, index: np.ndarray) -> TextPairs:
        """The pairs at ``index`` (an int array), in that order."""
        idx = [int(i) for i in index]
        return TextPairs(tuple(self.texts_a[i] for i in idx), tuple(self.texts_b[i] for i in idx),
                         self.targets[idx], self.binary, self.source)

    def split(self, fraction: float, *, seed: int = 0) -> tuple[TextPairs, TextPairs]:
        """A random (rest, held-out) split, ``fraction`` of the pairs held out.

        Args:
            fraction: in (0, 1).
            seed: the shuffle's seed.

        Returns:
            (rest, held_out), each at least one pair.

        Raises:
            DataError: fewer than two pairs or a fraction outside (0, 1).
        """
        if not 0 < fraction < 1 or len(self) < 2:
            raise DataError(f"cannot hold out {fraction} of {len(self)} pairs")
        perm = np.random.default_rng(seed).permutation(len(self))
        k = min(len(self) - 1, max(1, round(fraction * len(self))))
        return self.subset(np.sort(perm[k:])), self.subset(np.sort(perm[:k]))


def parse_target(value: str, *, where: str) -> tuple[float, bool]:
    """One label-or-score cell.

    Args:
        value: the cell (``true``/``false``, ``same``/``different``, ``1``/``0`` or a number).
        where: the file and line, for the message.

    Returns:
        (target, is_label): a label's 1.0 / 0.0, or the number.

    Raises:
        DataError: neither a label nor a finite number.
    """
    v = value.strip().lower()
    if v in _TRUE:
        return 1.0, True
    if v in _FALSE:
        return 0.0, True
    try:
        x = float(v)
    except ValueError:
        raise DataError(f"{where}: {value!r} is neither a label (true/false, same/different, 1/0) nor a score") from None
    if not math.isfinite(x):
        raise DataError(f"{where}: the score {value!r} is not finite")
    return x, False


def _is_target(value: str) -> bool:
    try:
        parse_target(value, where="")
    except DataError:
        return False
    return True


def _rows(path: Path, *, delimiter: str, quoting: int = csv.QUOTE_MINIMAL, encoding: str = "utf-8") -> Iterator[list[str]]:
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    try:
        with open(path, newline="", encoding=encoding) as f:
            yield from csv.reader(f, delimiter=delimiter, quoting=quoting)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise DataError(f"{path} is not a readable CSV/TSV file ({e})") from None


def _pairs(path: Path, a: list[str], b: list[str], t: list[float], binary: bool) -> TextPairs:
    if not a:
        raise DataError(f"{path} holds no text pairs")
    return TextPairs(tuple(a), tuple(b), np.asarray(t, dtype=np.float64), binary, str(path))


def read_pair_csv(path: str | Path) -> TextPairs:
    """A CSV (``.tsv``/``.txt``: tab-separated) of ``text_a, text_b, label_or_score``.

    A header line is optional (recognised when its third cell is not a target). Every
    target must be a label (``true``/``false``, ``same``/``different``, ``1``/``0``:
    binary pairs) or every one a number (graded; 0/1 alone count as labels).

    Args:
        path: the file.

    Returns:
        The pairs.

    Raises:
        DataError: missing file, a row without three cells, an empty text, a bad target.
    """
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    a: list[str] = []
    b: list[str] = []
    t: list[float] = []
    labels: list[bool] = []
    for n, row in enumerate(_rows(path, delimiter=delimiter), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 3:
            raise DataError(f"{path}:{n}: expected text_a, text_b, label_or_score, got {len(row)} cell(s)")
        if n == 1 and not _is_target(row[2]):
            continue  # a header line
        if not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}:{n}: an empty text")
        value, is_label = parse_target(row[2], where=f"{path}:{n}")
        a.append(row[0])
        b.append(row[1])
        t.append(value)
        labels.append(is_label)
    return _pairs(path, a, b, t, bool(labels) and all(labels))


def read_sts(path: str | Path) -> TextPairs:
    """An STS Benchmark file (``sts-train.csv`` ...): tab-separated, unquoted, no header;
    the score (0-5) in column 5, the sentences in columns 6 and 7.

    Args:
        path: the file.

    Returns:
        Graded pairs (scores 0-5).

    Raises:
        DataError: a line with fewer than 7 columns or a bad score.
    """
    path = Path(path)
    a, b, t = [], [], []
    for n, row in enumerate(_rows(path, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
        if not row:
            continue
        if len(row) < 7:
            raise DataError(f"{path}:{n}: an STS Benchmark line has 7 tab-separated columns, this one {len(row)}")
        t.append(parse_target(row[4], where=f"{path}:{n}")[0])
        a.append(row[5])
        b.append(row[6])
    return _pairs(path, a, b, t, False)


def _read_headed(path: Path, cols: tuple[str, str, str], *, encoding: str, binary: bool) -> TextPairs:
    rows = _rows(path, delimiter="\t", quoting=csv.QUOTE_NONE, encoding=encoding)
    header = [h.strip() for h in next(rows, [])]
    missing = [c for c in cols if c not in header]
    if missing:
        raise DataError(f"{path}: no column(s) {missing} in the header {header}")
    ia, ib, it = (header.index(c) for c in cols)
    a, b, t = [], [], []
    for n, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ia, ib, it):
            raise DataError(f"{path}:{n}: {len(row)} columns, the header has {len(header)}")
        t.append(parse_target(row[it], where=f"{path}:{n}")[0])
        a.append(row[ia].strip())
        b.append(row[ib].strip())
    return _pairs(path, a, b, t, binary)


def read_sick(path: str | Path) -> TextPairs:
    """A SICK SemEval-2014 file (``SICK_train.txt``, ``SICK_test_annotated.txt``): tab-separated
    with a header; ``sentence_A``, ``sentence_B``, ``relatedness_score`` (1-5).

    Args:
        path: the file.

    Returns:
        Graded pairs (relatedness 1-5).
    """
    return _read_headed(Path(path), ("sentence_A", "sentence_B", "relatedness_score"), encoding="utf-8", binary=False)


def read_mrpc(path: str | Path) -> TextPairs:
    """An MRPC file (``msr_paraphrase_train.txt`` / ``_test.txt``): UTF-8 with BOM,
    tab-separated, header ``Quality, #1 ID, #2 ID, #1 String, #2 String``.

    Args:
        path: the file.

    Returns:
        Binary pairs (1.0 = paraphrase).
    """
    return _read_headed(Path(path), ("#1 String", "#2 String", "Quality"), encoding="utf-8-sig", binary=True)


_DEV = {"sts-train.csv": "sts-dev.csv", "SICK_train.txt": "SICK_trial.txt"}  # MRPC has no dev file
_FOLDERS = {  # a dataset folder: (train file, test file, reader)
    "sts": ("sts-train.csv", "sts-test.csv", read_sts),
    "sick": ("SICK_train.txt", "SICK_test_annotated.txt", read_sick),  # dev: SICK_trial.txt
    "mrpc": ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt", read_mrpc),
}


def load_text_pairs(path: str | Path, *, split: str = "train") -> TextPairs:
    """Text pairs from a file or a dataset folder.

    A folder holding the STS Benchmark, SICK or MRPC files gives its ``split`` (train or
    test; STS and SICK also dev: ``sts-dev.csv``, ``SICK_trial.txt``). A file is read by its layout: ``sts-*.csv`` (STS Benchmark),
    ``SICK_*.txt``, ``msr_paraphrase_*.txt``, else a ``text_a, text_b, label_or_score``
    CSV/TSV.

    Args:
        path: the file or folder.
        split: which file of a dataset folder.

    Returns:
        The pairs.

    Raises:
        DataError: a folder of none of these layouts, a missing split, a bad file.
    """
    path = Path(path)
    if path.is_dir():
        if split not in ("train", "test", "dev"):
            raise DataError(f"split {split!r}; choose train, test or dev")
        for train_name, test_name, reader in _FOLDERS.values():
            if (path / train_name).is_file():
                if split == "dev" and train_name not in _DEV:
                    raise DataError(f"{path} has no dev split; carve a validation split from train")
                name = {"train": train_name, "test": test_name, "dev": _DEV.get(train_name, "")}[split]
                if not (path / name).is_file():
                    raise DataError(f"{path} has no {split} file ({name})")
                return reader(path / name)
        raise DataError(f"{path} holds no STS Benchmark, SICK or MRPC files; give a CSV of text_a,text_b,label_or_score")
    name = path.name
    if name.startswith("sts-") and name.endswith(".csv"):
        return read_sts(path)
    if name.startswith("SICK_"):
        return read_sick(path)
    if name.startswith("msr_paraphrase_"):
        return read_mrpc(path)
    return read_pair_csv(path)
