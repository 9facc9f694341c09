from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from siamkit import SiamkitError, TrainConfig, fit, load_model
from siamkit.errors import DataError, ModelFileError
from siamkit.inference import embed_all
from siamkit.data.splits import split_by_class


def toy(n_classes: int = 6, per_class: int = 8, side: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    protos = torch.rand(n_classes, 1, side, side, generator=g)
    x = protos[y] + 0.15 * torch.randn(len(y), 1, side, side, generator=g)
    return (x.clamp(0, 1) * 255).to(torch.uint8), y


def small(**kw) -> TrainConfig:  # type: ignore[no-untyped-def]
    base = dict(epochs=3, batch_size=12, m_per_class=3, val_fraction=0.0, progress=False, embedding_dim=16,
                encoder_kwargs={"width": 8})
    base.update(kw)
    return TrainConfig(**base)


def params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "loss,miner",
    [("triplet", "batch_hard"), ("triplet", "semi_hard"), ("contrastive", "all_pairs"), ("contrastive", "hard_pairs"),
     ("binary", "all_pairs"), ("mnr", None), ("normsoftmax", None)],
)
def test_every_objective_learns(loss: str, miner: str | None) -> None:
    x, y = toy()
    cfg = small(loss=loss, miner=miner, epochs=6, margin=0.5)
    r = fit(x, y, cfg)
    hist = [h["train_loss"] for h in r.history]
    assert len(hist) == 6 and all(v == v for v in hist)
    assert hist[-1] < hist[0], hist
    e = embed_all(r.network, x)
    assert e.shape == (len(y), 16) and torch.isfinite(e).all()


def test_same_seed_same_weights_and_different_seed_differs() -> None:
    x, y = toy()
    a = fit(x, y, small(seed=1)).network
    b = fit(x, y, small(seed=1)).network
    c = fit(x, y, small(seed=2)).network
    assert params_equal(a, b)
    assert not params_equal(a, c)


class Interrupt(Exception):
    pass


def interrupt_after(x, y, cfg: TrainConfig, out_dir: Path, epoch: int) -> None:  # type: ignore[no-untyped-def]
    """Train into out_dir and die (an exception) right after epoch ``epoch``'s checkpoint."""

    def stop(record: dict) -> None:
        if record["epoch"] == epoch:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(x, y, cfg, out_dir=out_dir, callbacks=[stop])


