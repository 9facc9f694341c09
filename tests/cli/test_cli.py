from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from siamkit.cli import app

from ..conftest import make_image_folder

runner = CliRunner()

FAST = ["--epochs", "2", "--batch-size", "8", "--m-per-class", "2", "--no-progress", "--val-fraction", "0"]


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code != 0, result.output
    err = result.stderr if hasattr(result, "stderr") else result.output
    assert "Traceback" not in err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


def test_train_compare_summary_end_to_end(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=4, per_class=6)
    out = tmp_path / "run"
    r = run("train", "--data", data, "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    assert (out / "model" / "config.json").is_file()
    assert (out / "model" / "model.safetensors").is_file()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    assert (out / "checkpoint" / "trainer.json").is_file()

    a, b = data / "class0" / "0.png", data / "class0" / "1.png"
    r = run("compare", out / "model", a, b, "--json")
    assert r.exit_code == 0, r.output
    same = json.loads(r.stdout)
    r = run("compare", out / "model", a, data / "class3" / "0.png", "--json")
    diff = json.loads(r.stdout)
    assert same["distance"] >= 0 and 0 < same["score"] <= 1
    assert same["distance"] < diff["distance"]  # a trained model separates the squares
    assert same["score"] > diff["score"]

    r = run("summary", out / "model")
    assert r.exit_code == 0, r.output
    assert "Total params" in r.stdout and "Conv2d" in r.stdout


def test_summary_encoder_name_counts_parameters() -> None:
    r = run("summary", "conv4", "--input-shape", "1,28,28")
    assert r.exit_code == 0, r.output
    # conv4 at 28x28: 1*64*9 + 3*64*64*9 conv weights (no bias) + 4*128 BN = 111,680
    assert "Total params: 111,680" in r.stdout
    assert "[-1, 64]" in r.stdout


def test_resume_requires_checkpoint(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    r = run("train", "--data", data, "--out", tmp_path / "nothing", "--resume")
    assert_clean_error(r, "no checkpoint")


def test_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    assert run("train", "--data", data, "--out", out, *FAST).exit_code == 0
    assert_clean_error(run("train", "--data", data, "--out", out, *FAST), "--resume")


def test_cli_resume_continues(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    assert run("train", "--data", data, "--out", out, *FAST).exit_code == 0
    r = run("train", "--data", data, "--out", out, "--resume")
    assert r.exit_code == 0, r.output  # nothing left to do: 2 of 2 epochs are done
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


# ---- bad input: one clear line, non-zero exit, no traceback ----


def test_missing_directory(tmp_path: Path) -> None:
    assert_clean_error(run("train", "--data", tmp_path / "nope", "--out", tmp_path / "o", *FAST), "does not exist")


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_clean_error(run("train", "--data", tmp_path / "empty", "--out", tmp_path / "o", *FAST), "no class sub-folders")


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "notes.txt").write_text("hi")
    assert_clean_error(run("train", "--data", tmp_path / "d", "--out", tmp_path / "o", *FAST), "no images")


def test_class_with_one_image(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=3, per_class=4)
    for p in list((data / "class1").iterdir())[1:]:
        p.unlink()
    assert_clean_error(run("train", "--data", data, "--out", tmp_path / "o", *FAST), "class1", "fewer than 2")


def test_corrupt_image(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    bad = data / "class2" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert_clean_error(run("train", "--data", data, "--out", tmp_path / "o", *FAST), "broken.png")


def test_corrupt_image_truncated(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    good = (data / "class0" / "0.png").read_bytes()
    (data / "class0" / "trunc.png").write_bytes(good[: len(good) // 2])
    assert_clean_error(run("train", "--data", data, "--out", tmp_path / "o", *FAST), "trunc.png")


def test_mixed_channel_counts(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    Image.new("RGB", (20, 20), (200, 10, 10)).save(data / "class0" / "colour.png")
    assert_clean_error(run("train", "--data", data, "--out", tmp_path / "o", *FAST), "mixes", "--channels")
    # choosing the channel count explicitly makes it work
    assert run("train", "--data", data, "--out", tmp_path / "o", "--channels", "1", *FAST).exit_code == 0


def test_resume_with_other_channel_count(tmp_path: Path) -> None:
    grey = make_image_folder(tmp_path / "grey")
    out = tmp_path / "run"
    assert run("train", "--data", grey, "--out", out, *FAST).exit_code == 0
    model = out / "model"
    rgb_img = tmp_path / "c.png"
    Image.new("RGB", (20, 20), (1, 2, 3)).save(rgb_img)
    # a colour image against a grey model is converted, as the model was trained
    assert run("compare", model, rgb_img, grey / "class0" / "0.png").exit_code == 0


def test_single_class(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=1, per_class=6)
    assert_clean_error(run("train", "--data", data, "--out", tmp_path / "o", *FAST), "single class")


def test_bad_option_values(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    assert_clean_error(run("train", "--data", data, "--out", tmp_path / "o", "--loss", "hinge"), "loss")
    assert_clean_error(run("train", "--data", data, "--out", tmp_path / "o", "--encoder", "vgg"), "unknown encoder")
    assert_clean_error(run("train", "--data", data, "--out", tmp_path / "o", "--batch-size", "10", "--m-per-class", "4"), "multiple")


def test_compare_bad_model_and_image(tmp_path: Path) -> None:
    assert_clean_error(run("compare", tmp_path / "nomodel", tmp_path / "a.png", tmp_path / "b.png"), "does not exist")
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"format": "siamkit-model", "format_version": 99, "siamkit_version": "9.0"}))
    assert_clean_error(run("compare", d, tmp_path / "a.png", tmp_path / "b.png"), "format 99")


def test_summary_bad_input() -> None:
    assert_clean_error(run("summary", "vgg16", "--input-shape", "1,28,28"), "neither")
    assert_clean_error(run("summary", "conv4", "--input-shape", "a,b"), "input-shape")


def test_real_process_has_no_traceback(tmp_path: Path) -> None:
    """The installed command, in its own process: one line on stderr, exit code 2."""
    p = subprocess.run(
        [sys.executable, "-m", "siamkit.cli", "train", "--data", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 2
    assert p.stderr.strip().startswith("error: ") and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_demo_command(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = run("demo", "--dataset", "digits", "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"]["roc_auc"] > m["baseline"]["roc_auc"]
    assert m["model"]["one_shot_accuracy"] > m["baseline"]["one_shot_accuracy"]
    for f in ("roc.png", "distances.png", "embeddings.png", "model/config.json"):
        assert (out / f).is_file(), f


def test_calibrate_then_evaluate_and_compare(tmp_path: Path) -> None:
    tr = make_image_folder(tmp_path / "tr", classes=6, per_class=6)
    va = make_image_folder(tmp_path / "va", classes=4, per_class=6, seed=1)
    te = make_image_folder(tmp_path / "te", classes=6, per_class=5, seed=2)
    out = tmp_path / "run"
    assert run("train", "--data", tr, "--out", out, *FAST).exit_code == 0
    model = out / "model"
    # before calibration: no decision
    r = run("compare", model, te / "class0" / "0.png", te / "class0" / "1.png", "--json")
    assert json.loads(r.stdout)["same"] is None
    r = run("calibrate", model, "--data", va, "--method", "accuracy", "--confidence", "isotonic")
    assert r.exit_code == 0, r.output
    cal = json.loads((model / "calibration.json").read_text())
    assert cal["fitted_on"] == str(va.resolve())
    # reporting on the calibration split is refused
    assert_clean_error(run("evaluate", model, "--data", va, "--out", tmp_path / "rep0"), "fitted on")
    # te's classes are tr's (same names, same generator): refused unless --allow-overlap
    assert_clean_error(run("evaluate", model, "--data", te, "--out", tmp_path / "rep"), "trained on")
    r = run("evaluate", model, "--data", te, "--out", tmp_path / "rep", "--allow-overlap")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["at_threshold"]["threshold"] == cal["threshold"]
    assert "calibration fitted on" in m["at_threshold"]["source"]
    assert m["split"]["data"] == str(te.resolve())
    assert m["verification"]["num_positive"] == 6 * 10 and m["verification"]["num_negative"] == 15 * 25
    assert "5_way_1_shot" in m and "retrieval" in m and "baseline" in m
    for f in ("report.md", "roc.png", "det.png", "distances.png", "confusion.png", "embeddings.png"):
        assert (tmp_path / "rep" / f).is_file(), f
    r = run("compare", model, te / "class0" / "0.png", te / "class0" / "1.png", "--json")
    res = json.loads(r.stdout)
    assert res["threshold"] == cal["threshold"] and res["same"] == (res["distance"] <= cal["threshold"])
    assert 0.0 <= res["confidence"] <= 1.0
    # a calibration from another model's weights is refused
    other = tmp_path / "run2"
    assert run("train", "--data", tr, "--out", other, *FAST, "--seed", "5").exit_code == 0
    (other / "model" / "calibration.json").write_text((model / "calibration.json").read_text())
    assert_clean_error(run("compare", other / "model", te / "class0" / "0.png", te / "class0" / "1.png"), "not for this model")


def test_evaluate_pair_csv(tmp_path: Path) -> None:
    tr = make_image_folder(tmp_path / "tr", classes=4, per_class=6)
    out = tmp_path / "run"
    assert run("train", "--data", tr, "--out", out, *FAST).exit_code == 0
    csv = tmp_path / "pairs.csv"
    csv.write_text("path_a,path_b,same\ntr/class0/0.png,tr/class0/1.png,1\ntr/class0/0.png,tr/class1/0.png,0\n"
                   "tr/class2/0.png,tr/class2/3.png,1\ntr/class3/0.png,tr/class1/2.png,0\n")
    r = run("evaluate", out / "model", "--data", csv, "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["verification"]["num_pairs"] == 4


def test_cli_resume_after_interruption_with_progress_flag(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    args = ["--epochs", "3", "--batch-size", "8", "--m-per-class", "2", "--val-fraction", "0"]
    assert run("train", "--data", data, "--out", out, *args, "--no-progress").exit_code == 0
    # a display-only flag may differ on resume (any option that changes the result may not)
    r = run("train", "--data", data, "--out", out, "--resume", "--progress")
    assert r.exit_code == 0, r.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]
