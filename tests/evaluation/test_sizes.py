"""score_sizes (one pass, every size) and the adaptive SizeCascade."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamkit.adaptive import SizeCascade
from siamkit.errors import CalibrationError, EmbeddingSizeError, ModelFileError, NotFittedError
from siamkit.evaluation.few_shot import n_way_k_shot_accuracy
from siamkit.evaluation.metrics import verification_metrics
from siamkit.evaluation.sizes import score_sizes, sizes_table
from siamkit.inference import embed_all, pair_distances_of_embeddings
from siamkit.training import TrainConfig
from siamkit.training.components import build_network
from siamkit.tuples import sample_all_pairs


def _net():
    cfg = TrainConfig(encoder="mlp", embedding_dim=8, matryoshka_dims=(2, 4, 8), progress=False)
    return build_network(cfg, (6,)).eval()


def test_score_sizes_equals_scoring_each_view() -> None:
    torch.manual_seed(0)
    net = _net()
    x, y = torch.rand(40, 6), torch.arange(8).repeat_interleave(5)
    s = score_sizes(net, x, y, [2, 8], n_way=(5,), episodes=50, max_pairs=300)
    a, b, same = sample_all_pairs(y, 300, torch.Generator().manual_seed(0))
    for row in s.rows:
        view = net.at_dim(row["dim"])
        e = embed_all(view, x)  # the slow way: embed again at that size
        d = pair_distances_of_embeddings(view, e, a, b)
        torch.testing.assert_close(s.distances[row["dim"]], d)
        assert row["roc_auc"] == pytest.approx(verification_metrics(d, same).roc_auc)
        acc = n_way_k_shot_accuracy(e, y, n_way=5, episodes=50, seed=0, distance=net.distance)[0]
        assert row["5_way_1_shot"]["accuracy"] == pytest.approx(acc)
    assert "| 2 |" in sizes_table(s.rows)
    with pytest.raises(EmbeddingSizeError):
        score_sizes(net, x, y, [3])


def _synthetic(n: int, seed: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Pairs whose small-size distance is the full one plus more noise."""
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.3
    full = np.where(same, rng.normal(0.5, 0.15, n), rng.normal(1.2, 0.15, n))
    return {4: full + rng.normal(0, 0.25, n), 16: full + rng.normal(0, 0.08, n), 64: full}, same


def test_cascade_defers_the_unsure_and_keeps_full_accuracy() -> None:
    d, same = _synthetic(4000, 0)
    c = SizeCascade(dims=[4, 16, 64], max_disagreement=0.004).fit(d, same, model_fingerprint="sha256:x")
    rep = c.report(d, same)
    assert 1 - rep["agreement_with_full"] <= 0.004 + 1e-9  # the budget holds on the fit pairs
    assert rep["decided_at"][4] > 0.3 and rep["decided_at"][64] < 0.3, rep
    assert rep["mean_values_compared"] < 64
    test_d, test_same = _synthetic(4000, 1)
    t = c.report(test_d, test_same)
    assert t["accuracy"] >= t["accuracy_full"] - 0.01
    assert t["accuracy"] > t["accuracy_smallest"]
    # the decisions by hand: outside the first band at 4, else the next sizes
    dec, size = c.decide(test_d)
    t4, (lo, hi) = c.thresholds_[0], c.bands_[0]
    early = (test_d[4] < t4 - lo) | (test_d[4] > t4 + hi)
    assert np.array_equal(size == 4, early)
    assert np.array_equal(dec[early], test_d[4][early] <= t4)
    # nothing disagrees allowed: every disagreement is inside a band
    strict = SizeCascade(dims=[4, 64], max_disagreement=0.0).fit(d, same)
    assert strict.report(d, same)["agreement_with_full"] == 1.0


def test_cascade_file_round_trip_and_errors(tmp_path) -> None:
    d, same = _synthetic(500, 0)
    with pytest.raises(NotFittedError):
        SizeCascade(dims=[4, 64]).decide(d)
    with pytest.raises(CalibrationError, match="at least two"):
        SizeCascade(dims=[64])
    with pytest.raises(CalibrationError, match="no distances"):
        SizeCascade(dims=[4, 8]).fit(d, same)
    c = SizeCascade(dims=[4, 16, 64]).fit(d, same, model_fingerprint="sha256:x")
    c.save(tmp_path)
    back = SizeCascade.load(tmp_path, expected_fingerprint="sha256:x")
    assert back is not None and back.bands_ == c.bands_ and back.thresholds_ == c.thresholds_
    with pytest.raises(ModelFileError, match="not for this model"):
        SizeCascade.load(tmp_path, expected_fingerprint="sha256:y")
    assert SizeCascade.load(tmp_path / "none") is None
    with pytest.raises(CalibrationError, match="need the distances at size 16"):
        c.decide({4: d[4]})
