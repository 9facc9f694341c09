"""The candidate recipe files of bench/recipes parse into a TrainConfig and known input steps."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from siamkit.data.illumination import IlluminationNorm
from siamkit.training import TrainConfig

RECIPES = sorted((Path(__file__).resolve().parents[2] / "bench" / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_file_parses(path):
    d = tomllib.loads(path.read_text())
    assert set(d) - {"protocol"} == {"recipe", "input", "train"}
    protocol = d.get("protocol", {})  # bench_generalisation's per-fold protocol: an ensemble, training on val too
    assert set(protocol) <= {"ensemble", "train_on_val"}
    assert isinstance(protocol.get("ensemble", 1), int) and protocol.get("ensemble", 1) >= 1
    assert isinstance(protocol.get("train_on_val", False), bool)
    assert d["recipe"]["task"] == "classes" and d["recipe"]["name"]
    TrainConfig(**d["train"])
    h, w = d["input"]["image_size"]
    assert h > 0 and w > 0 and d["input"]["channels"] == 1
    assert d["input"]["tta"] in ("none", "flip", "shift+flip")
    for step in d["input"]["preprocess"]:
        assert step["kind"] == "illumination"
        IlluminationNorm.from_dict(step)


def test_the_robust_recipe_is_the_faces_recipe_with_illumination_normalisation():
    d = tomllib.loads(next(p for p in RECIPES if p.name == "faces_robust.toml").read_text())
    assert d["recipe"]["name"] == "faces"
    assert [s["kind"] for s in d["input"]["preprocess"]] == ["illumination"]
