"""fit(..., init=...) and siamkit train --init: a run that starts from another model's weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from siamkit import fit, save_model
from siamkit.cli import app
from siamkit.errors import DataError, ModelFileError
from siamkit.training.callbacks import Callback, TrainState

from .test_training import params_equal, small, toy
from .test_weight_average import _image_folder


class _Start(Callback):
    """Records the weights every run (or ensemble member) starts from."""

    def __init__(self) -> None:
        self.starts: list[dict[str, torch.Tensor]] = []

    def on_train_begin(self, state: TrainState) -> None:  # type: ignore[override]
        self.starts.append({k: v.clone() for k, v in state.network.state_dict().items()})


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_starts_from_the_init_weights_from_a_folder_a_network_or_a_state_dict(tmp_path: Path) -> None:
    x, y = toy(n_classes=6)
    donor = fit(x, y, small(epochs=2, seed=5)).network
    save_model(donor, tmp_path / "donor")
    fresh = _Start()
    fit(x, y, small(epochs=1), callbacks=[fresh])
    assert not _same(fresh.starts[0], donor.state_dict())  # random weights without init
    for init in (tmp_path / "donor", str(tmp_path / "donor"), donor, donor.state_dict()):
        start = _Start()
        r = fit(x, y, small(epochs=1), init=init, callbacks=[start])
        assert _same(start.starts[0], donor.state_dict())
        assert not params_equal(r.network, donor)  # and it trains on from there
    # the donor is not changed by training from it
    assert params_equal(donor, fit(x, y, small(epochs=2, seed=5)).network)


def test_init_transfers_across_image_sizes_with_global_pooling() -> None:
    x, y = toy(n_classes=6, side=12)
    big, _ = toy(n_classes=6, side=20)
    kw = {"encoder_kwargs": {"width": 8, "grid": 1}}
    donor = fit(big, y, small(epochs=1, **kw)).network
    start = _Start()
    fit(x, y, small(epochs=1, **kw), init=donor, callbacks=[start])
    assert _same(start.starts[0], donor.state_dict())


def test_every_ensemble_member_starts_from_init() -> None:
    x, y = toy(n_classes=6)
    donor = fit(x, y, small(epochs=1, seed=3)).network
    start = _Start()
    fit(x, y, small(epochs=1, ensemble=2), init=donor, callbacks=[start])
    assert len(start.starts) == 2 and all(_same(s, donor.state_dict()) for s in start.starts)


def test_another_architecture_or_a_bad_init_is_refused(tmp_path: Path) -> None:
    x, y = toy(n_classes=6)
    other_dim = fit(x, y, small(epochs=1, embedding_dim=8)).network
    with pytest.raises(DataError, match=r"do not fit this network.*other shapes"):
        fit(x, y, small(epochs=1), init=other_dim)
    other_width = fit(x, y, small(epochs=1, encoder_kwargs={"width": 4})).network
    with pytest.raises(DataError, match="do not fit this network"):
        fit(x, y, small(epochs=1), init=other_width)
    with pytest.raises(DataError, match="missing"):
        fit(x, y, small(epochs=1), init={"encoder.nothing": torch.zeros(1)})
    with pytest.raises(DataError, match="model folder, a network or a state dict"):
        fit(x, y, small(epochs=1), init=42)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError):
        fit(x, y, small(epochs=1), init=tmp_path / "empty")


def test_cli_train_init_and_its_refusals(tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "data")
    runner = CliRunner()
    common = ["train", "--data", str(data), "--image-size", "16x16", "--epochs", "1", "--steps-per-epoch", "2",
              "--batch-size", "12", "--m-per-class", "3", "--width", "8", "--no-progress", "--no-health"]
    first = runner.invoke(app, [*common, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, [*common, "--out", str(tmp_path / "b"), "--init", str(tmp_path / "a" / "model")])
    assert second.exit_code == 0, second.output
    missing = runner.invoke(app, [*common, "--out", str(tmp_path / "c"), "--init", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert not (tmp_path / "c").exists()  # refused before anything was written
    wrong = runner.invoke(app, [*common, "--out", str(tmp_path / "d"), "--embedding-dim", "8",
                                "--init", str(tmp_path / "a" / "model")])
    assert wrong.exit_code == 2 and "do not fit this network" in wrong.output
    resumed = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "b"), "--resume",
                                  "--init", str(tmp_path / "a" / "model")])
    assert resumed.exit_code == 2 and "leave out --recipe and --init" in resumed.output
    for flag in (["--init", str(tmp_path / "a" / "model")], ["--ema", "0.9"], ["--augment"]):  # text: refused, not ignored
        text = runner.invoke(app, ["train", "--task", "text", "--data", str(tmp_path / "pairs.csv"), "--out",
                                   str(tmp_path / "t"), *flag])
        assert text.exit_code == 2 and "a text twin starts from --pretrained" in text.output, text.output
