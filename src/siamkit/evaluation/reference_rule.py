"""A learned rule for K-reference verification: logistic regression on summary statistics
of the K distances (closest, mean, farthest), instead of a fixed ``best`` or ``mean``.

The rule is fitted on held-out writers' trials (genuine = 1, skilled forgery = 0) with
scikit-learn's ``LogisticRegression`` (a well-kept, regularised fit of 4 numbers; the
features are standardised first), and applied with plain numpy from its JSON form (no
pickle). Its output is a distance like the fixed rules' (lower = more likely genuine: the
negative log-odds of "genuine"), so a :class:`~siamkit.calibration.Calibrator` threshold
and confidence are fitted on it exactly as for ``best`` and ``mean``
(:func:`siamkit.gallery.references.fit_reference_calibration`).

The summary statistics do not depend on K, so a rule fitted with K = 5 references can be
applied to an identity with 3 (the calibration says which K it was fitted for).

Example:
    >>> import numpy as np
    >>> from siamkit.evaluation.reference_rule import LearnedReferenceRule
    >>> d = np.array([[0.1, 0.2, 0.3], [0.9, 1.0, 1.2], [0.2, 0.1, 0.4], [1.1, 0.8, 1.0]])
    >>> rule = LearnedReferenceRule().fit(d, np.array([True, False, True, False]))
    >>> bool(rule.distance(d)[0] < rule.distance(d)[1])
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError, ModelFileError

__all__ = ["FEATURES", "LearnedReferenceRule", "summary_features"]

#: the summary statistics of the K distances the rule weighs
FEATURES = ("min", "mean", "max")


def summary_features(distances: Any) -> np.ndarray:
    """The :data:`FEATURES` of each row of K distances.

    Args:
        distances: row i = questioned sample i against each of its K references.

    Shapes:
        distances (M, K) -> (M, 3).

    Returns:
        float64 features (closest, mean, farthest).

    Raises:
        DataError: not 2-D or no reference.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] == 0:
        raise DataError(f"need distances to at least one reference, got shape {d.shape}")
    return np.stack([d.min(1), d.mean(1), d.max(1)], axis=1)


class LearnedReferenceRule:
    """Logistic regression of "genuine" on the closest, mean and farthest of K distances.

    Args:
        C: inverse L2 regularisation strength (scikit-learn's).

    Attributes:
        coef_: float64 (3,), weights of the standardised features.
        intercept_: the bias.
        mean_, scale_: float64 (3,), the standardisation fitted.
        k_: the K of the trials it was fitted on.
        n_genuine_, n_forged_: the training decisions.
    """

    def __init__(self, *, C: float = 1.0) -> None:
        self.C = float(C)

    def fit(self, distances: Any, same: Any) -> LearnedReferenceRule:
        """Fit on trials: distances to the K references and whether the sample is genuine.

        Args:
            distances: (M, K) distances.
            same: (M,) bool, True = genuine.

        Shapes:
            distances (M, K), same (M,).

        Returns:
            self.

        Raises:
            DataError: shapes disagree, or only one kind of decision.
        """
        from sklearn.linear_model import LogisticRegression

        x = summary_features(distances)
        y = np.asarray(same, dtype=bool).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{x.shape[0]} rows of distances but {y.shape[0]} labels")
        if y.all() or not y.any():
            raise DataError("a learned reference rule needs both genuine and forged questioned samples")
        self.mean_ = x.mean(0)
        self.scale_ = np.where(x.std(0) > 1e-12, x.std(0), 1.0)
        lr = LogisticRegression(C=self.C, max_iter=1000).fit((x - self.mean_) / self.scale_, y)
        self.coef_, self.intercept_ = lr.coef_[0].astype(np.float64), float(lr.intercept_[0])
        self.k_ = int(np.asarray(distances).shape[1])
        self.n_genuine_, self.n_forged_ = int(y.sum()), int((~y).sum())
        return self

    def distance(self, distances: Any) -> np.ndarray:
        """The rule's distance: the negative log-odds of "genuine" (lower = more likely genuine).

        Args:
            distances: (M, K) distances to the references (any K).

        Shapes:
            distances (M, K) -> (M,).

        Returns:
            float64 distances.
        """
        if not hasattr(self, "coef_"):
            raise DataError("the learned reference rule is not fitted")
        z = (summary_features(distances) - self.mean_) / self.scale_
        return -(z @ self.coef_ + self.intercept_)

    def to_dict(self) -> dict[str, Any]:
        """The fitted rule as JSON-ready numbers."""
        return {"kind": "logistic", "features": list(FEATURES), "C": self.C, "coef": self.coef_.tolist(),
                "intercept": self.intercept_, "mean": self.mean_.tolist(), "scale": self.scale_.tolist(), "k": self.k_,
                "n_genuine": self.n_genuine_, "n_forged": self.n_forged_}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LearnedReferenceRule:
        """The rule from :meth:`to_dict`'s form.

        Args:
            d: the mapping.

        Returns:
            The fitted rule.

        Raises:
            ModelFileError: another kind, other features, or missing / malformed numbers.
        """
        try:
            if d.get("kind") != "logistic" or tuple(d.get("features", ())) != FEATURES:
                raise ValueError(f"kind {d.get('kind')!r} with features {d.get('features')!r}")
            rule = cls(C=float(d.get("C", 1.0)))
            rule.coef_, rule.mean_, rule.scale_ = (np.asarray(d[k], dtype=np.float64) for k in ("coef", "mean", "scale"))
            if any(a.shape != (len(FEATURES),) for a in (rule.coef_, rule.mean_, rule.scale_)):
                raise ValueError("coef, mean and scale must have one value per feature")
            rule.intercept_, rule.k_ = float(d["intercept"]), int(d["k"])
            rule.n_genuine_, rule.n_forged_ = int(d.get("n_genuine", 0)), int(d.get("n_forged", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelFileError(f"not a learned reference rule ({e})") from None
        return rule
