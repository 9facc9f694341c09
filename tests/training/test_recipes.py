"""Recipes as files (parsing, refusals, the CLI's override rule) and the input spec's
preprocessing steps and TTA (round trip, old files, the registry, the built-in steps)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from siamkit.cli import app
from siamkit.data.preprocess import Crop, Invert, preprocess_kinds, register_preprocess, step_from_dict
from siamkit.data.signature_scan import SignaturePreprocess
from siamkit.errors import RecipeError
from siamkit.inference import embed_all
from siamkit.input_spec import InputSpec
from siamkit.network import InputSpec as NetworkInputSpec
from siamkit.training import TrainConfig, build_network
from siamkit.training.recipes import list_recipes, load_recipe, recipe_text

from ..conftest import make_image_folder

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

runner = CliRunner()


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.toml"
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------- shipped recipes


def test_shipped_recipes_are_the_benchmarked_ones() -> None:
    by_name = {r.name: r for r in list_recipes()}
    assert sorted(by_name) == ["digits", "faces", "faces-robust", "omniglot", "omniglot-ink", "signatures", "signatures-gap"]
    f = by_name["faces"]
    assert f.task == "classes" and f.input.image_size == (56, 46) and f.input.tta is None
    assert f.train.encoder_kwargs == {"width": 32, "depth": 3, "grid": 6} and f.train.tie_break == "later"
    assert (f.train.epochs, f.train.steps_per_epoch, f.train.patience, f.train.precision) == (20, 20, None, "fp32")
    s = by_name["signatures"]
    assert s.task == "signatures" and s.input.image_size == (75, 110)  # validation on genuine vs forgery pairs
    assert s.input.preprocess[0]["kind"] == "signature" and s.train.augment is False
    spec = s.input_spec()
    assert spec.shape == (1, 75, 110) and isinstance(spec.preprocess[0], SignaturePreprocess)
    assert spec.preprocess[0] == SignaturePreprocess(size=(75, 110))  # load_signatures' default step
    o = by_name["omniglot"]
    assert o.input.tta == "shift" and o.train.loss == "mnr" and o.train.embedding_dim == 128 and o.train.fill == 1.0
    assert by_name["digits"].train.loss == "views"
    # faces-robust is the cross-validated candidate of bench/recipes/faces_robust.toml, shipped
    rb, cand = by_name["faces-robust"], load_recipe(Path(__file__).parents[2] / "bench" / "recipes" / "faces_robust.toml")
    assert rb.input == cand.input and rb.input.preprocess[0]["kind"] == "illumination" and rb.input.tta == "shift+flip"
    assert {**rb.train.to_dict(), "val_fraction": 0.0} == cand.train.to_dict() and rb.train.val_fraction == 0.2
    assert rb.train.ensemble == 3  # 3 networks joined into one model (training/ensemble.py)
    # signatures-gap is the cross-validated row signature+gap300 of bench_signature_shortcut: signatures, changed
    sg, sig = by_name["signatures-gap"], by_name["signatures"]
    changes = {"encoder_kwargs": {"width": 32, "depth": 4, "grid": 1}, "epochs": 15, "steps_per_epoch": 20}
    assert sg.input == sig.input and sg.task == sig.task
    assert sg.train.to_dict() == {**sig.train.to_dict(), **changes}
    row = json.loads((Path(__file__).parents[2] / "bench" / "results" / "signature_shortcut.json").read_text())
    assert row["trained"]["signature+gap300"]["set"] == changes
    # omniglot-ink pre-trains signatures-gap's network (siamkit train --init): the same architecture, the same polarity
    ink = by_name["omniglot-ink"]
    same = ("encoder", "encoder_kwargs", "embedding_dim", "normalize", "distance")
    assert {k: getattr(ink.train, k) for k in same} == {k: getattr(sg.train, k) for k in same}
    assert ink.train.encoder_kwargs["grid"] == 1 and list(ink.input.preprocess) == [{"kind": "invert"}]
    assert sg.input.preprocess[0]["invert"] is True and ink.input.channels == sg.input.channels == 1


def test_recipe_show_and_list_cli() -> None:
    r = runner.invoke(app, ["recipes"])
    assert r.exit_code == 0, r.output
    for name in ("faces", "signatures", "omniglot", "digits"):
        assert name in r.stdout
    assert "56x46" in r.stdout and "tta shift" in r.stdout and "preprocess signature" in r.stdout
    r = runner.invoke(app, ["recipes", "show", "faces"])
    assert r.exit_code == 0 and tomllib.loads(r.stdout)["recipe"]["name"] == "faces"
    assert r.stdout == recipe_text("faces")
    r = runner.invoke(app, ["recipes", "show", "nope"])
    assert r.exit_code == 2 and "unknown recipe 'nope'" in r.output and "faces" in r.output


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[train]\nepochz = 3\n", "unknown key 'epochz' in [train]"),
        ("[input]\nsize = [2, 2]\n", "unknown key 'size' in [input]"),
        ("[recipe]\nnam = 'x'\n", "unknown key 'nam' in [recipe]"),
        ("[model]\nx = 1\n", "unknown table [model]"),
        ("[train]\nepochs = 'ten'\n", "epochs"),
        ("[train]\nnormalize = 1\n", "normalize"),
        ("[train]\npatience = 'never'\n", "patience"),
        ("[train]\nepochs = 'none'\n", "epochs"),  # not optional
        ("[train]\ntta = 'flip'\n", "belongs in [input]"),
        ("[train]\nloss = 'nope'\n", "loss 'nope'"),
        ("[input]\ntta = 'spin'\n", "tta 'spin'"),
        ("[input]\npreprocess = [ { kind = 'blur' } ]\n", "unknown preprocessing kind 'blur'"),
        ("[input]\npreprocess = [ { kind = 'crop', frac = 0.5 } ]\n", "frac"),
        ("[input]\nimage_size = [0, 4]\n", "image_size"),
        ("[input]\nchannels = 2\n", "channels"),
        ("[recipe]\ntask = 'pairs'\n", "task 'pairs'"),
        ("[train\n", "not valid TOML"),
    ],
)
def test_bad_recipes_are_refused_naming_key_and_file(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert needle in str(e.value) and str(path) in str(e.value)


def test_bad_recipe_at_the_cli_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = _write(tmp_path, "[train]\nepochz = 3\n")
    r = runner.invoke(app, ["train", "--recipe", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.output.startswith("error: unknown key 'epochz'") and "Traceback" not in r.output
    r = runner.invoke(app, ["train", "--recipe", str(tmp_path / "missing.toml"), "--data", str(tmp_path)])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_none_and_types(tmp_path: Path) -> None:
    r = load_recipe(_write(tmp_path, "[train]\nembedding_dim = 'none'\nmargin = 1\nscale = [0.8, 1.2]\ngrad_clip = 'none'\n"))
    assert r.train.embedding_dim is None and r.train.margin == 1 and r.train.scale == (0.8, 1.2) and r.train.grad_clip is None
    assert r.name == "r" and r.task == "classes" and r.input.image_size is None


# ----------------------------------------------------------------------------- train --recipe


def test_flags_given_override_the_recipe_and_only_those(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=4, per_class=4, size=20)
    path = _write(tmp_path, """
