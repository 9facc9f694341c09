"""siamkit train --task text, compare and evaluate on text models (from-scratch word
twin; pretrained tiny BERT with a calibrated threshold for binary pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from siamkit.cli import app
from tests.cli.test_cli import assert_clean_error
from tests.text.conftest import PAIRS

runner = CliRunner()


def run(*args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


def _csv(path: Path, binary: bool) -> Path:
    head = "text_a,text_b,same" if binary else "text_a,text_b,score"
    rows = [f"{a},{b},{int(s > 2) if binary else s}" for a, b, s in PAIRS * 4]
    path.write_text("\n".join([head, *rows]) + "\n")
    return path


def test_scratch_twin_train_compare_evaluate(tmp_path):
    data = _csv(tmp_path / "p.csv", binary=False)
    out = tmp_path / "run"
    r = run("train", "--task", "text", "--data", data, "--out", out, "--epochs", "3", "--batch-size", "8", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "graded training pairs" in r.output and "epoch 3" in r.output
    rec = json.loads((out / "train_text.json").read_text())
    assert rec["train"]["epochs"] == 3 and rec["train"]["lr"] == 1e-3  # text default, not the image one
    r = run("compare", out / "model", "a man is playing guitar", "a man is playing piano", "--json")
    assert r.exit_code == 0, r.output
    sim = json.loads(r.output)["similarity"]
    assert -1 <= sim <= 1
    r = run("evaluate", out / "model", "--data", data, "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert set(m) >= {"pearson", "spearman", "n"} and m["n"] == len(PAIRS) * 4
    r = run("train", "--task", "text", "--data", data, "--out", out)
    assert_clean_error(r, "already holds a model")


def test_pretrained_binary_pairs_get_a_threshold_from_validation(tiny_bert, tmp_path):
    data = _csv(tmp_path / "b.csv", binary=True)
    out = tmp_path / "run"
    r = run("train", "--task", "text", "--data", data, "--out", out, "--pretrained", tiny_bert, "--epochs", "2",
            "--batch-size", "8", "--val-fraction", "0.25", "--lr", "1e-3", "--max-length", "16")
    assert r.exit_code == 0, r.output
    cal = json.loads((out / "model" / "calibration.json").read_text())
    assert cal["fitted_on"] == "validation"
    r = run("compare", out / "model", "a man is playing guitar", "a man is playing guitar", "--json")
    got = json.loads(r.output)
    assert got["same"] is True and got["similarity"] == pytest.approx(1.0, abs=1e-5)
    r = run("evaluate", out / "model", "--data", data, "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert {"roc_auc", "accuracy", "f1", "threshold"} <= set(m)
    assert m["threshold"] == pytest.approx(cal["threshold"])


@pytest.mark.parametrize("args,words", [
    (["--data", "missing.csv"], ["does not exist"]),
    (["--data", "BAD", "--encoder", "conv4"], ["rnn or transformer_seq"]),
    (["--data", "BIN", "--val-fraction", "0"], ["validation split"]),
    (["--data", "P", "--pretrained", "no/such/model"], ["cannot load"]),
])
def test_bad_text_training_input_is_one_error_line(tmp_path, monkeypatch, args, words):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "BAD", binary=False)
    _csv(tmp_path / "BIN", binary=True)
    _csv(tmp_path / "P", binary=False)
    r = run("train", "--task", "text", "--out", tmp_path / "o", *args)
    assert_clean_error(r, *words)


def test_text_recipe_runs_with_train_recipe(tiny_bert, tmp_path):
    """`siamkit train --recipe sts`: the shipped text recipe, its options under the flags given."""
    from siamkit.errors import RecipeError
    from siamkit.training.recipes import list_recipes, load_recipe, load_text_recipe

    r = load_text_recipe("sts")
    assert (r.max_length, r.pretrained, r.train["loss"], r.train["warmup"]) == (128, "sentence-transformers/all-MiniLM-L6-v2", "cosent", 0.1)
    assert "sts" not in {x.name for x in list_recipes()}  # the image recipes' list stays TrainConfig recipes
    with pytest.raises(RecipeError, match="text recipe"):
        load_recipe("sts")
    data = _csv(tmp_path / "p.csv", binary=False)
    out = tmp_path / "run"
    res = run("train", "--recipe", "sts", "--data", data, "--out", out, "--pretrained", tiny_bert, "--epochs", "1",
              "--batch-size", "8", "--max-length", "16", "--no-progress")
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "train_text.json").read_text())
    assert rec["train"]["epochs"] == 1 and rec["train"]["weight_decay"] == 0.01 and rec["train"]["loss"] == "cosent"
    assert rec["train"]["lr"] == 4e-5  # the recipe's, not the from-scratch default
    assert rec["train"]["eval_every"] is None  # trained as the cross-validation folds were: no dev split, last step
    assert "0 validation pairs" in res.output and "carving" not in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[recipe]\nname = "x"\ntask = "text"\n[train]\nbogus = 1\n')
    res = run("train", "--recipe", bad, "--data", data, "--out", tmp_path / "r2")
    assert_clean_error(res, "unknown key 'bogus'")


@pytest.mark.parametrize("name,encoder", [("sts-gru", "rnn"), ("sts-transformer", "transformer_seq")])
def test_scratch_recipes_build_their_twin_and_export(name, encoder, tmp_path):
    """`siamkit train --recipe sts-gru|sts-transformer`: the recipe's encoder_options reach the
    twin (bag residual, idf init, hashed unseen words), and the model exports to ONNX."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    from siamkit.export.seq_runtime import OnnxWordEncoder
    from siamkit.text import TextTwin
    from siamkit.training.recipes import load_text_recipe

    r = load_text_recipe(name)
    assert r.pretrained is None and r.train["encoder"] == encoder and r.train["validation"] == "dev"
    assert r.train["encoder_options"]["embedding_init"] == "idf" and r.train["encoder_options"]["hash_buckets"] > 0
    data = _csv(tmp_path / "p.csv", binary=False)
    out = tmp_path / "run"
    res = run("train", "--recipe", name, "--data", data, "--out", out, "--epochs", "1", "--batch-size", "8",
              "--embedding-dim", "16", "--no-progress")
    assert res.exit_code == 0, res.output
    twin = TextTwin.load(out / "model")
    enc = twin.network.encoder
    assert enc.bag and enc.token_dropout == r.train["encoder_options"]["token_dropout"]
    assert twin.tokenizer.hash_buckets == r.train["encoder_options"]["hash_buckets"]
    assert enc.encoder_name == encoder and twin.network.embedding_dim == 16
    res = run("export", out / "model", "--format", "onnx", "--out", tmp_path / "onnx")
    assert res.exit_code == 0, res.output
    texts = ["a man is playing guitar", "Zyxwv unseen Qwerty"]
    got = OnnxWordEncoder.from_dir(tmp_path / "onnx", threads=1).encode(texts)
    assert abs(got - twin.encode(texts).numpy()).max() < 1e-4


