"""siamkit.calibration: thresholds, Platt / isotonic confidence, JSON files, leakage guard."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from siamkit.calibration import (
    CALIBRATION_FILE,
    CalibrationError,
    Calibrator,
    NotFittedError,
    SplitLeakageError,
)
from siamkit.errors import DataError, ModelFileError, SiamkitError
from siamkit.evaluation.verification import equal_error_rate
from tests.reference import naive_metrics as naive


def _pairs(seed: int = 0, n: int = 400, pos_rate: float = 0.3, shift: float = 1.5, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    same = rng.random(n) < pos_rate
    same[:2] = [True, False]
    d = np.abs(rng.normal(size=n) + shift * (~same) + 1.0)
    if decimals is not None:
        d = np.round(d, decimals)
    return d, same


# --------------------------------------------------------------------------- estimator contract


def test_init_only_stores_and_fit_returns_self():
    cal = Calibrator(threshold_method="bogus", target_far=7, confidence_method="nope")  # no validation yet
    assert vars(cal) == {"threshold_method": "bogus", "target_far": 7, "confidence_method": "nope"}
    with pytest.raises(TypeError):
        Calibrator("eer")  # keyword-only
    d, same = _pairs()
    cal = Calibrator()
    assert cal.fit(d, same) is cal
    assert cal.fitted_on_ == "validation" and (cal.n_pos_, cal.n_neg_) == (int(same.sum()), int((~same).sum()))
    assert cal.method_ == "eer" and cal.model_fingerprint_ is None


def test_bad_params_are_named_at_fit():
    d, same = _pairs()
    with pytest.raises(ValueError, match=r"threshold_method must be one of \['eer', 'accuracy', 'far'\], got 'bogus'"):
        Calibrator(threshold_method="bogus").fit(d, same)
    with pytest.raises(ValueError, match="confidence_method must be one of .* got 'nope'"):
        Calibrator(confidence_method="nope").fit(d, same)
    with pytest.raises(ValueError, match=r"target_far must be in \(0, 1\), got 0.0"):
        Calibrator(target_far=0.0).fit(d, same)
    with pytest.raises(ValueError, match="split_name"):
        Calibrator().fit(d, same, split_name="  ")


def test_use_before_fit_raises():
    cal = Calibrator()
    for call in (lambda: cal.decide([0.1]), lambda: cal.confidence([0.1]), cal.to_dict, lambda: cal.check_not_fitted_on("test")):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()
    assert issubclass(NotFittedError, SiamkitError)


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("decimals", [None, 1])
def test_eer_threshold(decimals):
    d, same = _pairs(1, decimals=decimals)
    cal = Calibrator(threshold_method="eer").fit(d, same)
    assert cal.threshold_ == equal_error_rate(d, same)[1]
    assert cal.threshold_ == pytest.approx(naive.eer(d.tolist(), same.tolist())[1], abs=1e-12)


@pytest.mark.parametrize("seed,decimals", [(0, None), (2, 1), (3, 2)])
def test_accuracy_threshold_matches_naive(seed, decimals):
    d, same = _pairs(seed, n=150, shift=0.8, decimals=decimals)
    cal = Calibrator(threshold_method="accuracy").fit(d, same)
    best_acc, ref_thr = naive.best_accuracy_threshold(d.tolist(), same.tolist())
    assert cal.threshold_ == pytest.approx(ref_thr, abs=1e-12)
    assert np.mean(cal.decide(d) == same) == pytest.approx(best_acc)
    # no threshold does better: brute force over every distance
    for t in np.unique(d):
        assert np.mean((d <= t) == same) <= best_acc + 1e-12


def test_accuracy_threshold_accept_nothing():
    d = np.array([0.1, 0.2, 0.3, 0.4])
    same = np.array([False, False, True, False])  # accepting nothing is right 3 of 4 times
    cal = Calibrator(threshold_method="accuracy").fit(d, same)
    assert cal.threshold_ < 0.1 and not cal.decide(d).any()


@pytest.mark.parametrize("far", [0.1, 0.02])
def test_far_threshold_is_largest_with_far_at_most_target(far):
    d, same = _pairs(4, n=600, decimals=2)
    cal = Calibrator(threshold_method="far", target_far=far).fit(d, same)
    tar, thr, ok = naive.tar_at_far(d.tolist(), same.tolist(), far)
    assert ok and cal.threshold_ == thr
    neg = ~same
    assert (cal.decide(d) & neg).sum() / neg.sum() <= far
    nxt = np.unique(d[d > cal.threshold_])[0]
    assert ((d <= nxt) & neg).sum() / neg.sum() > far


def test_far_threshold_refused_when_not_resolvable():
    d, same = _pairs(0, n=300)  # ~210 impostors < 1000
    with pytest.raises(CalibrationError, match=r"target_far=0.001: FAR 0.001 needs at least 1000 impostor pairs .* got \d+"):
        Calibrator(threshold_method="far", target_far=1e-3).fit(d, same)


def test_far_threshold_when_tied_impostors_are_closest():
    same = np.array([True] + [False] * 10)
    d = np.array([0.5, 0.1, 0.1] + [2.0] * 8)
    cal = Calibrator(threshold_method="far", target_far=0.1).fit(d, same)
    assert math.isfinite(cal.threshold_) and cal.threshold_ < 0.1
    assert not cal.decide(d).any()
    json.dumps(cal.to_dict(), allow_nan=False)


def test_decide_accepts_distance_equal_to_threshold():
    d, same = _pairs()
    cal = Calibrator().fit(d, same)
    t = cal.threshold_
    assert cal.decide([t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf)]).tolist() == [True, False, True]


# --------------------------------------------------------------------------- separable data


@pytest.mark.parametrize("method", ["eer", "accuracy"])
@pytest.mark.parametrize("confidence", ["platt", "isotonic"])
def test_perfectly_separable(method, confidence):
    d = np.array([0.05, 0.1, 0.2, 0.3, 0.9, 1.0, 1.2, 1.5])
    same = d < 0.5
    cal = Calibrator(threshold_method=method, confidence_method=confidence).fit(d, same)
    assert cal.threshold_ == pytest.approx(0.6)  # halfway between 0.3 and 0.9
    assert (cal.decide(d) == same).all()
    p = cal.confidence(d)
    assert np.isfinite(p).all() and (p[same] > 0.5).all() and (p[~same] < 0.5).all()
    if confidence == "platt":
        # smoothed targets keep the slope finite (an unregularised fit diverges)
        assert -100 < cal.platt_a_ < 0 and math.isfinite(cal.platt_b_)
        assert (np.diff(cal.confidence(np.linspace(-1, 3, 50))) < 0).all()


# --------------------------------------------------------------------------- confidence


@pytest.mark.parametrize("seed,n", [(0, 400), (5, 37)])
def test_platt_matches_sklearn_logistic_regression(seed, n):
    d, same = _pairs(seed, n=n)
    cal = Calibrator(confidence_method="platt").fit(d, same)
    # Platt's smoothed targets as two weighted copies of every pair
    n_pos, n_neg = same.sum(), (~same).sum()
    t = np.where(same, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    x = np.concatenate([d, d])[:, None]
    y = np.concatenate([np.ones(n), np.zeros(n)])
    w = np.concatenate([t, 1 - t])
    lr = LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000).fit(x, y, sample_weight=w)
    assert cal.platt_a_ == pytest.approx(lr.coef_[0, 0], rel=1e-5)
    assert cal.platt_b_ == pytest.approx(lr.intercept_[0], rel=1e-5)
    grid = np.linspace(0, 5, 20)
    np.testing.assert_allclose(cal.confidence(grid), lr.predict_proba(grid[:, None])[:, 1], atol=1e-6)
    assert cal.platt_a_ < 0


def test_platt_never_increases_with_distance():
    d, same = _pairs(0)
    cal = Calibrator().fit(d, ~same)  # impostors closer: inverted data
    assert cal.platt_a_ == 0.0
    p = cal.confidence([0.0, 1.0, 10.0])
    assert p[0] == p[1] == p[2] and 0 < p[0] < 1


def test_platt_constant_distances():
    cal = Calibrator().fit(np.full(4, 0.3), np.array([True, False, True, True]))
    # the mean of Platt's targets: 3 genuine at (3+1)/(3+2), 1 impostor at 1/(1+2)
    assert cal.platt_a_ == 0.0 and cal.confidence([0.3])[0] == pytest.approx((3 * 4 / 5 + 1 / 3) / 4)


@pytest.mark.parametrize("decimals", [None, 1])
def test_isotonic_matches_sklearn_and_is_monotone(decimals):
    d, same = _pairs(6, decimals=decimals)
    cal = Calibrator(confidence_method="isotonic").fit(d, same)
    iso = IsotonicRegression(increasing=False, out_of_bounds="clip").fit(d, same.astype(float))
    grid = np.linspace(d.min() - 1, d.max() + 1, 501)
    np.testing.assert_allclose(cal.confidence(grid), iso.predict(grid), atol=1e-12)
    np.testing.assert_allclose(cal.confidence(d), iso.predict(d), atol=1e-12)
    p = cal.confidence(grid)
    assert (np.diff(p) <= 0).all() and p.min() >= 0 and p.max() <= 1
    assert p[0] > p[-1]  # not a constant
    assert (np.diff(cal.iso_x_) > 0).all() and (np.diff(cal.iso_y_) <= 0).all()


# --------------------------------------------------------------------------- bad data


def test_bad_data_errors():
    d, same = _pairs()
    bad = d.copy()
    bad[4] = np.nan
    with pytest.raises(DataError, match=r"distances contain NaN \(1 of 400 values\)"):
        Calibrator().fit(bad, same)
    with pytest.raises(DataError, match="got 0 genuine and 400 impostor"):
        Calibrator().fit(d, np.zeros_like(same))
    with pytest.raises(DataError, match="got 400 genuine and 0 impostor"):
        Calibrator(threshold_method="accuracy", confidence_method="isotonic").fit(d, np.ones_like(same))
    cal = Calibrator().fit(d, same)
    with pytest.raises(DataError, match="NaN"):
        cal.decide([0.1, float("nan")])
    with pytest.raises(DataError, match="NaN"):
        cal.confidence([float("nan")])


# --------------------------------------------------------------------------- leakage guard


def test_refuses_to_report_on_its_fit_split():
    d, same = _pairs()
    cal = Calibrator().fit(d, same, split_name="val")
    for name in ("val", "VAL", " val "):
        with pytest.raises(SplitLeakageError, match="fitted on split 'val'"):
            cal.check_not_fitted_on(name)
    cal.check_not_fitted_on("test")  # fine
    cal.check_not_fitted_on("validation")  # a different name
    # the guard survives the JSON round trip
    with pytest.raises(SplitLeakageError):
        Calibrator.from_dict(json.loads(json.dumps(cal.to_dict()))).check_not_fitted_on("val")


# --------------------------------------------------------------------------- JSON files


@pytest.mark.parametrize("method", ["eer", "accuracy", "far"])
@pytest.mark.parametrize("confidence", ["platt", "isotonic"])
def test_json_round_trip_identical_outputs(tmp_path, method, confidence):
    d, same = _pairs(7, n=500, decimals=3)
    cal = Calibrator(threshold_method=method, target_far=0.05, confidence_method=confidence)
    cal.fit(d, same, split_name="val", model_fingerprint="sha256:abc")
    path = cal.save(tmp_path)
    assert path == tmp_path / CALIBRATION_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == [CALIBRATION_FILE]  # no temp files left
    raw = json.loads(path.read_text())
    assert raw["format"] == "siamkit-calibration" and raw["format_version"] == 1
    assert raw["model_fingerprint"] == "sha256:abc" and raw["fitted_on"] == "val"
    loaded = Calibrator.load(tmp_path, expected_fingerprint="sha256:abc")
    assert isinstance(loaded, Calibrator) and repr(loaded) == repr(cal)
    probe = np.concatenate([d, np.linspace(-1, 10, 997), [cal.threshold_]])
    assert np.array_equal(loaded.decide(probe), cal.decide(probe))
    assert np.array_equal(loaded.confidence(probe), cal.confidence(probe))  # bit for bit
    assert loaded.threshold_ == cal.threshold_ and loaded.to_dict() == cal.to_dict()
    assert (loaded.n_pos_, loaded.n_neg_, loaded.fitted_on_) == (cal.n_pos_, cal.n_neg_, "val")


def test_load_without_calibration_returns_none(tmp_path):
    assert Calibrator.load(tmp_path) is None
    with pytest.raises(ModelFileError, match="does not exist"):
        Calibrator.load(tmp_path / "missing")
    with pytest.raises(ModelFileError, match="does not exist"):
        Calibrator().fit(*_pairs()).save(tmp_path / "missing")


def _saved(tmp_path, **kw):
    cal = Calibrator(**kw).fit(*_pairs(), split_name="val", model_fingerprint="m1")
    cal.save(tmp_path)
    return json.loads((tmp_path / CALIBRATION_FILE).read_text())


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(format_version=2), "format version 2 .* reads version 1"),
        (lambda d: d.update(format="siamkit-model"), "not a siamkit calibration"),
        (lambda d: d.pop("threshold"), "missing the field 'threshold'"),
        (lambda d: d.update(threshold="0.5"), "threshold must be a number"),
        (lambda d: d.update(threshold=float("nan")), "threshold must be finite"),
        (lambda d: d["params"].update(threshold_method="magic"), "threshold_method must be one of"),
        (lambda d: d["confidence"].update(kind="isotonic"), "confidence kind 'isotonic'"),
        (lambda d: d["confidence"].pop("a"), "missing the field 'a'"),
    ],
)
def test_damaged_platt_file(tmp_path, mutate, message):
    data = _saved(tmp_path)
    mutate(data)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=message):
        Calibrator.load(tmp_path)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.update(y=c["y"][:-1]),
        lambda c: c.update(y=[1.5] * len(c["y"])),
        lambda c: c.update(y=list(reversed(c["y"]))),
        lambda c: c.update(x=[]),
    ],
)
def test_damaged_isotonic_file(tmp_path, mutate):
    data = _saved(tmp_path, confidence_method="isotonic")
    mutate(data["confidence"])
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="isotonic"):
        Calibrator.load(tmp_path)


def test_not_json_and_fingerprint_mismatch(tmp_path):
    (tmp_path / CALIBRATION_FILE).write_text('{"format": "siamkit-calib')
    with pytest.raises(ModelFileError, match="is not valid JSON"):
        Calibrator.load(tmp_path)
    (tmp_path / CALIBRATION_FILE).write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="not a siamkit calibration"):
        Calibrator.load(tmp_path)
    _saved(tmp_path)
    assert Calibrator.load(tmp_path, expected_fingerprint="m1") is not None
    with pytest.raises(ModelFileError, match="fitted for model 'm1', not for this model \\('m2'\\)"):
        Calibrator.load(tmp_path, expected_fingerprint="m2")
