"""train --task signatures --val-data DIR: validation on the genuine vs skilled forgery pairs
of held-out writers given as their own folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ..conftest import make_image_folder
from .test_cli import assert_clean_error, run
from .test_signature_task import FAST, cedar_like


def test_train_signatures_with_a_validation_folder(tmp_path: Path) -> None:
    from siamkit.data.signatures import load_signatures
    from siamkit.evaluation.signatures import signature_validator
    from siamkit.io import load_model

    data = cedar_like(tmp_path / "train", range(1, 6))
    val = cedar_like(tmp_path / "val", range(10, 13), prefix="v", seed=3)
    out = tmp_path / "run"
    r = run("train", "--task", "signatures", "--data", data, "--val-data", val, "--out", out, *FAST, "--precision", "fp32")
    assert r.exit_code == 0, r.output
    assert "training on 5 classes, validating on 3 (--val-data" in r.stdout
    split = json.loads((out / "split.json").read_text())
    assert split["val_classes"] == ["v10", "v11", "v12"] and split["val_data"] == str(val.resolve())
    assert split["train_classes"] == [f"w{i:02d}" for i in range(1, 6)]
    # the epoch's validation score = genuine-genuine vs genuine-forgery pairs of the 3 folders' writers
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    net = load_model(out / "model")
    sigs = load_signatures(val, image_size=net.input_spec.image_size, require_forged=True, preprocess=net.input_spec.preprocessor())
    assert int((~sigs.is_genuine).sum()) == 12  # the forgeries are what validation scores against
    want = signature_validator(sigs)(net, precision="fp32")
    assert logged["val_roc_auc"] == pytest.approx(want["val_roc_auc"], abs=1e-6)
    assert logged["val_eer"] == pytest.approx(want["val_eer"], abs=1e-6)

    # a validation writer that was trained on, and a validation folder that is not the layout: one clear line
    shutil.copytree(data / "w02", val / "w02")
    assert_clean_error(run("train", "--task", "signatures", "--data", data, "--val-data", val, "--out", tmp_path / "r2", *FAST),
                       "shares", "w02")
    classes = make_image_folder(tmp_path / "classes", classes=3, per_class=3)
    assert_clean_error(run("train", "--task", "signatures", "--data", data, "--val-data", classes, "--out", tmp_path / "r3", *FAST),
                       "genuine")