[recipe]
name = "mine"
task = "classes"
[input]
image_size = [16, 12]
channels = 1
preprocess = [ { kind = "invert" } ]
tta = "flip"
[train]
encoder_kwargs = { width = 8, depth = 2 }
embedding_dim = 8
margin = 0.35
epochs = 3
steps_per_epoch = 1
batch_size = 8
m_per_class = 2
val_fraction = 0.0
patience = "none"
precision = "fp32"
health = false
""")
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--recipe", str(path), "--data", str(data), "--out", str(out), "--epochs", "1",
                            "--width", "4", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "1x16x12" in r.stdout and "recipe" in r.stdout
    cfg = json.loads((out / "model" / "config.json").read_text())
    tc = cfg["extra"]["train_config"]
    assert tc["epochs"] == 1  # given: overrides
    assert tc["margin"] == 0.35 and tc["embedding_dim"] == 8 and tc["patience"] is None  # not given: the recipe's
    assert tc["encoder_kwargs"] == {"width": 4, "depth": 2}  # merged
    spec = cfg["network"]["input_spec"]
    assert spec["shape"] == [1, 16, 12] and spec["tta"] == "flip" and spec["preprocess"] == [{"kind": "invert"}]
    r = runner.invoke(app, ["train", "--recipe", str(path), "--data", str(data), "--out", str(tmp_path / "r2"),
                            "--tta", "none", "--image-size", "8", "--no-progress", "--epochs", "1"])
    assert r.exit_code == 0, r.output
    spec = json.loads((tmp_path / "r2" / "model" / "config.json").read_text())["network"]["input_spec"]
    assert spec["shape"] == [1, 8, 8] and spec["tta"] is None


def test_signatures_genuine_records_the_signature_step(tmp_path: Path) -> None:
    root = tmp_path / "sigs"
    for w in range(3):
        for kind in ("genuine", "forged"):
            d = root / f"{w}" / kind
            d.mkdir(parents=True)
            for i in range(2):
                a = np.full((30, 60), 250, np.uint8)
                a[8 + i : 18, 5 + 9 * w : 25 + 9 * w] = 10
                Image.fromarray(a, "L").save(d / f"{i}.png")
    r = runner.invoke(app, ["train", "--data", str(root), "--out", str(tmp_path / "run"), "--task", "signatures-genuine",
                            "--image-size", "16,32", "--epochs", "1", "--batch-size", "6", "--m-per-class", "2",
                            "--val-fraction", "0", "--no-progress", "--no-health", "--embedding-dim", "8", "--width", "4"])
    assert r.exit_code == 0, r.output
    spec = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["network"]["input_spec"]
    assert spec["preprocess"][0]["kind"] == "signature" and spec["preprocess"][0]["size"] == [16, 32]


# ----------------------------------------------------------------------------- the input spec


def test_input_spec_round_trip_and_old_files() -> None:
    assert NetworkInputSpec is InputSpec
    old = {"shape": [1, 8, 8], "channels": 1, "height": 8, "width": 8}
    s = InputSpec.from_dict(old)
    assert s.preprocess == () and s.tta is None and s.to_dict() == old  # written as before
    s2 = s.with_recipe([{"kind": "crop", "box": [1, 1, 7, 7]}, {"kind": "invert"}], "shift+flip")
    d = s2.to_dict()
    assert d["version"] == 2 and d["tta"] == "shift+flip" and [p["kind"] for p in d["preprocess"]] == ["crop", "invert"]
    assert InputSpec.from_dict(json.loads(json.dumps(d))) == s2
    with pytest.raises(ValueError, match="version 3"):
        InputSpec.from_dict({**d, "version": 3})
    with pytest.raises(ValueError, match="tta"):
        InputSpec.from_dict({**d, "tta": "rotate"})


def test_registry() -> None:
    assert {"crop", "invert", "signature"} <= set(preprocess_kinds())

    class NoMethods:
        pass

    with pytest.raises(ValueError, match="lacks"):
        register_preprocess("x-none", NoMethods)
    with pytest.raises(ValueError, match="already registered"):
        register_preprocess("crop", Invert)
    with pytest.raises(ValueError, match="unknown preprocessing kind"):
        step_from_dict({"kind": "nope"})
    with pytest.raises(ValueError, match="kind"):
        step_from_dict([1, 2])  # type: ignore[arg-type]


def _grey(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a.astype(np.uint8), "L")


def test_crop_and_invert_against_numpy() -> None:
    a = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    np.testing.assert_array_equal(np.asarray(Crop(box=(2, 3, 9, 10))(_grey(a))), a[3:10, 2:9])
    np.testing.assert_array_equal(np.asarray(Crop(size=(4, 6))(_grey(a))), a[4:8, 7:13])
    np.testing.assert_array_equal(np.asarray(Crop(fraction=0.5)(_grey(a))), a[3:9, 5:15])
    # padding a 12x20 frame to the aspect 1:1 adds 4 rows above and below, filled
    p = np.asarray(Crop(pad_to=(10, 10), fill=7)(_grey(a)))
    assert p.shape == (20, 20) and (p[:4] == 7).all() and (p[16:] == 7).all()
    np.testing.assert_array_equal(p[4:16], a)
    np.testing.assert_array_equal(np.asarray(Invert()(_grey(a))), 255 - a)
    assert Crop.from_dict(Crop(box=(0, 0, 4, 4), pad_to=(2, 3)).to_dict()) == Crop(box=(0, 0, 4, 4), pad_to=(2, 3))
    with pytest.raises(ValueError, match="box"):
        Crop(box=(5, 0, 2, 4))
    with pytest.raises(ValueError, match="fraction"):
        Crop(fraction=0.0)
    with pytest.raises(ValueError, match="pad_to"):
        Crop(pad_to=(0, 3))


def test_embed_all_takes_the_models_tta() -> None:
    torch.manual_seed(0)
    net = build_network(TrainConfig(encoder_kwargs={"width": 4, "depth": 2}, embedding_dim=8, tta="flip"), (1, 8, 8)).eval()
    assert net.input_spec.tta == "flip"
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        slow = torch.nn.functional.normalize((net.embed(x) + net.embed(x.flip(-1))) / 2, dim=1)
    assert torch.allclose(embed_all(net, x), slow, atol=1e-6)
    assert torch.allclose(embed_all(net, x, tta=None), net.embed(x).detach(), atol=1e-6)
    assert torch.allclose(embed_all(net, x, tta="none"), net.embed(x).detach(), atol=1e-6)


def test_model_file_with_an_unknown_step_is_a_model_file_error(tmp_path: Path) -> None:
    from siamkit.errors import ModelFileError
    from siamkit.io import load_model, save_model

    torch.manual_seed(0)
    net = build_network(TrainConfig(encoder_kwargs={"width": 4, "depth": 2}, embedding_dim=8, preprocess=[{"kind": "invert"}]), (1, 8, 8))
    folder = save_model(net, tmp_path / "m")
    assert [type(s) for s in load_model(folder).input_spec.preprocess] == [Invert]
    cfg = json.loads((folder / "config.json").read_text())
    cfg["network"]["input_spec"]["preprocess"] = [{"kind": "warp"}]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="warp"):
        load_model(folder)
