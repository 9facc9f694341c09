"""Adaptive embedding size: decide a pair at a small Matryoshka prefix, and compare the
larger prefixes only when the small one is not confident.

:class:`SizeCascade` holds, for every size but the last, the calibrated threshold and a
band around it: a pair whose distance at that size falls outside the band is decided
there; inside it, it is passed to the next size, and the last size decides every pair it
gets. The thresholds are each size's :class:`~siamkit.calibration.Calibrator` threshold
(fitted on a calibration split); the bands are learnt on the same split as the narrowest
ones for which the pairs decided early disagree with the full-size decision on at most
``max_disagreement`` of all pairs in total (shared equally by the sizes and the two sides
of each threshold).

What it saves: values compared (and stored / sent) per pair, not encoder time (one
forward pass gives every prefix). :meth:`SizeCascade.report` gives the fraction decided
at each size, the accuracy against the full size, and the mean values compared per pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from ._atomic import write_json_atomic
from .calibration import Calibrator
from .errors import CalibrationError, ModelFileError, NotFittedError
from .io import check_fingerprint
from .matryoshka import check_dims
from .versioned import read_versioned_json

__all__ = ["SizeCascade", "ADAPTIVE_FILE"]

ADAPTIVE_FILE = "adaptive.json"
FORMAT = "siamkit-size-cascade"
FORMAT_VERSION = 1


def _np(x: Any) -> np.ndarray:
    return np.asarray(torch.as_tensor(x).detach().cpu().double())


def _width(gap: np.ndarray, disagree: np.ndarray, budget: int) -> float:
    """The smallest w such that at most ``budget`` disagreeing pairs have gap > w."""
    g = np.sort(gap[disagree])[::-1]
    return 0.0 if g.size <= budget else float(g[budget])


class SizeCascade:
    """Decide pairs at the smallest size that is confident (see the module docstring).

    Args:
        dims: the sizes, smallest first; the last is the one whose decisions are the reference.
        threshold_method: each size's threshold (``Calibrator``'s: eer, accuracy, far).
        target_far: for ``threshold_method="far"``.
        max_disagreement: the fraction of all calibration pairs that may be decided early
            differently from the last size (the band widths follow from it).

    Attributes:
        thresholds_ (list[float]): per size.
        bands_ (list[tuple[float, float]]): per size but the last, (below, above) the threshold.
        model_fingerprint_ (str | None): the model it was fitted for.
    """

    def __init__(
        self, *, dims: Sequence[int], threshold_method: str = "eer", target_far: float = 1e-3, max_disagreement: float = 0.005
    ) -> None:
        self.dims = list(check_dims(dims))
        self.threshold_method = threshold_method
        self.target_far = target_far
        self.max_disagreement = float(max_disagreement)
        if len(self.dims) < 2:
            raise CalibrationError("a size cascade needs at least two sizes")
        if not 0.0 <= self.max_disagreement < 1.0:
            raise CalibrationError(f"max_disagreement must be in [0, 1), got {max_disagreement}")

    def fit(
        self, distances: Mapping[int, Any], same: Any, *, model_fingerprint: str | None = None
    ) -> SizeCascade:
        """Fit the thresholds and bands on calibration pairs scored at every size.

        Args:
            distances: size -> (P,) distances of the same pairs.
            same: (P,) genuine pair.
            model_fingerprint: the (full-size) model's fingerprint, saved and checked on load.

        Returns:
            self.

        Raises:
            CalibrationError: a size without distances, or pairs the calibrator refuses.
        """
        missing = [d for d in self.dims if d not in distances]
        if missing:
            raise CalibrationError(f"no distances at the sizes {missing}")
        y = _np(same).astype(bool)
        d = {k: _np(distances[k]) for k in self.dims}
        self.thresholds_ = []
        for k in self.dims:
            cal = Calibrator(threshold_method=self.threshold_method, target_far=self.target_far).fit(d[k], y)
            self.thresholds_.append(float(cal.threshold_))
        final = d[self.dims[-1]] <= self.thresholds_[-1]
        budget = int(self.max_disagreement * y.size / (2 * (len(self.dims) - 1)))  # per size and side
        reach = np.ones(y.size, dtype=bool)
        self.bands_ = []
        for k, t in zip(self.dims[:-1], self.thresholds_[:-1]):
            accept = d[k] <= t
            disagree = (accept != final) & reach
            below = _width(t - d[k], disagree & accept, budget)
            above = _width(d[k] - t, disagree & ~accept, budget)
            self.bands_.append((below, above))
            reach &= (d[k] >= t - below) & (d[k] <= t + above)
        self.model_fingerprint_ = model_fingerprint
        return self

    def _check(self) -> None:
        if not hasattr(self, "bands_"):
            raise NotFittedError("this SizeCascade is not fitted; call fit() or load() first")

    def decide(self, distances: Mapping[int, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Decisions of pairs scored at (at least) the sizes the cascade reaches.

        Args:
            distances: size -> (P,) distances (a size only its deferred pairs need may be
                absent when no pair reaches it).

        Returns:
            (same, size): the decision of every pair and the size that decided it.

        Raises:
            CalibrationError: pairs reach a size whose distances are not given.
        """
        self._check()
        n = _np(next(iter(distances.values()))).size
        same = np.zeros(n, dtype=bool)
        size = np.zeros(n, dtype=np.int64)
        open_ = np.ones(n, dtype=bool)
        for i, (k, t) in enumerate(zip(self.dims, self.thresholds_)):
            if not open_.any():
                break
            if k not in distances:
                raise CalibrationError(f"{int(open_.sum())} pairs need the distances at size {k}")
            dk = _np(distances[k])
            band = self.bands_[i] if i < len(self.bands_) else None
            here = open_ if band is None else open_ & ((dk < t - band[0]) | (dk > t + band[1]))
            same[here] = dk[here] <= t
            size[here] = k
            open_ &= ~here
        return same, size

    def report(self, distances: Mapping[int, Any], same: Any) -> dict[str, Any]:
        """How the cascade does on scored pairs against the last size alone.

        Args:
            distances: size -> (P,) distances at every size.
            same: (P,) the truth.

        Returns:
            ``decided_at`` (size -> fraction of pairs), ``accuracy`` (the cascade's),
            ``accuracy_full`` (the last size's), ``accuracy_smallest``, ``agreement_with_full``,
            ``mean_values_compared`` (per pair), ``pairs``.
        """
        y = _np(same).astype(bool)
        dec, size = self.decide(distances)
        full = _np(distances[self.dims[-1]]) <= self.thresholds_[-1]
        small = _np(distances[self.dims[0]]) <= self.thresholds_[0]
        # a pair decided at size k compared the prefixes of every size up to k
        cost = np.zeros(y.size)
        for k in self.dims:
            cost += np.where(size >= k, k, 0)
        return {
            "decided_at": {int(k): float((size == k).mean()) for k in self.dims},
            "accuracy": float((dec == y).mean()),
            "accuracy_full": float((full == y).mean()),
            "accuracy_smallest": float((small == y).mean()),
            "agreement_with_full": float((dec == full).mean()),
            "mean_values_compared": float(cost.mean()),
            "pairs": int(y.size),
        }

    def to_dict(self) -> dict[str, Any]:
        """The fitted cascade, JSON-able (versioned)."""
        self._check()
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "siamkit_version": __version__,
                "dims": self.dims, "threshold_method": self.threshold_method, "target_far": self.target_far,
                "max_disagreement": self.max_disagreement, "thresholds": self.thresholds_,
                "bands": [list(b) for b in self.bands_], "model_fingerprint": self.model_fingerprint_}

    def save(self, model_dir: str | Path) -> Path:
        """Write ``model_dir/adaptive.json`` atomically.

        Args:
            model_dir: the model folder.

        Returns:
            The file written.
        """
        path = Path(model_dir) / ADAPTIVE_FILE
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, model_dir: str | Path, *, expected_fingerprint: str | None = None) -> SizeCascade | None:
        """Read ``model_dir/adaptive.json`` (None when there is none).

        Args:
            model_dir: the model folder.
            expected_fingerprint: the full-size model's fingerprint (checked when given).

        Returns:
            The fitted cascade, or None.

        Raises:
            ModelFileError: a damaged file, or one of another model.
        """
        path = Path(model_dir) / ADAPTIVE_FILE
        if not path.is_file():
            return None
        data = read_versioned_json(path, fmt=FORMAT, version=FORMAT_VERSION, what="size cascade")
        try:
            c = cls(dims=data["dims"], threshold_method=data["threshold_method"], target_far=data["target_far"],
                    max_disagreement=data["max_disagreement"])
            c.thresholds_ = [float(t) for t in data["thresholds"]]
            c.bands_ = [(float(lo), float(hi)) for lo, hi in data["bands"]]
            c.model_fingerprint_ = data.get("model_fingerprint")
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"{path} is damaged: {e}") from None
        if len(c.thresholds_) != len(c.dims) or len(c.bands_) != len(c.dims) - 1:
            raise ModelFileError(f"{path} is damaged: {len(c.dims)} sizes, {len(c.thresholds_)} thresholds")
        if expected_fingerprint is not None:
            check_fingerprint(c.model_fingerprint_, expected_fingerprint, where=str(path), hint="; recalibrate")
        return c
