"""Calibration that knows its domain: a summary of the scores it was fitted on, and the
check that the data at hand still looks like them.

A threshold fitted on one camera, scanner or population silently stops meaning anything
on another: the impostor distances move, and with them the false accept rate at the
stored threshold. :class:`ScoreSummary` keeps a compact picture of the fit data (quantiles
of the impostor and genuine distances, their counts, the FAR and FRR at the threshold, the
data's name) in ``calibration.json``. :func:`check_shift` compares impostor distances of
the data at hand with it:

- a two-sample Kolmogorov-Smirnov test (the calibration side is the CDF rebuilt from its
  quantiles; asymptotic p-value with the effective sample size of both counts), and
- the false accept rate at the threshold on the data at hand against the one calibration
  measured (Clopper-Pearson interval on the new one; Fisher's exact test of the two counts
  is reported too).

It reports a shift when the KS test rejects at ``alpha`` AND the largest CDF gap is at
least ``min_ks`` (a practically visible change), or when the ``1 - alpha`` Clopper-Pearson
interval of the FAR on the data at hand lies entirely outside
``[far_expected / min_ratio, far_expected * min_ratio]`` (the FAR moved by more than
``min_ratio`` either way, with ``1 - alpha`` confidence). Both conditions need
``alpha``-level evidence, so on data from the calibration's own distribution the false
warning rate is at most about ``2 * alpha`` (measured in the tests and
``bench/bench_calibration_shift.py``). Impostor pairs of a few identities are not
independent samples: when the identities are known (``n_classes``, here and in the
summary) both tests count at most one observation per pair of identities
(:func:`effective_pairs`), so a calibration on 8 people does not claim the precision of
its 2,800 image pairs. The calibration side's own sampling error is not modelled beyond
the ``min_ratio`` margin.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from ..evaluation.curve import as_distances

__all__ = ["QUANTILE_LEVELS", "ScoreSummary", "ShiftReport", "clopper_pearson", "check_shift", "effective_pairs", "summarize_scores"]

#: the quantile levels a summary keeps: fine in the low tail (where FAR thresholds sit)
QUANTILE_LEVELS = tuple(
    float(x) for x in np.concatenate([[0.0, 1e-4, 5e-4, 1e-3, 2e-3, 5e-3], np.linspace(0.01, 0.99, 99), [0.995, 0.999, 1.0]])
)


def clopper_pearson(k: float, n: float, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a binomial proportion ``k / n``.

    Args:
        k: successes (a non-integer count of an effective sample size is accepted).
        n: trials (> 0).
        alpha: 1 - confidence.

    Returns:
        ``(low, high)``.
    """
    lo = 0.0 if k <= 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class ScoreSummary:
    """The score distributions a calibration was fitted on.

    Attributes:
        data: the fit data's name.
        levels: quantile levels (:data:`QUANTILE_LEVELS`).
        impostor_quantiles: impostor distances at ``levels``.
        genuine_quantiles: genuine distances at ``levels`` (empty without genuine pairs).
        n_impostor, n_genuine: pairs of each kind.
        threshold: the threshold the calibration chose.
        n_false_accepts: impostor pairs with distance <= threshold.
        n_false_rejects: genuine pairs with distance > threshold.
        n_classes: identities the pairs were drawn from (None: unknown).
    """

    data: str
    levels: tuple[float, ...]
    impostor_quantiles: tuple[float, ...]
    genuine_quantiles: tuple[float, ...]
    n_impostor: int
    n_genuine: int
    threshold: float
    n_false_accepts: int
    n_false_rejects: int
    n_classes: int | None = None

    @property
    def far(self) -> float:
        """The false accept rate at :attr:`threshold` on the fit data."""
        return self.n_false_accepts / self.n_impostor

    def impostor_cdf(self, x: Any) -> np.ndarray:
        """The fit data's impostor CDF at ``x``, rebuilt from the quantiles (linear between them).

        Shapes: x (...) -> (...).
        """
        q = np.maximum.accumulate(np.asarray(self.impostor_quantiles, dtype=np.float64))
        lv = np.asarray(self.levels, dtype=np.float64)
        # the CDF just right of a tie of quantiles is its highest level
        q_u, last = np.unique(q[::-1], return_index=True)
        lv_u = lv[::-1][last]
        return np.interp(np.asarray(x, dtype=np.float64), q_u, lv_u, left=0.0, right=1.0)

    def false_accepts_at(self, threshold: float) -> int:
        """Impostor pairs of the fit data at or under ``threshold`` (exact at the stored
        threshold, else from the rebuilt CDF).

        Args:
            threshold: a distance threshold.

        Returns:
            The (estimated) count.
        """
        if threshold == self.threshold:
            return self.n_false_accepts
        return int(round(float(self.impostor_cdf([threshold])[0]) * self.n_impostor))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ScoreSummary:
        """Rebuild from :meth:`to_dict` output (KeyError / TypeError / ValueError when damaged)."""
        if not isinstance(data, dict):
            raise TypeError("scores must be an object")
        levels = tuple(float(x) for x in data["levels"])
        imp = tuple(float(x) for x in data["impostor_quantiles"])
        gen = tuple(float(x) for x in data["genuine_quantiles"])
        if len(imp) != len(levels) or (gen and len(gen) != len(levels)):
            raise ValueError("scores: the quantile lists must be as long as levels")
        if not all(math.isfinite(v) for v in imp + gen):
            raise ValueError("scores: quantiles must be finite")
        s = cls(str(data["data"]), levels, imp, gen, int(data["n_impostor"]), int(data["n_genuine"]),
                float(data["threshold"]), int(data["n_false_accepts"]), int(data["n_false_rejects"]),
                None if data.get("n_classes") is None else int(data["n_classes"]))
        if s.n_impostor < 1 or not 0 <= s.n_false_accepts <= s.n_impostor:
            raise ValueError("scores: impossible counts")
        return s


