"""``siamkit demo`` (Omniglot one-shot) end to end on a tiny budget, and its bad options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from siamkit.calibration import Calibrator
from siamkit.cli import app
from siamkit.demo import omniglot_demo_config
from siamkit.errors import DataError
from siamkit.io import load_model

runner = CliRunner()


def run(*args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, word: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], result.output
    assert "Traceback" not in result.output


def test_demo_writes_the_whole_report(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    r = run("demo", "--out", out, "--steps", "3", "--no-progress")
    assert r.exit_code == 0, r.output
    for f in ("README.md", "metrics.json", "example.png", "roc.png", "distances.png", "embeddings.png",
              "model/config.json", "model/model.safetensors", "model/calibration.json"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    m = json.loads((out / "metrics.json").read_text())
    for side in ("model", "baseline"):
        for key in ("roc_auc", "eer", "one_shot_accuracy", "one_shot_ci95", "five_way_accuracy", "five_way_ci95", "official_20way"):
            assert 0.0 <= m[side][key] <= 1.0, (side, key)
    # raw pixels on this protocol, as measured from the PNGs (docs/benchmarks.md: 0.2125 official, ~0.23 random 20-way)
    assert abs(m["baseline"]["official_20way"] - 0.21) < 0.03
    assert 0.19 < m["baseline"]["one_shot_accuracy"] < 0.28
    assert m["baseline"]["five_way_accuracy"] > m["baseline"]["one_shot_accuracy"]
    assert m["train_steps"] == 3 and m["test_images"] == 13180
    # the gallery tour: 5 enrolled, 6 probes, the last one never enrolled
    g = m["gallery"]
    assert g["enrolled"] == 5 and len(g["probes"]) == 6
    assert [p["enrolled"] for p in g["probes"]] == [True] * 5 + [False]
    assert all(p["decision"] is not None for p in g["probes"])
    ex = m["example"]
    assert len(ex["scores"]) == 20 and ex["correct"] == (ex["pick"] == ex["answer"])
    # the saved model and its calibration load, tied together by the fingerprint
    net = load_model(out / "model")
    cal = Calibrator.load(out / "model", expected_fingerprint=net.fingerprint)
    assert cal is not None and cal.threshold_ == pytest.approx(m["calibration"]["threshold"])
    assert cal.model_fingerprint_ == net.fingerprint is not None  # tied to these weights
    assert "20-way 1-shot" in r.output and "raw pixels" in r.output


@pytest.mark.parametrize(
    "args, word",
    [
        (["--dataset", "mnist"], "--dataset"),
        (["--steps", "0"], "steps"),
        (["--minutes", "-1"], "minutes"),
        (["--minutes", "nan"], "minutes"),
        (["--steps", "5", "--minutes", "1"], "not both"),
        (["--epochs", "3"], "--epochs"),
        (["--dataset", "digits", "--steps", "5"], "--steps"),
        (["--dataset", "digits", "--epochs", "0"], "--epochs"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], word: str) -> None:
    assert_clean_error(run("demo", "--out", tmp_path / "rep", *args), word)


def test_recipe_lives_in_one_function() -> None:
    cfg = omniglot_demo_config(steps=7, seed=3)
    assert cfg.steps_per_epoch == 7 and cfg.epochs == 1 and cfg.seed == 3 and cfg.val_fraction == 0.0
    with pytest.raises(DataError):
        from siamkit.demo import run_omniglot_demo

        run_omniglot_demo("unused", steps=1, minutes=1.0)


def test_steps_for_minutes_scales_with_the_budget() -> None:
    from siamkit.data import load_omniglot_compact
    from siamkit.demo import steps_for_minutes

    ds = load_omniglot_compact("background", alphabets=["Korean"])
    cfg = omniglot_demo_config(steps=1, seed=0, progress=False)
    cfg = type(cfg).from_dict({**cfg.to_dict(), "batch_size": 16, "m_per_class": 2})
    tiny = steps_for_minutes(ds.images, ds.labels, cfg, 1e-4, probe_steps=2)  # less than the probe itself took
    assert tiny == 1
    some = steps_for_minutes(ds.images, ds.labels, cfg, 0.5, probe_steps=2)
    assert some > 10
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(DataError, match="minutes"):
            steps_for_minutes(ds.images, ds.labels, cfg, bad)
