"""The :class:`Calibrator` estimator and its ``calibration.json`` file (see :mod:`siamkit.calibration`)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from .. import __version__
from ..distances import get_distance
from ..errors import ModelFileError
from ..evaluation.curve import as_distances, as_pairs, count_curve, eer_from_counts, gap_midpoint
from ..evaluation.verification import tar_at_far_from_counts
from .domain import ScoreSummary, summarize_scores
from .openset import OpenSetThreshold
from .platt import platt_fit, sigmoid
from ..io import CONFIG, check_fingerprint, check_versioned, read_config, write_json_atomic
from ..errors import CalibrationError, NotFittedError, SplitLeakageError

__all__ = [
    "Calibrator",
    "CalibrationError",
    "NotFittedError",
    "SplitLeakageError",
    "CALIBRATION_FILE",
    "calibration_file",
    "FORMAT",
    "FORMAT_VERSION",
]

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
FORMAT = "siamkit-calibration"
#: version 1 gained two optional fields, ``scores`` (the :class:`ScoreSummary` of the fit
#: data) and ``identification`` (the :class:`OpenSetThreshold`): files without them still
#: load (``scores_`` / ``identification_`` None), and a siamkit that predates them ignores them
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)

THRESHOLD_METHODS = ("eer", "accuracy", "far")
CONFIDENCE_METHODS = ("platt", "isotonic")


# --------------------------------------------------------------------------- Calibrator


class Calibrator:
    """Decision threshold and confidence on pair distances (lower = closer).

    Follows scikit-learn: ``__init__`` only stores its arguments; :meth:`fit` learns the
    trailing-underscore attributes and returns ``self``.

    Args:
        threshold_method: how ``threshold_`` is chosen on the fit data:
            ``"eer"``: the equal-error-rate threshold of
            :func:`siamkit.evaluation.verification.equal_error_rate`;
            ``"accuracy"``: the threshold with the highest accuracy (first best when
            several tie, i.e. the smallest such distance; placed in the middle of the
            gap to the next larger distance);
            ``"far"``: the largest distance threshold whose false accept rate on the fit
            data is <= ``target_far`` (refused when there are fewer than
            ``ceil(1/target_far)`` impostor pairs).
        target_far: the false accept rate of ``threshold_method="far"``.
        confidence_method: ``"platt"``: logistic regression of same on the distance
            (Platt scaling with smoothed targets, so separable data stays finite);
            ``"isotonic"``: non-increasing isotonic regression, stored as its
            breakpoints and evaluated by linear interpolation (clipped at both ends).

    Attributes (after fit):
        threshold_ (float): accept when distance <= threshold_.
        method_ (str): the threshold method used.
        platt_a_, platt_b_ (float): ``p(same) = sigmoid(platt_a_ * d + platt_b_)``,
            ``platt_a_ <= 0`` (Platt only).
        iso_x_, iso_y_ (ndarray): isotonic breakpoints, x increasing, y non-increasing
            (isotonic only).
        n_pos_, n_neg_ (int): genuine / impostor pairs in the fit data.
        fitted_on_ (str): the name of the split it was fitted on.
        model_fingerprint_ (str | None): the model it belongs to, when given.
        scores_ (ScoreSummary | None): the score distributions it was fitted on
            (:mod:`siamkit.calibration.domain`; None in files of format version 1).
        identification_ (OpenSetThreshold | None): the open-set identification threshold
            (:mod:`siamkit.calibration.openset`), set with :meth:`set_identification`.

    Example:
        >>> cal = Calibrator(threshold_method="far", target_far=1e-3, confidence_method="isotonic")
    """

    def __init__(
        self,
        *,
        threshold_method: str = "eer",
        target_far: float = 1e-3,
        confidence_method: str = "platt",
    ) -> None:
        self.threshold_method = threshold_method
        self.target_far = target_far
        self.confidence_method = confidence_method

    def __repr__(self) -> str:
        return (
            f"Calibrator(threshold_method={self.threshold_method!r}, target_far={self.target_far!r}, "
            f"confidence_method={self.confidence_method!r})"
        )

    # ----------------------------------------------------------------- fit

    def _check_params(self) -> float:
        if self.threshold_method not in THRESHOLD_METHODS:
            raise ValueError(
                f"threshold_method must be one of {list(THRESHOLD_METHODS)}, got {self.threshold_method!r}"
            )
        if self.confidence_method not in CONFIDENCE_METHODS:
            raise ValueError(
                f"confidence_method must be one of {list(CONFIDENCE_METHODS)}, got {self.confidence_method!r}"
            )
        try:
            far = float(self.target_far)
        except (TypeError, ValueError):
            raise ValueError(f"target_far must be a number in (0, 1), got {self.target_far!r}") from None
        if not (0.0 < far < 1.0):
            raise ValueError(f"target_far must be in (0, 1), got {far}")
        return far

    def fit(
        self,
        distances: Any,
        same: Any,
        split_name: str = "validation",
        *,
        model_fingerprint: str | None = None,
        n_classes: int | None = None,
    ) -> Calibrator:
        """Fit the threshold and the confidence curve.

        Args:
            distances: pair distances of a held-out split, lower = closer.
            same: True for genuine pairs.
            split_name: the split's name; reports on it are refused afterwards.
            model_fingerprint: identifies the model these distances came from; saved,
                and checked by :meth:`load` when an expected fingerprint is given.
            n_classes: identities the pairs come from, kept in the score summary (the
                shift check counts identity pairs, see :mod:`siamkit.calibration.domain`).

        Shapes:
            distances (P,), same (P,).

        Returns:
            self.

        Raises:
            DataError: NaN / infinite distances, bad shapes, or only one class.
            CalibrationError: ``threshold_method="far"`` with too few impostor pairs.
        """
        far = self._check_params()
        if not isinstance(split_name, str) or not split_name.strip():
            raise ValueError(f"split_name must be a non-empty string, got {split_name!r}")
        d, s = as_pairs(distances, same)
        thr, tp, fp = count_curve(d, s)
        n_pos, n_neg = int(tp[-1]), int(fp[-1])

        if self.threshold_method == "eer":
            threshold = eer_from_counts(thr, tp, fp)[1]
        elif self.threshold_method == "accuracy":
            correct = tp + (n_neg - fp)
            k = int(np.argmax(correct))  # first best: the smallest such threshold
            threshold = gap_midpoint(thr, k) if k > 0 else float(np.nextafter(thr[1], -np.inf))
        else:
            res = tar_at_far_from_counts(thr, tp, fp, far)
            if not res.resolvable:
                raise CalibrationError(f"cannot fit a threshold at target_far={far:g}: {res.reason}")
            threshold = res.threshold
            if not math.isfinite(threshold):
                # even the smallest distance has too many impostors (ties): accept nothing
                logger.warning(
                    "no distance threshold reaches FAR <= %g on the fit data; the threshold accepts nothing", far
                )
                threshold = float(np.nextafter(thr[1], -np.inf))

        self.threshold_ = float(threshold)
        self.method_ = self.threshold_method
        if self.confidence_method == "platt":
            self.platt_a_, self.platt_b_ = platt_fit(d, s)
        else:
            iso = IsotonicRegression(increasing=False, out_of_bounds="clip", y_min=0.0, y_max=1.0)
            iso.fit(d, s.astype(np.float64))
            self.iso_x_ = np.asarray(iso.X_thresholds_, dtype=np.float64).copy()
            self.iso_y_ = np.asarray(iso.y_thresholds_, dtype=np.float64).copy()
        self.n_pos_ = n_pos
        self.n_neg_ = n_neg
        self.fitted_on_ = split_name
        self.model_fingerprint_ = model_fingerprint
        self.scores_: ScoreSummary | None = summarize_scores(d, s, self.threshold_, split_name, n_classes)
        self.identification_: OpenSetThreshold | None = None
        return self

    def set_identification(self, threshold: OpenSetThreshold | None) -> Calibrator:
        """Store (or, with None, drop) the open-set identification threshold. Returns self."""
        self._check_fitted()
        self.identification_ = threshold
        return self

    @property
    def identification_threshold(self) -> float | None:
        """The open-set identification threshold, None when not fitted."""
        ident = getattr(self, "identification_", None)
        return None if ident is None else float(ident.threshold)

    # ----------------------------------------------------------------- use

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError("this Calibrator is not fitted yet: call fit() or Calibrator.load() first")

    def decide(self, distances: Any) -> np.ndarray:
        """Same-or-not decisions: ``distance <= threshold_``.

        Shapes: distances (...) -> bool (...).
        """
        self._check_fitted()
        return as_distances(distances) <= self.threshold_

    def confidence(self, distances: Any) -> np.ndarray:
        """Probability that each pair is the same (higher = more similar), in [0, 1].

        Shapes: distances (...) -> float64 (...).
        """
        self._check_fitted()
        d = as_distances(distances)
        if self.confidence_method == "platt":
            return sigmoid(self.platt_a_ * d + self.platt_b_)
        return np.interp(d, self.iso_x_, self.iso_y_)

    def check_not_fitted_on(self, split_name: str) -> None:
        """Refuse to report on the split the calibrator was fitted on.

        Names are compared ignoring case and surrounding spaces.

        Raises:
            SplitLeakageError: ``split_name`` is the fit split.
            NotFittedError: the calibrator is not fitted.
        """
        self._check_fitted()
        if split_name.strip().lower() == self.fitted_on_.strip().lower():
            raise SplitLeakageError(
                f"the calibrator was fitted on split {self.fitted_on_!r}; metrics on {split_name!r} "
                "would be optimistic: report on a different split"
            )

    # ----------------------------------------------------------------- files

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_dict` rebuilds an identical calibrator."""
        self._check_fitted()
        if self.confidence_method == "platt":
            conf: dict[str, Any] = {"kind": "platt", "a": self.platt_a_, "b": self.platt_b_}
        else:
            conf = {"kind": "isotonic", "x": self.iso_x_.tolist(), "y": self.iso_y_.tolist()}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "siamkit_version": __version__,
            "params": {
                "threshold_method": self.threshold_method,
                "target_far": float(self.target_far),
                "confidence_method": self.confidence_method,
            },
            "threshold": self.threshold_,
            "method": self.method_,
            "confidence": conf,
            "n_pos": self.n_pos_,
            "n_neg": self.n_neg_,
            "fitted_on": self.fitted_on_,
            "model_fingerprint": self.model_fingerprint_,
            "scores": None if getattr(self, "scores_", None) is None else self.scores_.to_dict(),
            "identification": None if getattr(self, "identification_", None) is None else self.identification_.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Calibrator:
        """Rebuild a fitted calibrator from :meth:`to_dict` output.

        Raises:
            ModelFileError: not a siamkit calibration, another format version, or a
                missing / invalid field (the message names it).
        """
        found = data.get("format_version") if isinstance(data, dict) else None
        check_versioned(data, fmt=FORMAT, version=found if found in READABLE_VERSIONS else FORMAT_VERSION, what="calibration")
        try:
            params = data["params"]
            cal = cls(
                threshold_method=params["threshold_method"],
                target_far=params["target_far"],
                confidence_method=params["confidence_method"],
            )
            cal._check_params()
            cal.threshold_ = _finite(data["threshold"], "threshold")
            cal.method_ = str(data["method"])
            conf = data["confidence"]
            if conf["kind"] != cal.confidence_method:
                raise ValueError(f"confidence kind {conf['kind']!r} != confidence_method {cal.confidence_method!r}")
            if cal.confidence_method == "platt":
                cal.platt_a_ = _finite(conf["a"], "confidence.a")
                cal.platt_b_ = _finite(conf["b"], "confidence.b")
            else:
                x = np.asarray(conf["x"], dtype=np.float64)
                y = np.asarray(conf["y"], dtype=np.float64)
                if x.ndim != 1 or x.shape != y.shape or x.size == 0:
                    raise ValueError("isotonic x and y must be non-empty lists of equal length")
                if not (np.isfinite(x).all() and np.isfinite(y).all()):
                    raise ValueError("isotonic points must be finite")
                if (np.diff(x) < 0).any() or (np.diff(y) > 0).any() or y.min() < 0 or y.max() > 1:
                    raise ValueError("isotonic x must increase and y must be non-increasing in [0, 1]")
                cal.iso_x_, cal.iso_y_ = x, y
            cal.n_pos_ = int(data["n_pos"])
            cal.n_neg_ = int(data["n_neg"])
            cal.fitted_on_ = str(data["fitted_on"])
            fp = data.get("model_fingerprint")
            cal.model_fingerprint_ = None if fp is None else str(fp)
            scores, ident = data.get("scores"), data.get("identification")
            cal.scores_ = None if scores is None else ScoreSummary.from_dict(scores)
            cal.identification_ = None if ident is None else OpenSetThreshold.from_dict(ident)
        except KeyError as e:
            raise ModelFileError(f"calibration is missing the field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"calibration has an invalid field: {e}") from None
        return cal

    def save(self, model_dir: str | Path, *, dim: int | None = None) -> Path:
        """Write ``model_dir/calibration.json`` atomically. Returns the file's path.

        Args:
            model_dir: the model folder.
            dim: a Matryoshka embedding size: ``calibration-dimD.json`` (the calibration of
                the model at that size); None: the full size's ``calibration.json``.

        Returns:
            The file written.

        Raises:
            ModelFileError: ``model_dir`` is not an existing folder.
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelFileError(f"model folder {model_dir} does not exist")
        path = model_dir / calibration_file(dim)
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(
        cls, model_dir: str | Path, *, expected_fingerprint: str | None = None, dim: int | None = None
    ) -> Calibrator | None:
        """Read ``model_dir/calibration.json``; None when the model has no calibration.

        Args:
            model_dir: a model folder.
            expected_fingerprint: when given and the file records a fingerprint, they must
                match (a calibration belongs to one model, at one embedding size).
            dim: a Matryoshka embedding size (``calibration-dimD.json``); None: the full size.

        Returns:
            The fitted calibrator, or None when ``model_dir`` has no calibration.json.

        Raises:
            ModelFileError: the folder does not exist, the file is damaged or from another
                format version, or the fingerprints differ.
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelFileError(f"model folder {model_dir} does not exist")
        path = model_dir / calibration_file(dim)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelFileError(f"{path} is not valid JSON ({e})") from None
        try:
            cal = cls.from_dict(data)
        except ModelFileError as e:
            raise ModelFileError(f"{path}: {e}") from None
        if expected_fingerprint is not None:
            check_fingerprint(cal.model_fingerprint_, expected_fingerprint, where=str(path), hint="; recalibrate")
        if cal.threshold_ < -_NEGATIVE_SLACK and _distance_is_nonnegative(model_dir):
            raise ModelFileError(
                f"{path}: the threshold {cal.threshold_:g} is negative, but the model's distance never is "
                "(the file is damaged or edited); recalibrate"
            )
        return cal


def calibration_file(dim: int | None = None) -> str:
    """The calibration's file name in a model folder: ``calibration.json`` for the full
    embedding, ``calibration-dimD.json`` for the model at the Matryoshka size D."""
    return CALIBRATION_FILE if dim is None else f"calibration-dim{int(dim)}.json"


#: rounding slack below 0 (the expanded squared-Euclidean matrix can dip just under it)
_NEGATIVE_SLACK = 1e-6


def _distance_is_nonnegative(model_dir: Path) -> bool:
    """Whether the model in ``model_dir`` scores pairs with a distance that is never
    negative: not with a pair head (its distance is ``-logit``), not with an unknown or
    custom distance that says it can be."""
    if not (model_dir / CONFIG).is_file():
        return False
    net = read_config(model_dir).get("network", {})
    if not isinstance(net, dict) or net.get("head"):
        return False
    try:
        return bool(get_distance(net.get("distance", "euclidean")).nonnegative)
    except (KeyError, ValueError, TypeError):
        return False


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value
