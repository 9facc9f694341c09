"""The gallery's own calibration (``Gallery`` + ``gallery.selfcal``): trial distances
against an obvious loop, the target FAR reached on held-out impostors, refusals, which
threshold verify / identify use, and the shift check on enrolled identities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from siamkit import SiameseNetwork
from siamkit.calibration import Calibrator
from siamkit.errors import CalibrationError
from siamkit.gallery import UNKNOWN, Gallery
from siamkit.gallery.selfcal import SELF_CALIBRATION_KEY, calibrate_gallery, decision_calibrators, gallery_shift, trial_distances

DIM = 8


class Vec(nn.Module):
    """The identity map on vectors: an enrolled vector is its own embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding_dim = DIM
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _net() -> SiameseNetwork:
    return SiameseNetwork(Vec(), input_spec={"shape": [DIM]}).eval()


def _people(rng, n_id, per, noise=0.45):
    centres = rng.normal(size=(n_id, DIM))
    return [(c + noise * rng.normal(size=(per, DIM))).astype(np.float32) for c in centres]


def _gallery(tmp_path, people, cal=None, name="g.db"):
    g = Gallery.open(tmp_path / name, _net(), calibrator=cal, index="exact")
    for i, x in enumerate(people):
        g.enroll(f"p{i}", x)
    return g


def _slow_trials(people):
    """Sample s of identity i against identity j: min over j's samples (not s itself)."""
    rows = []
    for i, xi in enumerate(people):
        for a in range(len(xi)):
            row = []
            for j, xj in enumerate(people):
                ds = [np.linalg.norm(xi[a] - xj[b]) for b in range(len(xj)) if not (i == j and a == b)]
                row.append(min(ds) if ds else np.inf)
            rows.append(row)
    return np.array(rows)


def test_trial_distances_match_slow_loop(tmp_path):
    rng = np.random.default_rng(0)
    people = _people(rng, 5, 3) + _people(rng, 1, 1)  # one identity with a single sample
    with _gallery(tmp_path, people) as g:
        t, own = trial_distances(g)
        np.testing.assert_allclose(t, _slow_trials(people), rtol=1e-5)
        assert own.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5]
        tm, _ = trial_distances(g, "mean")
        means = np.stack([x.mean(0) for x in people])
        np.testing.assert_allclose(tm, np.linalg.norm(np.concatenate(people)[:, None] - means[None], axis=2), rtol=1e-5)


@pytest.mark.parametrize("target", [1e-2, 1e-3])
def test_gallery_threshold_hits_target_far_on_held_out_impostors(tmp_path, target):
    rng = np.random.default_rng(1)
    people = _people(rng, 80, 5)  # 400 samples x 79 other identities = 31,600 impostor trials
    with _gallery(tmp_path, people) as g:
        rec = calibrate_gallery(g, target)
        assert rec["n_impostor_trials"] == 400 * 79 and rec["far"] <= target
        assert rec["far_ci"][0] <= rec["far"] <= rec["far_ci"][1]
        assert rec["threshold_ci"][0] <= rec["threshold"] <= rec["threshold_ci"][1]
        # held out: new images of 200 never-enrolled people claiming each enrolled identity
        new = np.concatenate(_people(rng, 200, 2))
        enrolled = np.stack(people)  # (80, 5, D)
        best = np.linalg.norm(new[:, None, None] - enrolled[None], axis=3).min(axis=2)  # (400, 80)
        realised = float((best <= rec["threshold"]).mean())
        assert target / 2 <= realised <= 2 * target, realised
        # the gallery's verify uses it
        r = g.verify("p0", new[0])
        assert r.threshold == rec["threshold"] and r.same == (r.distance <= rec["threshold"])
        assert 0.0 <= r.confidence <= 1.0
        ident = rec["identification"]
        if target == 1e-2:  # 400 leave-one-identity-out searches resolve 1e-2 (needs 300), not 1e-3
            assert ident is not None and ident["n_unknown_probes"] == 400 and ident["far"] <= target
            assert g.identify(new[0]).threshold == ident["threshold"]
        else:
            assert ident is None and "need 3,000 samples" in rec["note"]
            assert g.identify(new[0]).threshold == rec["threshold"]


def test_refuses_with_too_few_impostor_trials(tmp_path):
    rng = np.random.default_rng(2)
    with _gallery(tmp_path, _people(rng, 6, 2)) as g:  # 12 samples x 5 = 60 trials
        with pytest.raises(CalibrationError, match=r"needs at least 3,000 impostor trials .* holds 60 \(6 identities, 12 samples\)"):
            calibrate_gallery(g, 1e-3)
        with pytest.raises(CalibrationError, match="target-far must be in"):
            calibrate_gallery(g, 0.0)
        assert SELF_CALIBRATION_KEY not in g.meta


def test_needs_genuine_trials_or_a_calibrated_model(tmp_path):
    rng = np.random.default_rng(3)
    singles = [x[:1] for x in _people(rng, 60, 1)]  # one sample each: no genuine trial
    with _gallery(tmp_path, singles) as g:
        with pytest.raises(CalibrationError, match="no identity with 2\\+ samples"):
            calibrate_gallery(g, 0.05)


def _model_cal(rng, scale=1.0):
    """A model calibration on pairs of vectors (impostor distances times ``scale``)."""
    people = _people(rng, 40, 4)
    x = np.concatenate(people)
    y = np.repeat(np.arange(40), 4)
    i, j = np.triu_indices(len(y), 1)
    d = np.linalg.norm(x[i] - x[j], axis=1)
    same = y[i] == y[j]
    d = np.where(same, d, d * scale)
    return Calibrator(threshold_method="far", target_far=1e-2).fit(d, same, split_name="model-val")


def test_identify_uses_model_identification_threshold(tmp_path):
    from siamkit.calibration import OpenSetThreshold

    rng = np.random.default_rng(4)
    cal = _model_cal(rng)
    ot = OpenSetThreshold(threshold=0.123, target_far=0.01, far=0.01, dir=0.9, n_unknown_probes=100, n_known_probes=100,
                          n_enrolled=10, enrol_per_identity=None, n_rotations=4, scoring="best", fitted_on="v")
    cal.set_identification(ot)
    people = _people(rng, 5, 3)
    with _gallery(tmp_path, people, cal=cal) as g:
        v_cal, i_cal = decision_calibrators(g)
        assert v_cal is cal and i_cal.threshold_ == 0.123 and cal.threshold_ != 0.123
        r = g.identify(people[0][0] + 0.01)
        assert r.threshold == 0.123 and (r.decision == UNKNOWN) == (r.best.distance > 0.123)
        assert g.verify("p0", people[0][0]).threshold == cal.threshold_


def test_gallery_shift(tmp_path):
    rng = np.random.default_rng(5)
    same_cal = _model_cal(rng)
    with _gallery(tmp_path, _people(rng, 30, 3), cal=same_cal) as g:
        r = gallery_shift(g)
        assert r is not None and not r.shifted and "consistent" in r.message
    shrunk = _model_cal(rng, scale=1.6)  # calibrated where impostors were much further apart
    with _gallery(tmp_path, _people(rng, 30, 3), cal=shrunk, name="g2.db") as g:
        r = gallery_shift(g)
        assert r.shifted and r.far_now > 2 * r.far_expected and "gallery calibrate" in r.message
    with _gallery(tmp_path, _people(rng, 3, 2), name="g3.db") as g:
        assert gallery_shift(g) is None  # no model calibration
