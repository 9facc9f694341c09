"""Calibration that knows its domain: the score summary in calibration.json, the shift
check on impostor distances (fires on a shifted distribution, seldom on the same one),
and old files without the new fields."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamkit.calibration import CALIBRATION_FILE, Calibrator, ScoreSummary, check_shift, clopper_pearson
from siamkit.errors import ModelFileError


def _fit_data(rng, n_imp=4000, n_gen=800, imp_mean=1.0):
    d = np.concatenate([rng.normal(0.4, 0.1, n_gen), rng.normal(imp_mean, 0.15, n_imp)])
    same = np.concatenate([np.ones(n_gen, bool), np.zeros(n_imp, bool)])
    return np.abs(d), same


def _cal(seed=0, **kw):
    rng = np.random.default_rng(seed)
    d, same = _fit_data(rng, **kw)
    return Calibrator(threshold_method="far", target_far=1e-2).fit(d, same, split_name="att-val"), d, same


def test_summary_is_kept_and_round_trips(tmp_path):
    cal, d, same = _cal()
    s = cal.scores_
    assert s.data == "att-val" and (s.n_impostor, s.n_genuine) == (4000, 800)
    assert s.threshold == cal.threshold_ and s.n_false_accepts == int((d[~same] <= cal.threshold_).sum())
    assert s.far <= 1e-2 and s.impostor_quantiles[0] == d[~same].min() and s.impostor_quantiles[-1] == d[~same].max()
    assert np.quantile(d[~same], 0.5) == pytest.approx(s.impostor_quantiles[s.levels.index(0.5)])
    cal.save(tmp_path)
    back = Calibrator.load(tmp_path)
    assert back.scores_ == s and back.identification_ is None
    # the rebuilt CDF is close to the empirical one
    x = np.linspace(0.5, 1.5, 50)
    emp = (d[~same][:, None] <= x).mean(axis=0)
    assert np.abs(s.impostor_cdf(x) - emp).max() < 0.012


def test_old_file_without_new_fields_still_loads(tmp_path):
    cal, d, same = _cal()
    data = cal.to_dict()
    del data["scores"], data["identification"]  # as siamkit wrote it before
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(data))
    old = Calibrator.load(tmp_path)
    assert old.scores_ is None and old.identification_ is None and old.identification_threshold is None
    assert old.threshold_ == cal.threshold_ and old.decide([0.3]).tolist() == [True]
    data["scores"] = {"data": "x"}
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="missing the field 'levels'"):
        Calibrator.load(tmp_path)


def test_shift_fires_on_a_shifted_distribution():
    cal, _, _ = _cal()
    rng = np.random.default_rng(1)
    shifted = np.abs(rng.normal(0.75, 0.15, 2000))  # impostors moved towards genuine (e.g. relighting)
    r = check_shift(cal.scores_, shifted, data="relit test")
    assert r.shifted and r.ks_statistic > 0.5 and r.ks_p_value < 1e-6
    assert r.far_now > 10 * r.far_expected and r.far_now_ci[0] <= r.far_now <= r.far_now_ci[1]
    assert r.far_now == pytest.approx(np.mean(shifted <= cal.threshold_))
    assert "WARNING" in r.message and "relit test" in r.message and "siamkit calibrate" in r.message
    assert "instead of the" in r.message and "x)" in r.message
    # a FAR-only shift (same bulk, heavier low tail) is caught by the FAR test
    tail = np.concatenate([np.abs(rng.normal(1.0, 0.15, 1900)), rng.uniform(0.3, 0.55, 100)])
    r2 = check_shift(cal.scores_, tail)
    assert r2.shifted and r2.far_ratio > 2


def test_shift_false_alarm_rate_on_the_same_distribution():
    """Seeded: 200 draws of 1,000 impostor distances from the calibration's own
    distribution; the stated false-alarm rate is about 2 * alpha = 2% at most."""
    cal, _, _ = _cal()
    rng = np.random.default_rng(7)
    alarms = sum(check_shift(cal.scores_, np.abs(rng.normal(1.0, 0.15, 1000))).shifted for _ in range(200))
    assert alarms <= 6  # <= 3% (binomial slack over 2%)
    r = check_shift(cal.scores_, np.abs(rng.normal(1.0, 0.15, 1000)))
    assert "consistent" in r.message and not r.shifted


def test_clopper_pearson():
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0
    lo, hi = clopper_pearson(5, 100)
    assert lo == pytest.approx(0.01643, abs=1e-4) and hi == pytest.approx(0.11284, abs=1e-4)


def test_summary_from_dict_rejects_damage():
    cal, _, _ = _cal()
    d = cal.scores_.to_dict()
    with pytest.raises(ValueError, match="as long as levels"):
        ScoreSummary.from_dict({**d, "impostor_quantiles": [1.0]})
    with pytest.raises(ValueError, match="impossible counts"):
        ScoreSummary.from_dict({**d, "n_false_accepts": -1})
