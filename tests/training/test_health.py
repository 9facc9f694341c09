"""Training health: each probe statistic against a slow loop, the alarms on collapsing,
healthy and diverging runs, and exact resume with health on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from siamkit import fit, load_model
from siamkit.errors import SiamkitError, TrainingDivergedError
from siamkit.training import read_checkpoint_state
from siamkit.training.health import (
    PLOT_FILE,
    alarms_of,
    effective_rank,
    embedding_statistics,
    probe_indices,
    raw_input_auc,
    summarize,
)

from .test_training import params_equal, small, toy


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    e = torch.randn(10, 5, generator=g, dtype=torch.float64) + torch.randn(4, 5, generator=g, dtype=torch.float64)[y]
    d = torch.cdist(e, e)
    return e, y, d


def slow_pairs(d: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    pos, neg = [], []
    for i in range(len(y)):
        for j in range(i + 1, len(y)):
            (pos if y[i] == y[j] else neg).append(float(d[i, j]))
    return pos, neg


def test_distance_statistics_match_slow_loops() -> None:
    e, y, d = tiny_batch()
    s = embedding_statistics(e, y, d, loss="triplet", margin=0.5)
    pos, neg = slow_pairs(d, y)
    for side, values in (("pos", pos), ("neg", neg)):
        for q in (5, 50, 95):
            assert s[f"{side}_q{q:02d}"] == pytest.approx(np.percentile(values, q), rel=1e-9)
    med = np.median(pos)
    assert s["neg_closer_than_median_pos"] == pytest.approx(sum(n < med for n in neg) / len(neg))
    wins = sum((n > p) + 0.5 * (n == p) for p in pos for n in neg)
    assert s["probe_auc"] == pytest.approx(wins / (len(pos) * len(neg)))


@pytest.mark.parametrize("margin", [0.0, 0.5, 3.0])
def test_active_triplets_and_pairs_match_slow_loops(margin: float) -> None:
    e, y, d = tiny_batch()
    active = total = 0
    for a in range(10):
        for p in range(10):
            for n in range(10):
                if a != p and y[a] == y[p] and y[n] != y[a]:
                    total += 1
                    active += float(d[a, p] - d[a, n] + margin) > 0
    got = embedding_statistics(e, y, d, loss="triplet", margin=margin)["active_fraction"]
    assert got == pytest.approx(active / total)
    pairs = [(float(d[i, j]), bool(y[i] == y[j])) for i in range(10) for j in range(i + 1, 10)]
    inside = sum((dd > 0.2) if same else (dd < margin) for dd, same in pairs)
    got = embedding_statistics(e, y, d, loss="contrastive", margin=margin, pos_margin=0.2)["active_fraction"]
    assert got == pytest.approx(inside / len(pairs))
    assert embedding_statistics(e, y, d, loss="mnr", margin=margin)["active_fraction"] is None


def test_spread_norm_and_rank_match_slow_computations() -> None:
    e, y, d = tiny_batch()
    s = embedding_statistics(e, y, d, loss="triplet", margin=0.2)
    a = e.numpy()
    assert s["norm_mean"] == pytest.approx(np.mean([np.sqrt((row**2).sum()) for row in a]))
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    stds = [np.sqrt(np.mean((unit[:, k] - unit[:, k].mean()) ** 2)) for k in range(a.shape[1])]
    assert s["std_normalized"] == pytest.approx(np.mean(stds))
    assert s["std_ratio"] == pytest.approx(np.mean(stds) * math.sqrt(5))
    sv = np.linalg.svd(a, compute_uv=False)
    p = sv / sv.sum()
    assert s["effective_rank"] == pytest.approx(math.exp(-sum(pi * math.log(pi) for pi in p)))
    assert s["dim"] == 5
    # the two ends of the effective rank: one direction, and all directions equally
    assert effective_rank(torch.ones(6, 4) * torch.arange(1.0, 7.0)[:, None]) == pytest.approx(1.0)
    assert effective_rank(torch.eye(4)) == pytest.approx(4.0)


def test_probe_is_fixed_by_the_seed_and_has_two_per_class() -> None:
    y = torch.arange(200).repeat_interleave(5)
    y = torch.cat([y, torch.tensor([999])])  # a single-sample class is never probed
    idx = probe_indices(y, seed=1)
    assert torch.equal(idx, probe_indices(y, seed=1)) and not torch.equal(idx, probe_indices(y, seed=2))
    assert idx.numel() <= 256 and idx.unique().numel() == idx.numel()
    _, counts = torch.unique(y[idx], return_counts=True)
    assert (counts >= 2).all() and 999 not in y[idx].tolist()
    few = torch.arange(3).repeat_interleave(200)
    _, counts = torch.unique(few[probe_indices(few, 0)], return_counts=True)
    assert counts.tolist() == [85, 85, 85]


def test_raw_input_auc_is_the_pixel_distance_auc() -> None:
    x, y = toy(n_classes=4, per_class=5)
    flat = x.float().reshape(len(x), -1) / 255
    pos, neg = slow_pairs(torch.cdist(flat, flat), y)
    wins = sum((n > p) + 0.5 * (n == p) for p in pos for n in neg)
    assert raw_input_auc(x, y) == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-6)


def test_alarm_rules() -> None:
    cfg = small(margin=0.2)
    e, y, d = tiny_batch()
    h = embedding_statistics(e, y, d, loss="triplet", margin=0.2)
    rec = {"epoch": 3, "train_loss": 0.1, "val_roc_auc": 0.7}
    assert alarms_of(h, rec, cfg, raw_auc=0.6) == []
    assert [a["kind"] for a in alarms_of(h, rec, cfg, raw_auc=0.8)] == ["below_raw"]
    assert alarms_of(h, {**rec, "epoch": 2}, cfg, raw_auc=0.8) == []  # not before raw_after epochs
    collapsed = {**h, "std_normalized": 0.01 / math.sqrt(5), "probe_auc": 0.55}
    kinds = [a["kind"] for a in alarms_of(collapsed, rec, cfg, previous_std=0.01 / math.sqrt(5))]
    assert kinds == ["collapse"]
    # as concentrated, but the probe's genuine pairs still clearly closer and the triplet
    # loss (0.1) below the margin (0.2): a slow start (batch-hard's first 10 steps on
    # signatures), no alarm; below the AUC bound, or with the loss at the margin
    # (batch-hard's partial collapse), or another loss, it is one
    slow = 0.01 / math.sqrt(5)
    assert alarms_of({**collapsed, "probe_auc": 0.87}, rec, cfg, previous_std=slow) == []
    assert alarms_of({**collapsed, "probe_auc": 0.75}, rec, cfg, previous_std=slow) == []
    for auc, loss_value, loss in ((0.7499, 0.1, "triplet"), (None, 0.1, "triplet"), (0.87, 0.19, "triplet"),
                                  (0.87, 0.1, "contrastive")):
        kinds = [a["kind"] for a in alarms_of({**collapsed, "probe_auc": auc}, {**rec, "train_loss": loss_value},
                                              small(margin=0.2, loss=loss), previous_std=slow)]
        assert "collapse" in kinds, (auc, loss_value, loss)
    assert "semi-hard" in alarms_of(collapsed, rec, cfg)[0]["message"]
    # concentrated but spreading out fast (a fresh network): no alarm
    assert alarms_of(collapsed, rec, cfg, previous_std=0.001 / math.sqrt(5)) == []
    # distances near 0 with the triplet loss stuck at the margin
    tiny = {**h, "neg_q95": 0.001}
    assert [a["kind"] for a in alarms_of(tiny, {**rec, "train_loss": 0.2}, cfg)] == ["collapse"]
    assert alarms_of(tiny, rec, cfg) == []
    none_active = {**h, "active_fraction": 0.0}
    assert [a["kind"] for a in alarms_of(none_active, rec, cfg)] == ["no_active"]
    assert "margin" in alarms_of(none_active, rec, cfg)[0]["message"]


def test_a_collapsing_run_raises_the_collapse_alarm(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # noise images with 16 classes nothing tells apart, batch-hard triplets, unnormalised
    # embeddings and a far too high learning rate: the embeddings end up on one line
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(64, 1, 12, 12, generator=g) * 255).to(torch.uint8), torch.arange(16).repeat_interleave(4)
    cfg = small(epochs=4, batch_size=16, m_per_class=4, lr=1.0, normalize=False, schedule="none")
    with caplog.at_level("WARNING", logger="siamkit.training.health"):
        r = fit(x, y, cfg, out_dir=tmp_path / "run")
    kinds = [[a["kind"] for a in h["alarms"]] for h in r.history]
    assert any("collapse" in k for k in kinds), r.history
    assert "embeddings collapsed" in caplog.text
    saved = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["alarms"] for h in saved] == [h["alarms"] for h in r.history]
    assert saved[0]["health"]["grad_norm"] > 0
    assert (tmp_path / "run" / PLOT_FILE).stat().st_size > 10_000
    assert "ALARM: collapse" in summarize(next(h for h in r.history if h["alarms"]))


def separable_vectors() -> tuple[torch.Tensor, torch.Tensor]:
    """12 classes told apart by 4 of 16 features; the other 12 are noise that dominates
    raw distances, so a network that learns which features matter beats raw inputs on
    unseen classes."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(12).repeat_interleave(8)
    signal = 2 * torch.randn(12, 4, generator=g)[y] + 0.3 * torch.randn(len(y), 4, generator=g)
    return torch.cat([signal, 2 * torch.randn(len(y), 12, generator=g)], 1), y


