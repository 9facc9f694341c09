"""Ensembles: n networks trained seeds apart and joined into one model
(``TrainConfig(ensemble=n)``, :class:`siamkit.encoders.ensemble.EnsembleEncoder`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from siamkit.cli import app
from siamkit.data.splits import split_by_class
from siamkit.encoders import create_encoder
from siamkit.encoders.ensemble import EnsembleEncoder
from siamkit.errors import ModelFileError, SiamkitError
from siamkit.inference import embed_all
from siamkit.io import load_model, save_model
from siamkit.network import SiameseNetwork
from siamkit.training import TrainConfig, fit
from siamkit.training.ensemble import join_networks

from ..conftest import make_image_folder

runner = CliRunner()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(48, 1, 12, 12, generator=g), torch.arange(6).repeat_interleave(8)


def _cfg(**kw: object) -> TrainConfig:
    base = dict(epochs=2, steps_per_epoch=2, batch_size=12, m_per_class=4, val_fraction=0, progress=False,
                normalize=True, embedding_dim=8, encoder_kwargs={"width": 4}, health=False)
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def _nets(n: int) -> list[SiameseNetwork]:
    out = []
    for k in range(n):
        torch.manual_seed(k)
        out.append(SiameseNetwork(create_encoder("conv4", in_channels=1, embedding_dim=8, width=4), normalize=True).eval())
    return out


def test_joined_distance_is_the_mean_of_the_members_squared_distances() -> None:
    nets = _nets(3)
    joined = join_networks(nets)
    x, _ = _data()
    a, b = x[:10], x[10:20]
    with torch.no_grad():
        got = (joined.embed(a) - joined.embed(b)).norm(dim=1) ** 2
        # the slow obvious way: each member's unit embeddings, squared distance, averaged
        want = torch.stack([((n.embed(a) / n.embed(a).norm(dim=1, keepdim=True))
                             - (n.embed(b) / n.embed(b).norm(dim=1, keepdim=True))).norm(dim=1) ** 2 for n in nets]).mean(0)
    assert torch.allclose(got, want, atol=1e-5)
    assert joined.encoder.embedding_dim == 24
    assert torch.allclose(joined.embed(a).norm(dim=1), torch.ones(10), atol=1e-5)


def test_saved_ensemble_loads_with_the_same_embeddings(tmp_path: Path) -> None:
    joined = join_networks(_nets(2))
    save_model(joined, tmp_path / "m")
    back = load_model(tmp_path / "m")
    x, _ = _data()
    assert torch.allclose(embed_all(joined, x), embed_all(back, x), atol=1e-6)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())["network"]["encoder"]
    assert cfg["name"] == "ensemble" and [m["name"] for m in cfg["kwargs"]["members"]] == ["conv4", "conv4"]


def test_fit_with_ensemble_equals_members_fitted_alone(tmp_path: Path) -> None:
    x, y = _data()
    cfg = _cfg(ensemble=2, seed=3)
    res = fit(x, y, cfg, out_dir=tmp_path / "run")
    alone = [fit(x, y, dataclasses.replace(cfg, ensemble=1, seed=s)).network for s in (3, 4)]
    want = join_networks(alone)
    assert torch.allclose(embed_all(res.network, x), embed_all(want, x), atol=1e-5)  # CPU training is deterministic
    assert [m["seed"] for m in res.members or []] == [3, 4]
    assert (tmp_path / "run" / "members" / "1" / "DONE").is_file()
    assert torch.allclose(embed_all(load_model(tmp_path / "run" / "model"), x), embed_all(want, x), atol=1e-5)
    with pytest.raises(ModelFileError, match="already holds an ensemble run"):
        fit(x, y, cfg, out_dir=tmp_path / "run")


def test_members_share_one_held_out_split() -> None:
    x, y = _data()
    cfg = _cfg(ensemble=2, val_fraction=0.34)
    res = fit(x, y, cfg)
    tr, va = split_by_class(y, 0.34, cfg.seed)  # what fit() holds out at seed 0; member 1 (seed 1) gets the same
    alone = [fit(x[tr], y[tr], dataclasses.replace(cfg, ensemble=1, seed=s), val_x=x[va], val_y=y[va]).network for s in (0, 1)]
    assert torch.allclose(embed_all(res.network, x), embed_all(join_networks(alone), x), atol=1e-5)


def test_resume_keeps_finished_members_and_continues_the_rest(tmp_path: Path) -> None:
    x, y = _data()
    cfg = _cfg(ensemble=3)
    full = fit(x, y, cfg, out_dir=tmp_path / "full").network
    fit(x, y, cfg, out_dir=tmp_path / "cut")
    (tmp_path / "cut" / "members" / "2" / "DONE").unlink()  # member 2 "interrupted" after its last checkpoint
    before = (tmp_path / "cut" / "members" / "0" / "model" / "model.safetensors").stat().st_mtime_ns
    res = fit(x, y, cfg, out_dir=tmp_path / "cut", resume=True)
    assert res.members is not None and res.members[0].get("resumed") == "done"
    assert (tmp_path / "cut" / "members" / "0" / "model" / "model.safetensors").stat().st_mtime_ns == before
    assert torch.allclose(embed_all(res.network, x), embed_all(full, x), atol=1e-5)


@pytest.mark.parametrize("kw, match", [
    ({"ensemble": 0}, "ensemble must be an integer >= 1"),
    ({"encoder": "ensemble"}, "not trained directly"),
    ({"ensemble": 2, "loss": "binary", "miner": "all_pairs"}, "binary pair head"),
])
def test_bad_ensemble_options_are_refused(kw: dict, match: str) -> None:
    with pytest.raises(SiamkitError, match=match):
        _cfg(**kw)


def test_from_networks_refuses_one_network_and_pair_heads() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        EnsembleEncoder.from_networks(_nets(1))
    head = SiameseNetwork(create_encoder("conv4", in_channels=1, embedding_dim=8, width=4), head="l1")
    with pytest.raises(ValueError, match="pair head"):
        EnsembleEncoder.from_networks([head, head])
    with pytest.raises(ValueError, match="at least 2 members"):
        create_encoder("ensemble", members=[{"name": "conv4", "kwargs": {}}])


def test_cli_trains_resumes_calibrates_and_exports_an_ensemble(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    data = make_image_folder(tmp_path / "data", classes=4, per_class=6, size=12)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--image-size", "12", "--epochs", "1", "--batch-size", "8",
            "--m-per-class", "2", "--val-fraction", "0", "--no-progress", "--no-health", "--embedding-dim", "8",
            "--width", "4", "--ensemble", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "ensemble of 2 networks" in r.output
    net = load_model(out / "model")
    assert isinstance(net.encoder, EnsembleEncoder) and net.encoder.embedding_dim == 16
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    want = embed_all(net, x)
    split_written = (out / "split.json").stat().st_mtime_ns
    r = runner.invoke(app, args)  # the same folder again: refused, nothing overwritten
    assert r.exit_code == 2 and "already holds" in r.output
    assert (out / "split.json").stat().st_mtime_ns == split_written
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(out), "--resume", "--no-progress"])
    assert r.exit_code == 0, r.output  # every member done: the joined model is rebuilt from them, unchanged
    assert torch.allclose(embed_all(load_model(out / "model"), x), want, atol=1e-6)
    assert runner.invoke(app, ["calibrate", str(out / "model"), "--data", str(data)]).exit_code == 0
    r = runner.invoke(app, ["export", str(out / "model"), "--format", "onnx", "--out", str(tmp_path / "onnx")])
    assert r.exit_code == 0, r.output
    a, b = data / "class0" / "0.png", data / "class1" / "0.png"
    torch_out = json.loads(runner.invoke(app, ["compare", str(out / "model"), str(a), str(b), "--json"]).stdout)
    onnx_out = json.loads(runner.invoke(app, ["compare", str(tmp_path / "onnx"), str(a), str(b), "--json",
                                              "--runtime", "onnx"]).stdout)
    assert onnx_out["distance"] == pytest.approx(torch_out["distance"], abs=1e-4)
    assert onnx_out["same"] == torch_out["same"]