def summarize_scores(distances: Any, same: Any, threshold: float, data: str, n_classes: int | None = None) -> ScoreSummary:
    """The :class:`ScoreSummary` of validated pair data.

    Args:
        distances: pair distances (lower = closer).
        same: True for genuine pairs (at least one impostor pair).
        threshold: the calibrated threshold.
        data: the data's name.
        n_classes: identities the pairs were drawn from (None: unknown).

    Shapes:
        distances (P,), same (P,).

    Returns:
        The summary.
    """
    d = as_distances(distances).reshape(-1)
    s = np.asarray(same, dtype=bool).reshape(-1)
    imp, gen = d[~s], d[s]
    lv = np.asarray(QUANTILE_LEVELS)
    return ScoreSummary(
        data=data, levels=QUANTILE_LEVELS,
        impostor_quantiles=tuple(float(x) for x in np.quantile(imp, lv)),
        genuine_quantiles=tuple(float(x) for x in np.quantile(gen, lv)) if gen.size else (),
        n_impostor=int(imp.size), n_genuine=int(gen.size), threshold=float(threshold),
        n_false_accepts=int((imp <= threshold).sum()), n_false_rejects=int((gen > threshold).sum()), n_classes=n_classes,
    )


@dataclass(frozen=True)
class ShiftReport:
    """How impostor distances of the data at hand compare with the calibration's.

    Attributes:
        shifted: whether to warn (see the module doc for the rule).
        ks_statistic, ks_p_value: the two-sample KS test.
        threshold: the threshold the FARs are at.
        far_expected: the FAR the calibration measured (or its CDF gives) at ``threshold``.
        far_now: the FAR on the data at hand; far_now_ci: its 95% Clopper-Pearson interval.
        far_p_value: Fisher's exact test of the two FARs.
        far_ratio: far_now / far_expected (inf when calibration saw no false accept).
        n_now, n_calibration: impostor pairs of each side.
        median_now, median_calibration: their median impostor distances.
        data, calibration_data: the names of both sides.
        message: one line for the user (what moved, by how much, and the fix).
    """

    shifted: bool
    ks_statistic: float
    ks_p_value: float
    threshold: float
    far_expected: float
    far_now: float
    far_now_ci: tuple[float, float]
    far_p_value: float
    far_ratio: float
    n_now: int
    n_calibration: int
    median_now: float
    median_calibration: float
    data: str
    calibration_data: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["far_ratio"] = None if math.isinf(self.far_ratio) else self.far_ratio
        return d


def effective_pairs(n_pairs: int, n_classes: int | None) -> float:
    """Impostor pairs drawn from few identities are not independent (every pair of two
    people shares their faces): count at most one per pair of identities.

    Args:
        n_pairs: impostor pairs.
        n_classes: identities they come from (None: unknown, every pair counts).

    Returns:
        ``min(n_pairs, n_classes * (n_classes - 1) / 2)``.
    """
    if n_classes is None or n_classes < 2:
        return float(n_pairs)
    return float(min(n_pairs, n_classes * (n_classes - 1) / 2))