def test_a_healthy_run_raises_no_alarm() -> None:
    x, y = separable_vectors()
    cfg = small(encoder="mlp", encoder_kwargs={}, epochs=4, batch_size=12, m_per_class=3, val_fraction=0.34, patience=None)
    r = fit(x, y, cfg)
    assert all(h["alarms"] == [] for h in r.history), [h["alarms"] for h in r.history]
    h = r.history[-1]["health"]
    assert h["std_ratio"] > 0.3 and h["probe_auc"] > 0.85 and 0 < h["active_fraction"] < 1
    assert r.history[-1]["val_roc_auc"] > h["raw_val_roc_auc"] + 0.05


def test_health_off_adds_nothing(tmp_path: Path) -> None:
    x, y = toy()
    r = fit(x, y, small(epochs=1, health=False), out_dir=tmp_path / "run")
    assert "health" not in r.history[0] and "alarms" not in r.history[0]
    assert not (tmp_path / "run" / PLOT_FILE).exists()


def test_a_nan_loss_stops_with_the_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    x, y = toy()

    class Poison:  # after epoch 1 is checkpointed: the next loss is NaN
        def on_epoch_end(self, record, state):  # type: ignore[no-untyped-def]
            if record["epoch"] == 1:
                with torch.no_grad():
                    next(state.network.parameters()).fill_(float("nan"))

    out = tmp_path / "run"
    cfg = small(epochs=3)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 1.*last good checkpoint \(epoch 1\)") as info:
        fit(x, y, cfg, out_dir=out, callbacks=[Poison()])
    assert isinstance(info.value, SiamkitError) and isinstance(info.value, FloatingPointError)
    assert read_checkpoint_state(out)["epoch"] == 1
    model = load_model(out / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    resumed = fit(x, y, cfg, out_dir=out, resume=True)  # the checkpoint still resumes
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]