@pytest.mark.parametrize("augment", [False, True])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path: Path, augment: bool) -> None:
    x, y = toy(n_classes=8)
    cfg = small(epochs=4, val_fraction=0.25, patience=10, augment=augment, encoder_kwargs={"width": 8, "dropout": 0.2})
    full = fit(x, y, cfg, out_dir=tmp_path / "full")
    interrupt_after(x, y, cfg, tmp_path / "cut", 2)
    state = json.loads((tmp_path / "cut" / "checkpoint" / "trainer.json").read_text())
    assert state["epoch"] == 2
    resumed = fit(x, y, cfg, out_dir=tmp_path / "cut", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert params_equal(full.network, resumed.network)
    assert resumed.best_epoch == full.best_epoch
    # the last checkpoints match too, bit for bit
    fa = load_model(tmp_path / "full" / "model")
    fb = load_model(tmp_path / "cut" / "model")
    assert params_equal(fa, fb)
    # only the newest epoch's files are kept
    files = sorted(p.name for p in (tmp_path / "cut" / "checkpoint").glob("*.safetensors"))
    assert files == ["epoch-0004.model.safetensors", "epoch-0004.optimizer.safetensors"]


def test_resume_refuses_other_options(tmp_path: Path) -> None:
    x, y = toy()
    fit(x, y, small(epochs=1), out_dir=tmp_path / "r")
    with pytest.raises(SiamkitError, match="other options"):
        fit(x, y, small(epochs=1, lr=0.5), out_dir=tmp_path / "r", resume=True)


def test_early_stopping_stops_and_keeps_best(tmp_path: Path) -> None:
    x, y = toy(n_classes=10)
    # a huge learning rate makes validation worse after the first epochs
    r = fit(x, y, small(epochs=30, patience=2, val_fraction=0.3, lr=0.05, schedule="none"), out_dir=tmp_path / "o")
    aucs = [h["val_roc_auc"] for h in r.history]
    assert r.stopped_early and len(r.history) < 30
    assert r.best_metric == max(aucs)
    assert r.history[r.best_epoch - 1]["val_roc_auc"] == r.best_metric
    # the saved model is the best epoch's
    saved = json.loads((tmp_path / "o" / "model" / "config.json").read_text())
    assert saved["extra"]["epoch"] == r.best_epoch


def test_split_by_class_is_disjoint_and_seeded() -> None:
    y = torch.arange(20).repeat_interleave(3)
    tr, va = split_by_class(y, 0.25, seed=3)
    assert set(y[tr].tolist()).isdisjoint(set(y[va].tolist()))
    assert len(set(y[va].tolist())) == 5
    tr2, va2 = split_by_class(y, 0.25, seed=3)
    assert torch.equal(va, va2)
    with pytest.raises(DataError, match="too few"):
        split_by_class(torch.tensor([0, 0, 1, 1, 2, 2]), 0.5, seed=0)


def test_bad_training_input() -> None:
    x, y = toy()
    with pytest.raises(DataError, match="single class"):
        fit(x, torch.zeros_like(y), small())
    with pytest.raises(DataError, match="labels"):
        fit(x, y[:-1], small())
    xf = x.float()
    xf[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        fit(xf, y, small())
    with pytest.raises(SiamkitError, match="triplet miner"):
        TrainConfig(loss="triplet", miner="all_pairs")
    with pytest.raises(SiamkitError, match="unknown training option"):
        TrainConfig.from_dict({"epochs": 1, "lrate": 3})


def test_vectors_with_mlp() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(5).repeat_interleave(10)
    x = torch.randn(5, 20, generator=g)[y] + 0.1 * torch.randn(50, 20, generator=g)
    r = fit(x, y, small(encoder="mlp", encoder_kwargs={}, epochs=3, batch_size=10, m_per_class=2))
    assert embed_all(r.network, x).shape == (50, 16)


def test_bf16_and_channels_last_train() -> None:
    x, y = toy()
    r = fit(x, y, small(precision="bf16", channels_last=True))
    assert all(h["train_loss"] == h["train_loss"] for h in r.history)


@pytest.mark.parametrize("loss", ["contrastive", "binary"])
def test_pair_batching_learns(loss: str) -> None:
    x, y = toy()
    r = fit(x, y, small(batching="pairs", loss=loss, miner=None, epochs=8, batch_size=16, margin=1.0))
    hist = [h["train_loss"] for h in r.history]
    assert hist[-1] < hist[0], hist
    with pytest.raises(SiamkitError, match="pair batches"):
        TrainConfig(batching="pairs", loss="triplet")


def test_cosine_schedule_anneals_every_step_to_zero() -> None:
    x, y = toy()
    lrs: list[float] = []
    cfg = small(epochs=2, steps_per_epoch=5, lr=0.01, schedule="cosine")
    r = fit(x, y, cfg, callbacks=[lambda rec: lrs.append(rec["lr"])])
    # the record holds the lr the epoch started with: step 0 and step 5 of 10
    assert lrs == pytest.approx([0.01, 0.01 * (1 + math.cos(math.pi * 5 / 10)) / 2])
    assert [h["lr"] for h in r.history] == lrs


def test_step_schedule_steps_per_epoch() -> None:
    x, y = toy()
    r = fit(x, y, small(epochs=3, steps_per_epoch=2, lr=0.01, schedule="step", step_size=1, gamma=0.5))
    assert [h["lr"] for h in r.history] == pytest.approx([0.01, 0.005, 0.0025])


def test_fit_with_groups_trains_and_checks_groups() -> None:
    x, y = toy(n_classes=8)
    groups = y // 4
    r = fit(x, y, small(epochs=1, classes_per_group=2, batch_size=12, m_per_class=3), groups=groups)
    assert r.history[0]["train_loss"] > 0
    with pytest.raises(DataError, match="no groups were given"):
        fit(x, y, small(epochs=1, classes_per_group=2))
    with pytest.raises(DataError, match="one entry per training sample"):
        fit(x, y, small(epochs=1, classes_per_group=2), groups=groups[:-1])
    with pytest.raises(SiamkitError, match="classes_per_group"):
        small(classes_per_group=1)


def test_normsoftmax_resume_is_exact_and_keeps_proxies_out_of_the_model(tmp_path: Path) -> None:
    x, y = toy(n_classes=8)
    y = y * 3 + 5  # labels need not be 0..C-1
    cfg = small(epochs=3, loss="normsoftmax", margin=0.1)
    full = fit(x, y, cfg, out_dir=tmp_path / "full")
    interrupt_after(x, y, cfg, tmp_path / "cut", 1)
    resumed = fit(x, y, cfg, out_dir=tmp_path / "cut", resume=True)
    assert params_equal(full.network, resumed.network)
    files = sorted(p.name for p in (tmp_path / "cut" / "checkpoint").glob("*.safetensors"))
    assert files == ["epoch-0003.loss.safetensors", "epoch-0003.model.safetensors", "epoch-0003.optimizer.safetensors"]
    assert not any("prox" in k for k in load_model(tmp_path / "full" / "model").state_dict())


@pytest.mark.parametrize("tie_break,expected", [("earlier", 2), ("later", 4)])
def test_validate_fn_and_tie_break_choose_the_kept_epoch(tie_break: str, expected: int) -> None:
    x, y = toy(n_classes=8)
    scores = iter([0.5, 0.9, 0.7, 0.9, 0.8])
    seen: list[int] = []

    def my_validate(network, vx, vy, *, precision):  # type: ignore[no-untyped-def]
        seen.append(int(vx.shape[0]))
        return {"val_roc_auc": next(scores), "val_custom": 1.0}

    r = fit(x, y, small(epochs=5, val_fraction=0.25, patience=None, tie_break=tie_break), validate_fn=my_validate)
    assert r.best_epoch == expected and r.best_metric == 0.9
    assert seen == [16] * 5 and all(h["val_custom"] == 1.0 for h in r.history)
    with pytest.raises(KeyError, match="val_roc_auc"):
        fit(x, y, small(epochs=1, val_fraction=0.25), validate_fn=lambda *a, **k: {"auc": 1.0})
    with pytest.raises(SiamkitError, match="tie_break"):
        small(tie_break="latest")


def test_fit_uses_a_given_sampler() -> None:
    x, y = toy(n_classes=6)

    class OnlyClasses01:
        def __init__(self) -> None:
            self.calls = 0

        def __len__(self) -> int:
            return 3

        def batches(self, generator: torch.Generator):  # type: ignore[no-untyped-def]
            self.calls += 1
            for _ in range(3):
                perm = torch.randperm(8, generator=generator)
                yield torch.cat([perm[:3], 8 + perm[:3]])  # 3 of class 0 and 3 of class 1

    s = OnlyClasses01()
    r = fit(x, y, small(epochs=2, batch_size=6, m_per_class=3), sampler=s)
    assert s.calls == 2 and len(r.history) == 2
    with pytest.raises(TypeError, match="batches"):
        fit(x, y, small(epochs=1), sampler=[1, 2, 3])
    with pytest.raises(DataError, match="not both"):
        fit(x, y, small(epochs=1), sampler=s, groups=y // 2)


def test_resume_refuses_a_checkpoint_with_another_cosine_length(tmp_path: Path) -> None:
    x, y = toy(n_classes=8)
    cfg = small(epochs=3, steps_per_epoch=2)
    interrupt_after(x, y, cfg, tmp_path / "r", 1)
    state_path = tmp_path / "r" / "checkpoint" / "trainer.json"
    state = json.loads(state_path.read_text())
    state["scheduler"]["T_max"] = 3  # what a per-epoch cosine checkpoint held
    state_path.write_text(json.dumps(state))
    with pytest.raises(ModelFileError, match="anneals the learning rate over 3 steps, this run over 6"):
        fit(x, y, cfg, out_dir=tmp_path / "r", resume=True)


def test_callback_objects_can_stop_the_run_and_functions_still_work() -> None:
    from siamkit.training import Callback

    x, y = toy()

    class StopAfter2(Callback):
        def on_epoch_end(self, record, state):  # type: ignore[no-untyped-def]
            if record["epoch"] == 2:
                state.stop = True

    ends: list[int] = []

    class OnlyEnd:  # any object with some of the hooks
        def on_train_end(self, state):  # type: ignore[no-untyped-def]
            ends.append(state.epoch)

    seen: list[int] = []
    r = fit(x, y, small(epochs=5), callbacks=[StopAfter2(), OnlyEnd(), lambda rec: seen.append(rec["epoch"])])
    assert [h["epoch"] for h in r.history] == [1, 2] and r.stopped_early
    assert seen == [1, 2] and ends == [2]
    with pytest.raises(TypeError, match="callback"):
        fit(x, y, small(epochs=1), callbacks=[3])  # type: ignore[list-item]