def test_bad_encoder_options_are_one_error_line(tmp_path):
    data = _csv(tmp_path / "p.csv", binary=False)
    bad = tmp_path / "bad.toml"
    bad.write_text('[recipe]\nname = "x"\ntask = "text"\n[train]\nencoder = "rnn"\nencoder_options = { bogus = 1 }\n')
    assert_clean_error(run("train", "--recipe", bad, "--data", data, "--out", tmp_path / "r"), "encoder_options")
    bad.write_text('[recipe]\nname = "x"\ntask = "text"\n[train]\nencoder_options = { embedding_init = "lsa" }\n')
    assert_clean_error(run("train", "--recipe", bad, "--data", data, "--out", tmp_path / "r2"), "embedding_init")
def _damaged_copies(tiny_bert: Path, root: Path) -> dict[str, Path]:
    """Copies of the tiny BERT folder, each damaged one way (the errors transformers raises
    differ: SafetensorError, RuntimeError on a shape mismatch, OSError on bad JSON)."""
    import shutil

    def garbage(f: Path) -> None:
        (f / "model.safetensors").write_bytes(b"\x00not safetensors" * 8)

    def truncated(f: Path) -> None:
        (f / "model.safetensors").write_bytes((tiny_bert / "model.safetensors").read_bytes()[:300])

    def wrong_shape(f: Path) -> None:  # the config says hidden 64, the weights are 32 wide
        cfg = json.loads((tiny_bert / "config.json").read_text())
        cfg.update(hidden_size=64, intermediate_size=128)
        (f / "config.json").write_text(json.dumps(cfg))

    def bad_json(f: Path) -> None:
        (f / "config.json").write_text("{not json")

    out = {}
    for name, damage in (("garbage", garbage), ("truncated", truncated), ("wrong_shape", wrong_shape), ("bad_json", bad_json)):
        out[name] = root / name
        shutil.copytree(tiny_bert, out[name])
        damage(out[name])
    return out


def test_a_damaged_pretrained_folder_is_one_error_line(tiny_bert, tmp_path, monkeypatch):
    """Every way transformers fails to read a damaged folder is a ModelFileError naming it
    in the library, and one `error:` line with exit code 2 at the CLI (never a traceback)."""
    from siamkit.errors import ModelFileError
    from siamkit.text import pretrained_twin

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = _csv(tmp_path / "p.csv", binary=False)
    for name, folder in _damaged_copies(tiny_bert, tmp_path).items():
        with pytest.raises(ModelFileError, match="cannot load the pretrained text model") as e:
            pretrained_twin(str(folder))
        assert name in str(e.value)  # the folder is named
        r = run("train", "--task", "text", "--data", data, "--out", tmp_path / f"o-{name}", "--pretrained", folder,
                "--no-progress")
        assert_clean_error(r, "cannot load the pretrained text model")
        assert not (tmp_path / f"o-{name}" / "model").exists()


def test_a_damaged_text_model_folder_is_one_error_line(tiny_bert, tmp_path):
    """A saved text model whose tokenizer files or transformers config were damaged:
    `compare` / `evaluate` say so in one line (exit 2)."""
    from siamkit.text import pretrained_twin

    data = _csv(tmp_path / "p.csv", binary=False)
    good = tmp_path / "good"
    pretrained_twin(str(tiny_bert), max_length=16).save(good)
    tok = tmp_path / "tok"
    import shutil

    shutil.copytree(good, tok)
    for f in (tok / "tokenizer").iterdir():
        f.write_text("{damaged")
    assert_clean_error(run("compare", tok, "a man", "a woman"), "cannot read the tokenizer")
    arch = tmp_path / "arch"
    shutil.copytree(good, arch)
    cfg = json.loads((arch / "config.json").read_text())
    kwargs = cfg["network"]["encoder"]["kwargs"]
    kwargs["config"]["vocab_size"] = -5  # torch raises RuntimeError (a negative dimension) building it
    (arch / "config.json").write_text(json.dumps(cfg))
    assert_clean_error(run("evaluate", arch, "--data", data, "--out", tmp_path / "rep"), "cannot be built")