def test_exact_resume_with_health_on_keeps_the_health_records(tmp_path: Path) -> None:
    x, y = toy()
    cfg = small(epochs=3, val_fraction=0.34, patience=None)
    full = fit(x, y, cfg, out_dir=tmp_path / "full")
    fit(x, y, cfg, out_dir=tmp_path / "cut", callbacks=[_stop_after(2)])
    resumed = fit(x, y, cfg, out_dir=tmp_path / "cut", resume=True)
    assert params_equal(full.network, resumed.network)
    timing = {"seconds", "images_per_s"}
    strip = [{k: v for k, v in h.items() if k not in timing} for h in full.history]
    assert strip == [{k: v for k, v in h.items() if k not in timing} for h in resumed.history]
    assert all("health" in h for h in resumed.history)


def _stop_after(epochs: int):  # type: ignore[no-untyped-def]
    class Stop:
        def on_epoch_end(self, record, state):  # type: ignore[no-untyped-def]
            if record["epoch"] >= epochs:
                state.stop = True

    return Stop()


def test_health_never_changes_the_weights() -> None:
    x, y = toy()
    for extra in ({}, {"grad_clip": 0.5}):
        on = fit(x, y, small(epochs=2, val_fraction=0.34, **extra))
        off = fit(x, y, small(epochs=2, val_fraction=0.34, health=False, **extra))
        assert params_equal(on.network, off.network)
        assert [h["train_loss"] for h in on.history] == [h["train_loss"] for h in off.history]
