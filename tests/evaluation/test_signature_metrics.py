"""Signature metrics without a trained model: per-writer EER, random forgeries, the
reference calibration file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from siamkit.calibration import Calibrator
from siamkit.data.signature_sets import random_forgery_pairs
from siamkit.errors import GalleryError, ModelFileError
from siamkit.evaluation.signatures import per_writer_eer, probe_distances
from siamkit.gallery.references import ReferenceCalibration

from ..reference.naive_metrics import eer as naive_eer


def test_per_writer_eer_matches_each_writers_own_eer() -> None:
    rng = np.random.default_rng(0)
    d = rng.random(60)
    same = rng.random(60) < 0.4
    groups = np.repeat([0, 1, 2], 20)
    groups[40:] = 2
    same[40:] = True  # writer 2 has no "different" pair: skipped, not an EER of 0
    out = per_writer_eer(d, same, groups, ["a", "b", "c"])
    assert out["skipped"] == ["c"] and out["n_writers"] == 2
    want = {n: naive_eer(d[groups == w].tolist(), same[groups == w].tolist())[0] for w, n in ((0, "a"), (1, "b"))}
    assert out["writers"] == pytest.approx(want, abs=1e-9)
    assert out["mean"] == pytest.approx(np.mean(list(want.values())))
    assert out["sd"] == pytest.approx(np.std(list(want.values()), ddof=1))
    assert out["worst"] == max(want.values()) and want[out["worst_writer"]] == out["worst"]
    one = per_writer_eer(d[:20], same[:20], groups[:20])
    assert one["sd"] == 0.0 and list(one["writers"]) == ["0"]


def test_random_forgery_pairs() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    genuine = torch.tensor([True, True, False, True, False, True, True, True])
    p = random_forgery_pairs(labels, genuine, per_writer=100, seed=0)
    # every (genuine of w, genuine of another writer) pair, once: 2*4 + 1*5 + 3*3
    want = {(i, j) for i in range(8) for j in range(8) if genuine[i] and genuine[j] and labels[i] != labels[j]}
    assert set(zip(p.a.tolist(), p.b.tolist())) == want and p.a.numel() == len(want)
    assert not p.same.any()
    few = random_forgery_pairs(labels, genuine, per_writer=6, seed=1)
    assert torch.bincount(labels[few.a]).tolist() == [6, 5, 6]  # writer 1 has only 1 genuine x 5 others
    with pytest.raises(ValueError):
        random_forgery_pairs(labels, genuine, per_writer=0)


def test_probe_distances() -> None:
    f = np.array([1.0, 4.0, 2.5])
    assert probe_distances(f, torch.tensor([0, 1]), torch.tensor([1, 2])).tolist() == [3.0, 1.5]


def _cal(thr: float) -> Calibrator:
    d = np.array([thr - 1, thr - 0.5, thr + 0.5, thr + 1])
    return Calibrator().fit(d, np.array([True, True, False, False]), "held-out", model_fingerprint="abc")


def test_reference_calibration_file(tmp_path: Path) -> None:
    cal = ReferenceCalibration({"best": {1: _cal(1.0), 5: _cal(0.5)}, "mean": {3: _cal(2.0)}}, {"writers": ["h1"]}, "abc")
    cal.save(tmp_path)
    back = ReferenceCalibration.load(tmp_path, expected_fingerprint="abc")
    assert back is not None and back.fitted_on == {"writers": ["h1"]}
    c, k = back.for_k("best", 4)
    assert k == 5 and c.threshold_ == pytest.approx(0.5)
    assert back.for_k("best", 3)[1] == 1  # a tie goes to the smaller K
    assert back.for_k("mean", 9)[1] == 3
    with pytest.raises(GalleryError, match="no threshold"):
        back.for_k("median", 3)
    with pytest.raises(ModelFileError):
        ReferenceCalibration.load(tmp_path, expected_fingerprint="other")
    assert ReferenceCalibration.load(tmp_path / "nothing") is None
    f = tmp_path / "reference_calibration.json"
    data = json.loads(f.read_text())
    data["rules"]["best"]["1"] = {"threshold": 1}
    f.write_text(json.dumps(data))
    with pytest.raises(ModelFileError):
        ReferenceCalibration.load(tmp_path)
