"""Explicit splits (split.json, --val-data, --val-classes, the overlap refusal), the
evaluate options (--no-baseline, --n-way/--k-shot) and the signature layout refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ..conftest import make_image_folder
from .test_cli import assert_clean_error, run

FAST = ["--epochs", "1", "--batch-size", "8", "--m-per-class", "2", "--no-progress"]


def _renamed(folder: Path, prefix: str) -> Path:
    for d in sorted(folder.iterdir()):
        d.rename(folder / f"{prefix}{d.name}")
    return folder


def test_train_records_the_classes_it_holds_out(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=6, per_class=4)
    out = tmp_path / "run"
    r = run("train", "--data", data, "--out", out, *FAST, "--val-fraction", "0.34")
    assert r.exit_code == 0, r.output
    split = json.loads((out / "split.json").read_text())
    assert len(split["val_classes"]) == 2 and len(split["train_classes"]) == 4
    assert sorted(split["val_classes"] + split["train_classes"]) == [f"class{i}" for i in range(6)]
    assert "validating on 2" in r.stdout and "split.json" in r.stdout
    # the record drives the run: validation ran (a val metric in the log)
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert "val_roc_auc" in rec


def test_val_classes_file_and_val_data(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=5, per_class=4)
    names = tmp_path / "val.txt"
    names.write_text("class1\nclass3\n")
    out = tmp_path / "run"
    r = run("train", "--data", data, "--out", out, *FAST, "--val-classes", names)
    assert r.exit_code == 0, r.output
    split = json.loads((out / "split.json").read_text())
    assert split["val_classes"] == ["class1", "class3"]
    assert split["train_classes"] == ["class0", "class2", "class4"]
    # a separate validation folder: nothing held out from --data
    val = _renamed(make_image_folder(tmp_path / "val", classes=3, per_class=4, seed=1), "v")
    out2 = tmp_path / "run2"
    r = run("train", "--data", data, "--out", out2, *FAST, "--val-data", val)
    assert r.exit_code == 0, r.output
    split = json.loads((out2 / "split.json").read_text())
    assert split["train_classes"] == [f"class{i}" for i in range(5)]
    assert split["val_classes"] == ["vclass0", "vclass1", "vclass2"]
    # bad input
    names.write_text("class1\nnope\n")
    assert_clean_error(run("train", "--data", data, "--out", tmp_path / "r3", *FAST, "--val-classes", names), "nope")
    assert_clean_error(run("train", "--data", data, "--out", tmp_path / "r4", *FAST, "--val-data", data), "shares")


def test_evaluate_refuses_training_classes_unless_allowed(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=5, per_class=4)
    out = tmp_path / "run"
    assert run("train", "--data", data, "--out", out, *FAST, "--val-fraction", "0").exit_code == 0
    test = make_image_folder(tmp_path / "test", classes=3, per_class=4, seed=3)  # class0..2: trained on
    r = run("evaluate", out / "model", "--data", test, "--out", tmp_path / "rep")
    assert r.exit_code == 2
    assert_clean_error(r, "3 of the 3 classes", "trained on", "--allow-overlap")
    assert not (tmp_path / "rep").exists()
    # the run folder named explicitly: the same refusal for a model copied elsewhere
    shutil.copytree(out / "model", tmp_path / "elsewhere")
    assert run("evaluate", tmp_path / "elsewhere", "--data", test, "--out", tmp_path / "rep").exit_code == 0
    assert_clean_error(run("evaluate", tmp_path / "elsewhere", "--data", test, "--train-run", out), "trained on")
    # --allow-overlap: scored, and said loudly in the output and the report
    r = run("evaluate", out / "model", "--data", test, "--out", tmp_path / "rep2", "--allow-overlap")
    assert r.exit_code == 0, r.output
    assert "WARNING" in r.output and "trained on" in r.output
    m = json.loads((tmp_path / "rep2" / "metrics.json").read_text())
    assert m["split"]["overlapping_classes"] == ["class0", "class1", "class2"]
    assert "OVERLAP" in m["title"]
    assert "WARNING" in (tmp_path / "rep2" / "report.md").read_text()
    # class-disjoint test folder: accepted, and the report says it was checked
    disjoint = _renamed(make_image_folder(tmp_path / "t2", classes=3, per_class=4, seed=4), "new")
    r = run("evaluate", out / "model", "--data", disjoint, "--out", tmp_path / "rep3")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "rep3" / "metrics.json").read_text())
    assert m["split"]["class_overlap"].startswith("none")


def test_evaluate_no_baseline_and_n_way_k_shot(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=4, per_class=4)
    out = tmp_path / "run"
    assert run("train", "--data", data, "--out", out, *FAST, "--val-fraction", "0").exit_code == 0
    test = _renamed(make_image_folder(tmp_path / "test", classes=6, per_class=4, seed=2), "t")
    r = run("evaluate", out / "model", "--data", test, "--out", tmp_path / "rep", "--no-baseline", "--n-way", "6", "--k-shot", "2")
    assert r.exit_code == 0, r.output
    assert "not computed (--no-baseline)" in r.stdout and "6 way 2 shot" in r.stdout
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert "baseline" not in m and "baseline_accuracy" not in m["6_way_2_shot"]
    assert m["split"]["baseline"] == "not computed (--no-baseline)"
    assert m["split"]["episodes"] == {"n_way": [6], "k_shot": 2, "queries_per_class": 1, "episodes": 1000}
    r = run("evaluate", out / "model", "--data", test, "--out", tmp_path / "rep2")
    m = json.loads((tmp_path / "rep2" / "metrics.json").read_text())
    assert "baseline" in m and "baseline_accuracy" in m["5_way_1_shot"]
    assert_clean_error(run("evaluate", out / "model", "--data", test, "--n-way", "7"), "--n-way 7", "6 classes")
    assert_clean_error(run("evaluate", out / "model", "--data", test, "--k-shot", "0"), "--k-shot")


def _signature_layout(root: Path, writers: int = 4, genuine: int = 4, forged: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for w in range(writers):
        for kind, n in (("genuine", genuine), ("forged", forged)):
            d = root / f"{w + 1:02d}" / kind
            d.mkdir(parents=True)
            for i in range(n):
                a = np.full((30, 60), 255, np.uint8)
                a[10:20, 5 + 8 * w : 20 + 8 * w] = rng.integers(0, 60)
                Image.fromarray(a, "L").save(d / f"{i}.png")
    return root


def test_signature_layout_is_refused_not_merged(tmp_path: Path) -> None:
    sigs = _signature_layout(tmp_path / "sigs")
    r = run("train", "--data", sigs, "--out", tmp_path / "run", *FAST)
    assert r.exit_code == 2
    assert_clean_error(r, "signature layout", "genuine", "forged", "--task signatures-genuine", "load_signatures")
    data = make_image_folder(tmp_path / "data", classes=4, per_class=4)
    assert run("train", "--data", data, "--out", tmp_path / "run0", *FAST, "--val-fraction", "0").exit_code == 0
    assert_clean_error(run("evaluate", tmp_path / "run0" / "model", "--data", sigs, "--out", tmp_path / "rep"), "signature layout")
    # genuine signatures only: one class per writer, no forgery loaded
    r = run("train", "--data", sigs, "--out", tmp_path / "run1", *FAST, "--val-fraction", "0",
            "--task", "signatures-genuine", "--image-size", "20,40")
    assert r.exit_code == 0, r.output
    assert "16 images of 4 classes, 1x20x40" in r.stdout
    assert json.loads((tmp_path / "run1" / "split.json").read_text())["train_classes"] == ["01", "02", "03", "04"]
