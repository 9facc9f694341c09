"""``siamkit train`` prints each epoch's health line, writes training.png, and ends a
diverged run with one error line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siamkit.errors import TrainingDivergedError

from ..conftest import make_image_folder
from .test_cli import FAST, assert_clean_error, run


def test_train_prints_a_health_line_per_epoch_and_plots(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=4, per_class=6)
    r = run("train", "--data", data, "--out", tmp_path / "run", *FAST)
    assert r.exit_code == 0, r.output
    lines = [l for l in r.stdout.splitlines() if l.startswith("epoch ")]
    assert len(lines) == 2 and all("std " in l and "rank " in l and "grad " in l for l in lines), r.stdout
    assert (tmp_path / "run" / "training.png").is_file()
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("health" in h and "alarms" in h for h in records)


def test_no_health_turns_it_off(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=4, per_class=6)
    r = run("train", "--data", data, "--out", tmp_path / "run", *FAST, "--no-health")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "run" / "training.png").exists()
    assert "health" not in json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])


def test_a_diverged_run_is_one_error_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import siamkit.training as training

    def diverge(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise TrainingDivergedError("the loss became nan at epoch 2, step 3; lower the learning rate (--lr)")

    monkeypatch.setattr(training, "fit", diverge)
    data = make_image_folder(tmp_path / "data", classes=4, per_class=6)
    r = run("train", "--data", data, "--out", tmp_path / "run", *FAST)
    assert r.exit_code == 2
    assert_clean_error(r, "epoch 2, step 3")
