"""Open-set metrics (DIR at FAR, open-set ROC) and the identification threshold, against
slow obvious loops."""

from __future__ import annotations

import numpy as np
import pytest

from siamkit.calibration import CalibrationError, OpenSetThreshold, fit_open_set_threshold, open_set_trials
from siamkit.errors import DataError
from siamkit.evaluation.openset import best_of_gallery, dir_at_far, open_set_roc, open_set_threshold


def _slow_dir_at_far(kd, kc, ud, far):
    """Every candidate threshold, the largest with FAR <= far."""
    best = None
    for t in [-np.inf] + sorted(set(np.concatenate([kd, ud]).tolist())):
        f = sum(u <= t for u in ud) / len(ud)
        if f <= far:
            d = sum(1 for x, c in zip(kd, kc) if c and x <= t) / len(kd)
            best = (d, f, t)
    return best


def _data(seed, n_k=60, n_u=50, decimals=None):
    rng = np.random.default_rng(seed)
    kd = rng.gamma(2.0, 0.3, n_k)
    ud = rng.gamma(4.0, 0.3, n_u)
    if decimals is not None:
        kd, ud = np.round(kd, decimals), np.round(ud, decimals)
    kc = rng.random(n_k) < 0.8
    return kd, kc, ud


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("far", [0.02, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("decimals", [None, 1])
def test_dir_at_far_matches_slow_loop(seed, far, decimals):
    kd, kc, ud = _data(seed, decimals=decimals)
    r = dir_at_far(kd, kc, ud, far)
    d, f, t = _slow_dir_at_far(kd, kc, ud, far)
    assert r.resolvable and r.dir == pytest.approx(d) and r.far == pytest.approx(f) and r.threshold == t
    assert r.n_known == kd.size and r.n_unknown == ud.size


def test_open_set_roc_matches_slow_loop():
    kd, kc, ud = _data(3, decimals=1)
    far, dr, thr = open_set_roc(kd, kc, ud)
    assert thr[0] == -np.inf and far[0] == 0 and dr[0] == 0
    assert (np.diff(far) >= 0).all() and (np.diff(dr) >= 0).all() and (np.diff(thr) > 0).all()
    for f, d, t in zip(far, dr, thr):
        assert f == pytest.approx(np.mean(ud <= t)) and d == pytest.approx(np.mean(kc & (kd <= t)))
    assert far[-1] == 1.0 and dr[-1] == pytest.approx(kc.mean())


def test_dir_at_far_unresolvable_and_bad_input():
    kd, kc, ud = _data(0, n_u=20)
    r = dir_at_far(kd, kc, ud, 0.01)
    assert not r.resolvable and np.isnan(r.dir) and "at least 100 unknown probes" in r.reason
    with pytest.raises(DataError, match="equal lengths"):
        dir_at_far(kd, kc[:-1], ud, 0.1)
    with pytest.raises(DataError, match="known and unknown"):
        dir_at_far(kd, kc, [], 0.1)
    with pytest.raises(DataError, match="NaN"):
        dir_at_far(kd, kc, [np.nan] * 20, 0.1)


def test_best_of_gallery():
    d = np.array([[0.5, 0.2, 0.9], [0.1, 0.7, 0.1]])
    best, lab = best_of_gallery(d, np.array(["a", "b", "c"]))
    assert best.tolist() == [0.2, 0.1] and lab.tolist() == ["b", "a"]  # first on ties
    with pytest.raises(DataError, match="empty"):
        best_of_gallery(np.zeros((2, 0)), np.array([]))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("far", [0.01, 0.05, 0.2])
def test_open_set_threshold_obvious(seed, far):
    u = np.round(np.random.default_rng(seed).gamma(3.0, 0.3, 400), 2)  # with ties
    t, realised = open_set_threshold(u, far)
    assert realised == np.mean(u <= t) and realised <= far
    # the obvious loop: the largest FAR <= far over every distinct value
    best = max(np.mean(u <= v) for v in np.unique(u) if np.mean(u <= v) <= far) if (u <= u.min()).mean() <= far else 0.0
    assert realised == pytest.approx(best)
    nxt = np.unique(u)[np.unique(u) > t]
    assert nxt.size == 0 or np.mean(u <= nxt[0]) > far  # one step further breaks the target
    with pytest.raises(DataError, match="at least 1000 unknown probes"):
        open_set_threshold(u, 1e-3)


def _clusters(seed, n_id=30, per=6, dim=8, noise=0.2):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_id, dim))
    x = np.repeat(centres, per, axis=0) + noise * rng.normal(size=(n_id * per, dim))
    y = np.repeat(np.arange(n_id), per)
    return np.linalg.norm(x[:, None] - x[None], axis=2), y


def test_open_set_trials_against_loop():
    d, y = _clusters(0, n_id=8, per=4)
    tr = open_set_trials(d, y, gallery_fraction=0.75, enrol_per_identity=2, seed=1)
    assert tr.unknown_d.size == y.size  # every image is an unknown probe exactly once
    assert tr.known_d.size == 8 * 2 * 3  # 2 probes per identity, enrolled in 3 of the 4 rotations
    assert len(tr.n_enrolled) == 4 and sum(tr.n_enrolled) == 3 * 8
    # every unknown best distance is the min over some enrolled set of other identities' images
    for u in tr.unknown_d:
        assert np.isclose(d, u).any()
    assert tr.known_correct.mean() > 0.8


def test_fit_open_set_threshold_and_refusal():
    d, y = _clusters(1)
    ot = fit_open_set_threshold(d, y, target_far=0.02, split_name="val")
    assert isinstance(ot, OpenSetThreshold) and ot.far <= 0.02 and ot.n_unknown_probes == y.size
    assert 0.5 < ot.dir <= 1 and ot.fitted_on == "val" and ot.n_rotations == 4
    assert OpenSetThreshold.from_dict(ot.to_dict()) == ot
    # the open-set threshold is stricter than a pair threshold at the same FAR
    same = y[:, None] == y[None]
    iu = np.triu_indices(y.size, 1)
    pair_imp = np.sort(d[iu][~same[iu]])
    pair_thr = pair_imp[int(0.02 * pair_imp.size)]
    assert ot.threshold < pair_thr
    with pytest.raises(CalibrationError, match="at least 1000 never-enrolled probe images.*has 180"):
        fit_open_set_threshold(d, y, target_far=1e-3)
    with pytest.raises(DataError, match="at least 2 identities"):
        open_set_trials(d[:6, :6], np.zeros(6))
