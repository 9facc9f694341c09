"""Omniglot's two-level layout (GROUP/CLASS) through train and evaluate, rotations as new
classes (a recipe's [data] rotations / --rotations), and evaluate --runs (the official
one-shot runs) with the model's input recipe and TTA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .test_cli import assert_clean_error, run

FAST = ["--epochs", "1", "--batch-size", "8", "--m-per-class", "2", "--no-progress", "--no-health", "--image-size", "16",
        "--val-fraction", "0"]


def omniglot_like(root: Path, alphabets: int = 2, chars: int = 3, drawings: int = 4, seed: int = 0) -> Path:
    """root/ALPHABET/characterNN/XXXX_YY.png: dark strokes on white, one place per character."""
    rng = np.random.default_rng(seed)
    for a in range(alphabets):
        for c in range(chars):
            d = root / f"Alpha{a}" / f"character{c + 1:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(drawings):
                img = np.full((20, 20), 255, np.uint8)
                r0, c0 = 2 + 4 * c + int(rng.integers(0, 2)), 2 + 5 * a + int(rng.integers(0, 2))
                img[r0 : r0 + 3, c0 : c0 + 8] = 0
                Image.fromarray(img, "L").save(d / f"{a * 10 + c:04d}_{i + 1:02d}.png")
    return root


def one_shot_runs(root: Path, source: Path) -> Path:
    """One run: the first drawing of 3 characters as supports, the second as queries."""
    chars = sorted(p for p in source.glob("*/*") if p.is_dir())[:3]
    run_dir = root / "run01"
    lines = []
    for kind in ("training", "test"):
        (run_dir / kind).mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(chars):
        files = sorted(c.iterdir())
        Image.open(files[0]).save(run_dir / "training" / f"class{i + 1:02d}.png")
        Image.open(files[1]).save(run_dir / "test" / f"item{(i + 1) % 3 + 1:02d}.png")
        lines.append(f"run01/test/item{(i + 1) % 3 + 1:02d}.png run01/training/class{i + 1:02d}.png")
    (run_dir / "class_labels.txt").write_text("\n".join(lines) + "\n")
    return root


def test_two_level_folder_is_read_as_group_class(tmp_path: Path) -> None:
    from siamkit.data import load_omniglot
    from siamkit.data.class_rotations import with_rotated_classes
    from siamkit.data.images import ImageFolderDataset, detect_class_depth, layout_note

    root = omniglot_like(tmp_path / "bg")
    assert detect_class_depth(root) == 2 and detect_class_depth(root / "Alpha0") == 1
    ds = ImageFolderDataset.from_folder(root)
    assert ds.classes[:2] == ["Alpha0/character01", "Alpha0/character02"] and len(ds.classes) == 6
    assert ds.class_counts().tolist() == [4] * 6
    assert "two-level" in layout_note(ds.classes) and "2 groups" in layout_note(ds.classes)
    # one class per alphabet only when asked for
    assert ImageFolderDataset.from_folder(root, class_depth=1).classes == ["Alpha0", "Alpha1"]
    # the CLI's rotated classes = load_omniglot's, image for image
    lib = load_omniglot(root, split=None, image_size=16, rotations=(0, 90, 180))
    ours = with_rotated_classes(ImageFolderDataset.from_folder(root, image_size=16, channels=1), (0, 90, 180))
    assert torch.equal(lib.images, ours.images) and torch.equal(lib.labels, ours.labels) and lib.classes == ours.classes
    assert ours.classes[6] == "Alpha0/character01/rot90"
    with pytest.raises(ValueError, match="rotations"):
        with_rotated_classes(ds, (0, 45))


def test_train_and_evaluate_on_the_omniglot_layout(tmp_path: Path) -> None:
    from siamkit.data import load_official_one_shot_runs
    from siamkit.evaluation import official_one_shot_accuracy
    from siamkit.inference import embed_all
    from siamkit.io import load_model

    bg, ev = omniglot_like(tmp_path / "bg"), omniglot_like(tmp_path / "ev", alphabets=2, chars=3, seed=1)
    (tmp_path / "ev" / "Alpha0").rename(tmp_path / "ev" / "Beta0")
    (tmp_path / "ev" / "Alpha1").rename(tmp_path / "ev" / "Beta1")
    runs = one_shot_runs(tmp_path / "runs", ev)
    out = tmp_path / "run"
    r = run("train", "--data", bg, "--out", out, *FAST, "--rotations", "0,90", "--tta", "shift")
    assert r.exit_code == 0, r.output
    assert "24 images of 6 classes" in r.stdout and "two-level layout" in r.stdout and "Alpha0/character01" in r.stdout
    assert "12 training classes, 48 images" in r.stdout
    split = json.loads((out / "split.json").read_text())
    assert split["rotations"] == [0, 90] and len(split["train_classes"]) == 6
    r = run("evaluate", out / "model", "--data", ev, "--n-way", "3", "--runs", runs, "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert "two-level layout" in r.stdout and "TTA shift" in r.stdout and "official one shot runs" in r.stdout
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    got = m["official_one_shot_runs"]
    net = load_model(out / "model")
    want = official_one_shot_accuracy(lambda x: embed_all(net, x, tta="shift"), load_official_one_shot_runs(runs, image_size=16),
                                      distance=net.distance)
    assert got["accuracy"] == want.accuracy and got["tta"] == "shift" and got["queries"] == 3 and got["n_way"] == 3
    assert "baseline_accuracy" in got and m["split"]["classes"] == 6
    # bad input: one clear line
    assert_clean_error(run("train", "--data", bg, "--out", tmp_path / "r2", *FAST, "--rotations", "0,45"), "--rotations")
    assert_clean_error(run("evaluate", out / "model", "--data", ev, "--runs", tmp_path / "nowhere", "--out", tmp_path / "r3"), "runs")


def test_recipe_data_rotations(tmp_path: Path) -> None:
    from siamkit.errors import RecipeError
    from siamkit.training.recipes import load_recipe

    assert load_recipe("omniglot").rotations == (0, 90, 180, 270)
    assert load_recipe("faces").rotations == (0,)
    bad = tmp_path / "bad.toml"
    bad.write_text('[recipe]\nname = "x"\n[data]\nrotations = [0, 30]\n')
    with pytest.raises(RecipeError, match="rotations"):
        load_recipe(bad)
    bad.write_text('[recipe]\nname = "x"\n[data]\nflips = true\n')
    with pytest.raises(RecipeError, match="flips"):
        load_recipe(bad)
