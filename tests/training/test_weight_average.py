"""TrainConfig.ema: the exponential moving average of the weights (training/weight_average.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from siamkit import SiamkitError, TrainConfig, fit, load_model
from siamkit.cli import app
from siamkit.errors import ModelFileError
from siamkit.io import load_state_dict
from siamkit.training.callbacks import Callback, TrainState

from .test_training import interrupt_after, params_equal, small, toy


def _float_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.state_dict().items() if v.is_floating_point()}


def _slow_ema(steps: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """The obvious EMA with TensorFlow's warm-up: the first step's weights, then for the
    n-th later step avg <- d * avg + (1 - d) * w with d = min(decay, (1 + n) / (10 + n))."""
    avg = {k: v.double() for k, v in steps[0].items()}
    for n, w in enumerate(steps[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        avg = {k: d * avg[k] + (1 - d) * w[k].double() for k in avg}
    return avg


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].double(), b[k].double(), atol=1e-6, rtol=1e-5) for k in a)


class _Watch(Callback):
    """Records, after every epoch, the network the callbacks see and the training weights."""

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []
        self.training: list[dict[str, torch.Tensor] | None] = []

    def on_epoch_end(self, record: dict, state: TrainState) -> None:  # type: ignore[override]
        self.seen.append(_float_state(state.network))
        tw = state.training_weights
        self.training.append(None if tw is None else {k: v.clone() for k, v in tw.items() if v.is_floating_point()})


def test_the_average_equals_a_slow_ema_of_every_step_and_training_is_unchanged() -> None:
    # one step per epoch: without ema a callback sees the training weights after every step
    x, y = toy(n_classes=6)
    cfg = dict(epochs=5, steps_per_epoch=1, encoder_kwargs={"width": 8})
    plain = _Watch()
    fit(x, y, small(**cfg), callbacks=[plain])
    steps = plain.seen
    assert len(steps) == 5 and plain.training == [None] * 5
    for decay in (0.2, 0.9):  # 0.2: the cap from the second update on; 0.9: the warm-up's decays (0.18 .. 0.36) only
        watch = _Watch()
        averaged = fit(x, y, small(ema=decay, **cfg), callbacks=[watch])
        for epoch in range(5):  # the callbacks see the average of the steps so far, the training weights beside it
            assert _close(watch.seen[epoch], _slow_ema(steps[: epoch + 1], decay)), (decay, epoch)
            assert _close(watch.training[epoch], steps[epoch]), epoch
        # the averaging never feeds back into training; the result is the last epoch's average (no validation)
        assert _close(_float_state(averaged.network), _slow_ema(steps, decay))
        assert not _close(_float_state(averaged.network), steps[-1])


def test_validation_and_the_kept_epoch_use_the_averaged_weights() -> None:
    x, y = toy(n_classes=8)
    scores = iter([0.5, 0.9, 0.7, 0.6])
    validated: list[dict[str, torch.Tensor]] = []

    def my_validate(network, vx, vy, *, precision):  # type: ignore[no-untyped-def]
        validated.append(_float_state(network))
        return {"val_roc_auc": next(scores)}

    watch = _Watch()
    r = fit(x, y, small(epochs=4, val_fraction=0.25, patience=None, ema=0.8), validate_fn=my_validate, callbacks=[watch])
    assert r.best_epoch == 2
    assert all(_close(v, s) for v, s in zip(validated, watch.seen))  # validation scored what the callbacks see
    assert not any(_close(v, t) for v, t in zip(validated, watch.training))  # the average, not the training weights
    assert _close(_float_state(r.network), validated[1])  # the epoch-2 average is the result
    assert not _close(validated[1], validated[3])


def test_resume_with_ema_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    x, y = toy(n_classes=8)
    cfg = small(epochs=4, steps_per_epoch=3, val_fraction=0.25, patience=10, augment=True, ema=0.9)
    full = fit(x, y, cfg, out_dir=tmp_path / "full")
    interrupt_after(x, y, cfg, tmp_path / "cut", 2)
    ckpt = tmp_path / "cut" / "checkpoint"
    state = json.loads((ckpt / "trainer.json").read_text())
    assert state["average_file"] == "epoch-0002.average.safetensors"
    # the checkpoint's model file holds the training weights, the average file the average
    trained = load_state_dict(ckpt / state["model_file"])
    average = load_state_dict(ckpt / state["average_file"])
    assert int(average["n_averaged"]) == 2 * 3  # every step of epochs 1-2
    assert any(not torch.equal(trained[k], average[f"module.{k}"]) for k in trained if trained[k].is_floating_point())
    resumed = fit(x, y, cfg, out_dir=tmp_path / "cut", resume=True)
    assert params_equal(full.network, resumed.network)
    assert params_equal(load_model(tmp_path / "full" / "model"), load_model(tmp_path / "cut" / "model"))
    files = sorted(p.name for p in ckpt.glob("*.safetensors"))
    assert files == ["epoch-0004.average.safetensors", "epoch-0004.model.safetensors", "epoch-0004.optimizer.safetensors"]


def test_resume_refuses_a_checkpoint_without_the_average(tmp_path: Path) -> None:
    x, y = toy()
    cfg = small(epochs=2, ema=0.9)
    interrupt_after(x, y, cfg, tmp_path / "r", 1)
    st_path = tmp_path / "r" / "checkpoint" / "trainer.json"
    st = json.loads(st_path.read_text())
    del st["average_file"]
    st_path.write_text(json.dumps(st))
    with pytest.raises(ModelFileError, match="no weight average"):
        fit(x, y, cfg, out_dir=tmp_path / "r", resume=True)
    with pytest.raises(SiamkitError, match="other options"):  # ema is part of the run's options
        fit(x, y, small(epochs=2, ema=0.5), out_dir=tmp_path / "r", resume=True)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, True, "0.9"])
def test_bad_decay_is_refused(bad: object) -> None:
    with pytest.raises(SiamkitError, match="ema must be a decay"):
        small(ema=bad)


def test_ema_zero_is_off_and_round_trips_in_the_config() -> None:
    x, y = toy()
    assert params_equal(fit(x, y, small(epochs=2)).network, fit(x, y, small(epochs=2, ema=0.0)).network)
    assert TrainConfig.from_dict(small(ema=0.95).to_dict()).ema == 0.95
    assert TrainConfig.from_dict({k: v for k, v in small().to_dict().items() if k != "ema"}).ema == 0.0


def _image_folder(root: Path) -> Path:
    from PIL import Image

    x, y = toy(n_classes=6, per_class=6, side=16)
    for i, (img, label) in enumerate(zip(x, y)):
        d = root / f"c{int(label)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(d / f"{i}.png")
    return root


def test_cli_train_ema_and_a_bad_decay(tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "data")
    runner = CliRunner()
    common = ["train", "--data", str(data), "--image-size", "16x16", "--epochs", "2", "--steps-per-epoch", "2",
              "--batch-size", "12", "--m-per-class", "3", "--width", "8", "--no-progress", "--no-health"]
    r = runner.invoke(app, [*common, "--out", str(tmp_path / "run"), "--ema", "0.9"])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "run" / "checkpoint" / "trainer.json").read_text())
    assert saved["config"]["ema"] == 0.9 and "average_file" in saved
    bad = runner.invoke(app, [*common, "--out", str(tmp_path / "bad"), "--ema", "1.5"])
    assert bad.exit_code == 2 and "ema must be a decay" in bad.output
    assert not (tmp_path / "bad" / "checkpoint").exists()
