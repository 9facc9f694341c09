"""Decision threshold and confidence fitted on a validation split, saved with the model.

A :class:`Calibrator` turns a pair distance (lower = closer) into

- a *decision*: same when ``distance <= threshold_``;
- a *confidence*: the probability that the pair is the same, fitted either with Platt
  scaling (a logistic curve in the distance) or with isotonic regression (a
  non-increasing, piecewise-linear curve through the data).

It is fitted on a labelled split that the model did not train on, remembers that split's
name, and refuses to report metrics on it (:meth:`Calibrator.check_not_fitted_on`).
It is saved as ``calibration.json`` next to the model's ``config.json``.

Example:
    >>> import numpy as np
    >>> from siamkit.calibration import Calibrator
    >>> d = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    >>> same = np.array([True, True, True, False, False, False])
    >>> cal = Calibrator(threshold_method="eer").fit(d, same, split_name="val")
    >>> cal.threshold_
    0.5
    >>> cal.decide([0.4, 0.6]).tolist()
    [True, False]
    >>> bool(cal.confidence([0.1])[0] > 0.5 > cal.confidence([0.9])[0])
    True

The package: ``calibrator`` (:class:`Calibrator`, its file), ``platt`` (Platt scaling),
``domain`` (the summary of the fit scores and the shift check: :func:`check_shift`) and
``openset`` (the identification threshold: :func:`fit_open_set_threshold`).
"""

from __future__ import annotations

from ..errors import CalibrationError, NotFittedError, SplitLeakageError
from .calibrator import CALIBRATION_FILE, FORMAT, FORMAT_VERSION, READABLE_VERSIONS, Calibrator
from .domain import ScoreSummary, ShiftReport, check_shift, clopper_pearson, summarize_scores
from .openset import OpenSetThreshold, fit_open_set_threshold, open_set_trials

__all__ = [
    "CALIBRATION_FILE",
    "CalibrationError",
    "Calibrator",
    "FORMAT",
    "FORMAT_VERSION",
    "NotFittedError",
    "OpenSetThreshold",
    "READABLE_VERSIONS",
    "ScoreSummary",
    "ShiftReport",
    "SplitLeakageError",
    "check_shift",
    "clopper_pearson",
    "fit_open_set_threshold",
    "open_set_trials",
    "summarize_scores",
]