def _ks(summary: ScoreSummary, x: np.ndarray, m_eff: float) -> tuple[float, float]:
    """Two-sample KS statistic and asymptotic p-value: sorted ``x`` against the summary."""
    m = x.size
    f_cal = summary.impostor_cdf(x)
    ecdf_hi = np.arange(1, m + 1) / m
    ecdf_lo = np.arange(0, m) / m
    q = np.asarray(summary.impostor_quantiles)
    d_q = np.abs(np.searchsorted(x, q, side="right") / m - summary.impostor_cdf(q))
    d = float(max(np.abs(ecdf_hi - f_cal).max(), np.abs(ecdf_lo - f_cal).max(), d_q.max()))
    n_cal = effective_pairs(summary.n_impostor, summary.n_classes)
    n_eff = n_cal * m_eff / (n_cal + m_eff)
    return d, float(stats.kstwobign.sf(math.sqrt(n_eff) * d))


def check_shift(
    summary: ScoreSummary,
    impostor_distances: Any,
    *,
    threshold: float | None = None,
    data: str = "the data at hand",
    alpha: float = 0.01,
    min_ks: float = 0.1,
    min_ratio: float = 2.0,
    fix: str = "recalibrate on data from this condition (`siamkit calibrate MODEL --data DIR`)",
    n_classes: int | None = None,
) -> ShiftReport:
    """Do impostor distances of the data at hand look like the calibration's?

    Args:
        summary: the calibration's :class:`ScoreSummary`.
        impostor_distances: distances of pairs known to be different (at least 1).
        threshold: the threshold in use (None: the summary's).
        data: the data's name (for the message).
        alpha: the level of both tests.
        min_ks: the smallest CDF gap that counts as a shift.
        min_ratio: the smallest factor of FAR change that counts as a shift.
        fix: what the message tells the user to do.
        n_classes: identities the impostor pairs come from (None: unknown); with it
            (and the summary's), both tests count identity pairs rather than image
            pairs when those are fewer (:func:`effective_pairs`).

    Shapes:
        impostor_distances (M,).

    Returns:
        The :class:`ShiftReport`.
    """
    x = np.sort(as_distances(impostor_distances, name="impostor distances").reshape(-1))
    if x.size == 0:
        raise ValueError("check_shift needs at least one impostor distance")
    thr = summary.threshold if threshold is None else float(threshold)
    m_eff = effective_pairs(x.size, n_classes)
    ks_d, ks_p = _ks(summary, x, m_eff)
    k_cal, n_cal = summary.false_accepts_at(thr), summary.n_impostor
    k_now, m = int(np.searchsorted(x, thr, side="right")), x.size
    far_exp, far_now = k_cal / n_cal, k_now / m
    far_p = float(stats.fisher_exact([[k_cal, n_cal - k_cal], [k_now, m - k_now]])[1])
    ratio = far_now / far_exp if far_exp > 0 else (math.inf if far_now > 0 else 1.0)
    lo, hi = clopper_pearson(far_now * m_eff, m_eff, alpha)
    moved = lo > far_exp * min_ratio or hi < far_exp / min_ratio
    shifted = bool((ks_p < alpha and ks_d >= min_ks) or moved)
    ci = clopper_pearson(far_now * m_eff, m_eff)
    med_cal = float(np.interp(0.5, summary.levels, summary.impostor_quantiles))
    times = "" if math.isinf(ratio) or ratio == 1.0 else f" ({ratio:.3g}x)"
    if shifted:
        msg = (f"WARNING: impostor distances on {data} differ from those the calibration was fitted on "
               f"({summary.data}): KS D={ks_d:.3f} (p={ks_p:.2g}), median {float(np.median(x)):.4g} vs {med_cal:.4g}; "
               f"at the threshold {thr:.4g} the false accept rate would be {far_now:.3%} "
               f"[95% CI {ci[0]:.3%}-{ci[1]:.3%}] instead of the {far_exp:.3%} calibration expected{times}. "
               f"Fix: {fix}")
    else:
        msg = (f"impostor distances on {data} are consistent with the calibration's ({summary.data}): "
               f"KS D={ks_d:.3f} (p={ks_p:.2g}); false accept rate at {thr:.4g}: {far_now:.3%} here, "
               f"{far_exp:.3%} at calibration")
    return ShiftReport(
        shifted=shifted, ks_statistic=ks_d, ks_p_value=ks_p, threshold=thr, far_expected=far_exp, far_now=far_now,
        far_now_ci=ci, far_p_value=far_p, far_ratio=ratio, n_now=m, n_calibration=n_cal,
        median_now=float(np.median(x)), median_calibration=med_cal, data=data, calibration_data=summary.data, message=msg,
    )
