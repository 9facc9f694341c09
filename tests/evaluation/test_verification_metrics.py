"""siamkit.evaluation.verification against scikit-learn and the naive loops."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from siamkit.errors import DataError
from siamkit.evaluation.verification import (
    Confusion,
    TarAtFar,
    confusion_at_threshold,
    det_curve,
    equal_error_rate,
    min_negatives_for_far,
    roc,
    tar_at_far,
    verification_report,
)
from tests.reference import naive_metrics as naive


def _pairs(seed: int, n: int = 200, pos_rate: float = 0.3, shift: float = 1.0, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    same = rng.random(n) < pos_rate
    same[:2] = [True, False]  # both classes, always
    d = rng.normal(size=n) + shift * (~same)
    if decimals is not None:  # coarse values: many ties, including between the classes
        d = np.round(d, decimals)
    return d, same


CASES = [
    dict(seed=0),
    dict(seed=1, n=57, pos_rate=0.5, shift=0.3),
    dict(seed=2, decimals=1),  # heavy ties
    dict(seed=3, n=9, pos_rate=0.4),  # tiny
    dict(seed=4, n=300, pos_rate=0.05, shift=2.0, decimals=2),
]


# --------------------------------------------------------------------------- curves vs sklearn


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("drop", [True, False])
def test_roc_matches_sklearn(case, drop):
    d, same = _pairs(**case)
    fpr, tpr, thr = roc(d, same, drop_intermediate=drop)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(same, -d, drop_intermediate=drop)
    np.testing.assert_array_equal(fpr, sk_fpr)
    np.testing.assert_array_equal(tpr, sk_tpr)
    np.testing.assert_array_equal(thr, -sk_thr)
    assert thr[0] == -np.inf and np.all(np.diff(thr) > 0)  # distances, increasing
    # each point is "accept distance <= threshold"
    n_pos, n_neg = same.sum(), (~same).sum()
    for k in range(1, len(thr)):
        accept = d <= thr[k]
        assert fpr[k] == pytest.approx((accept & ~same).sum() / n_neg, abs=1e-15)
        assert tpr[k] == pytest.approx((accept & same).sum() / n_pos, abs=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_det_curve_matches_sklearn(case):
    d, same = _pairs(**case)
    fpr, fnr, thr = det_curve(d, same)
    sk_fpr, sk_fnr, sk_thr = skm.det_curve(same, -d)
    np.testing.assert_array_equal(fpr, sk_fpr)
    np.testing.assert_array_equal(fnr, sk_fnr)
    np.testing.assert_array_equal(thr, -sk_thr)
    for f, n, t in zip(fpr, fnr, thr):
        accept = d <= t
        assert f == pytest.approx((accept & ~same).mean() / (~same).mean(), abs=1e-12)
        assert n == pytest.approx((~accept & same).mean() / same.mean(), abs=1e-12)


# --------------------------------------------------------------------------- EER


@pytest.mark.parametrize("case", CASES)
def test_eer_matches_naive(case):
    d, same = _pairs(**case)
    eer, thr = equal_error_rate(d, same)
    ref_eer, ref_thr = naive.eer(d.tolist(), same.tolist())
    assert eer == pytest.approx(ref_eer, abs=1e-12)
    assert thr == pytest.approx(ref_thr, abs=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_eer_lies_between_the_rates_of_the_crossing_roc_points(case):
    d, same = _pairs(**case)
    eer, _ = equal_error_rate(d, same)
    fpr, tpr, _ = skm.roc_curve(same, -d, drop_intermediate=False)
    fnr = 1 - tpr
    i = int(np.argmax(fpr >= fnr - 1e-12))
    lo = max(fpr[i - 1], fnr[i])
    hi = min(fpr[i], fnr[i - 1])
    assert lo - 1e-12 <= eer <= hi + 1e-12


def test_eer_hand_computed_interpolation():
    # thresholds 1..5; FAR-FRR: -2/3, -1/3, +1/6 -> crossing 2/3 of the way from t=2 to t=3
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    same = np.array([True, True, False, True, False])
    eer, thr = equal_error_rate(d, same)
    assert eer == pytest.approx(1 / 3, abs=1e-12)
    assert thr == pytest.approx(2 + 2 / 3, abs=1e-12)


def test_eer_exact_crossing_takes_middle_of_gap():
    d = np.array([1.0, 2.0, 3.0, 4.0])
    same = np.array([True, False, True, False])
    # at t=2: FAR = 1/2 = FRR exactly; every t in [2, 3) gives it
    assert equal_error_rate(d, same) == (0.5, 2.5)


def test_eer_separable_threshold_between_classes():
    d = np.array([0.2, 0.1, 0.4, 0.9, 1.3, 0.8])
    same = np.array([True, True, True, False, False, False])
    eer, thr = equal_error_rate(d, same)
    assert eer == 0.0
    assert thr == pytest.approx((0.4 + 0.8) / 2)


def test_eer_all_distances_tied():
    d = np.full(6, 0.7)
    same = np.array([True, False, True, False, False, True])
    eer, thr = equal_error_rate(d, same)
    assert eer == pytest.approx(0.5)
    assert thr == 0.7


def test_eer_exact_equality_is_not_lost_to_rounding():
    # FAR = 1/3 and FRR = 1 - 2/3 are equal, but 1 - 2/3 != 1/3 in floating point
    d = np.arange(6, dtype=float)
    same = np.array([True, True, False, True, False, False])
    eer, thr = equal_error_rate(d, same)
    assert eer == pytest.approx(1 / 3)
    assert thr == 2.5  # exact crossing at t=2 -> middle of [2, 3), not an interpolation


def test_eer_accepts_torch_and_lists():
    d, same = _pairs(0)
    ref = equal_error_rate(d, same)
    assert equal_error_rate(torch.tensor(d, dtype=torch.float64), torch.tensor(same)) == ref
    assert equal_error_rate(d.tolist(), same.astype(int).tolist()) == ref


# --------------------------------------------------------------------------- TAR@FAR


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("far", [0.5, 0.1, 0.05, 0.01])
def test_tar_at_far_matches_naive(case, far):
    d, same = _pairs(**case)
    res = tar_at_far(d, same, far)
    ref_tar, ref_thr, ref_ok = naive.tar_at_far(d.tolist(), same.tolist(), far)
    assert isinstance(res, TarAtFar) and res.far == far
    assert res.resolvable == ref_ok
    if ref_ok:
        assert res.reason is None
        assert res.tar == pytest.approx(ref_tar, abs=1e-15)
        assert res.threshold == ref_thr
        # and against sklearn's ROC: best TPR among points with FPR <= far
        fpr, tpr, _ = skm.roc_curve(same, -d, drop_intermediate=False)
        assert res.tar == tpr[fpr <= far].max()
    else:
        assert math.isnan(res.tar) and math.isnan(res.threshold)
        assert str(int((~same).sum())) in res.reason


def test_tar_at_far_threshold_is_the_largest():
    d, same = _pairs(5, n=400, decimals=1)
    res = tar_at_far(d, same, 0.1)
    n_neg = (~same).sum()
    assert ((d <= res.threshold) & ~same).sum() / n_neg <= 0.1
    larger = np.unique(d[d > res.threshold])
    assert larger.size and ((d <= larger[0]) & ~same).sum() / n_neg > 0.1


def test_tar_at_far_not_resolvable_below_ceil_one_over_far():
    rng = np.random.default_rng(0)
    for n_neg, ok in [(99, False), (100, True)]:
        same = np.array([True] * 10 + [False] * n_neg)
        d = rng.random(same.size)
        res = tar_at_far(d, same, 0.01)
        assert res.resolvable is ok
        if not ok:
            assert res.reason == "FAR 0.01 needs at least 100 impostor pairs to be resolved, got 99"
    assert min_negatives_for_far(1e-3) == 1000
    assert min_negatives_for_far(0.3) == 4
    assert min_negatives_for_far(1.0) == 1


def test_tar_at_far_exact_boundary_is_included():
    # 10 impostors, far = 0.1: exactly one false accept is allowed
    same = np.array([True] * 5 + [False] * 10)
    d = np.array([0.1, 0.2, 0.3, 0.6, 0.7] + [0.25] + [1.0 + i for i in range(9)])
    res = tar_at_far(d, same, 0.1)
    assert res.threshold == 0.7 and res.tar == 1.0


def test_tar_at_far_tied_impostors_at_the_smallest_distance():
    same = np.array([True, False, False] + [False] * 8)
    d = np.array([0.5, 0.1, 0.1] + [2.0] * 8)  # two impostors share the smallest distance
    res = tar_at_far(d, same, 0.1)
    assert res.resolvable and res.tar == 0.0 and res.threshold == -np.inf


def test_tar_at_far_bad_far():
    d, same = _pairs(0)
    for far in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="far must be in"):
            tar_at_far(d, same, far)


# --------------------------------------------------------------------------- confusion


@pytest.mark.parametrize("case", CASES)
def test_confusion_matches_sklearn(case):
    d, same = _pairs(**case)
    for t in [np.median(d), d[5], d.min() - 1, d.max(), np.quantile(d, 0.2)]:
        c = confusion_at_threshold(d, same, t)
        pred = d <= t
        tn, fp, fn, tp = skm.confusion_matrix(same, pred, labels=[False, True]).ravel()
        assert (c.tp, c.fp, c.tn, c.fn) == (tp, fp, tn, fn)
        assert c.accuracy == pytest.approx(skm.accuracy_score(same, pred))
        assert c.precision == pytest.approx(skm.precision_score(same, pred, zero_division=0))
        assert c.recall == pytest.approx(skm.recall_score(same, pred, zero_division=0))
        assert c.f1 == pytest.approx(skm.f1_score(same, pred, zero_division=0))
        assert naive.counts_at(d.tolist(), same.tolist(), float(t)) == (c.tp, c.fp, c.tn, c.fn)


def test_confusion_accepts_distance_equal_to_threshold():
    c = confusion_at_threshold([0.5, 0.5, 0.9], [True, False, True], 0.5)
    assert c == Confusion(0.5, tp=1, fp=1, tn=0, fn=1, accuracy=1 / 3, precision=0.5, recall=0.5, f1=0.5)


def test_confusion_nothing_accepted_and_one_class():
    c = confusion_at_threshold([1.0, 2.0], [True, True], 0.0)
    assert (c.tp, c.fn, c.precision, c.recall, c.f1, c.accuracy) == (0, 2, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="threshold is NaN"):
        confusion_at_threshold([1.0], [True], float("nan"))


# --------------------------------------------------------------------------- report


def test_report_is_strict_json_and_consistent():
    d, same = _pairs(0)  # 200 pairs, ~140 impostors: 1e-3 is not resolvable
    rep = verification_report(d, same)
    text = json.dumps(rep, allow_nan=False)  # raises on NaN / inf
    rep = json.loads(text)
    assert rep["num_positive"] == int(same.sum()) and rep["num_negative"] == int((~same).sum())
    assert rep["roc_auc"] == pytest.approx(skm.roc_auc_score(same, -d))
    assert (rep["eer"], rep["eer_threshold"]) == pytest.approx(equal_error_rate(d, same))
    fars = [t["far"] for t in rep["tar_at_far"]]
    assert fars == [0.1, 0.01, 0.001]
    t01 = tar_at_far(d, same, 0.1)
    assert rep["tar_at_far"][0] == {"far": 0.1, "tar": t01.tar, "threshold": t01.threshold, "resolvable": True, "reason": None}
    t3 = rep["tar_at_far"][2]
    assert t3["tar"] is None and t3["resolvable"] is False and "1000 impostor pairs" in t3["reason"]
    conf = confusion_at_threshold(d, same, rep["eer_threshold"])
    assert rep["confusion_at_eer_threshold"]["tp"] == conf.tp
    sk_fpr, sk_tpr, _ = skm.roc_curve(same, -d)
    assert rep["roc"]["fpr"] == sk_fpr.tolist() and rep["roc"]["tpr"] == sk_tpr.tolist()
    assert rep["roc"]["thresholds"][0] is None  # the -inf "accept nothing" point
    assert len(rep["det"]["fpr"]) == len(rep["det"]["fnr"]) == len(rep["det"]["thresholds"])
    assert "roc" not in verification_report(d, same, include_curves=False)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "fn", [roc, det_curve, equal_error_rate, lambda d, s: tar_at_far(d, s, 0.1), verification_report]
)
def test_input_validation(fn):
    good_d = np.array([0.1, 0.5, 0.9])
    good_s = np.array([True, False, True])
    with pytest.raises(DataError, match=r"contain NaN \(1 of 3"):
        fn(np.array([0.1, np.nan, 0.9]), good_s)
    with pytest.raises(DataError, match="infinity"):
        fn(np.array([0.1, np.inf, 0.9]), good_s)
    with pytest.raises(DataError, match=r"equal shapes, got \(3,\) and \(2,\)"):
        fn(good_d, good_s[:2])
    with pytest.raises(DataError, match="1-D"):
        fn(good_d[None], good_s[None])
    with pytest.raises(DataError, match="both genuine .* got 0 genuine and 3 impostor"):
        fn(good_d, np.zeros(3, bool))
    with pytest.raises(DataError, match="got 3 genuine and 0 impostor"):
        fn(good_d, np.ones(3, bool))
    with pytest.raises(DataError, match="boolean"):
        fn(good_d, np.array([0, 2, 1]))
    with pytest.raises(DataError, match="empty"):
        fn(np.zeros(0), np.zeros(0, bool))
    assert isinstance(DataError("x"), ValueError)  # callers can catch ValueError
