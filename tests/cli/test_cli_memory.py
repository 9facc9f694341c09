"""`siamkit train --cross-batch-memory`: trains with the memory, refuses bad values cleanly."""

from __future__ import annotations

import json
from pathlib import Path

from ..conftest import make_image_folder
from .test_cli import FAST, assert_clean_error, run


def test_train_with_a_cross_batch_memory(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=4, per_class=4, size=12)
    r = run("train", "--data", data, "--out", tmp_path / "run", "--encoder", "mlp", *FAST,
            "--cross-batch-memory", "24", "--memory-warmup", "1")
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert json.dumps(cfg).count('"cross_batch_memory": 24') == 1 and '"memory_warmup": 1' in json.dumps(cfg)


def test_bad_memory_options_are_one_error_line(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=4, per_class=4, size=12)
    r = run("train", "--data", data, "--out", tmp_path / "bad", "--encoder", "mlp", *FAST, "--cross-batch-memory", "-4")
    assert r.exit_code == 2
    assert_clean_error(r, "cross_batch_memory")
    r = run("train", "--data", data, "--out", tmp_path / "bad2", "--encoder", "mlp", *FAST, "--loss", "mnr",
            "--cross-batch-memory", "16")
    assert r.exit_code == 2
    assert_clean_error(r, "triplet or contrastive")
