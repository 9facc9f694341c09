"""siamkit train --matryoshka-dims, calibrate --dims, evaluate --dims, compare --dim / --adaptive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from siamkit.adaptive import SizeCascade
from siamkit.io import load_model
from siamkit.verify import Verifier

from ..conftest import make_image_folder
from .test_cli import FAST, assert_clean_error, run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("sizes")
    data = make_image_folder(tmp / "data", classes=6, per_class=6)
    val = make_image_folder(tmp / "val", classes=6, per_class=4, seed=1)
    test = make_image_folder(tmp / "test", classes=6, per_class=4, seed=2)
    r = run("train", "--data", data, "--out", tmp / "run", *FAST, "--embedding-dim", "32", "--matryoshka-dims", "8,16,32")
    assert r.exit_code == 0, r.output
    return tmp / "run" / "model", val, test


def test_model_records_its_sizes(trained: tuple[Path, Path, Path]) -> None:
    model, _, _ = trained
    assert json.loads((model / "config.json").read_text())["network"]["matryoshka_dims"] == [8, 16, 32]
    assert load_model(model).matryoshka_dims == (8, 16, 32)


def test_calibrate_and_evaluate_by_size(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, val, test = trained
    r = run("calibrate", model, "--data", val, "--dims", "all")
    assert r.exit_code == 0, r.output
    for name in ("calibration-dim8.json", "calibration-dim16.json", "calibration.json", "adaptive.json"):
        assert (model / name).is_file(), name
    net = load_model(model)
    assert json.loads((model / "calibration-dim8.json").read_text())["model_fingerprint"] == f"{net.fingerprint}#dim=8"
    cascade = SizeCascade.load(model, expected_fingerprint=net.fingerprint)
    assert cascade is not None and cascade.dims == [8, 16, 32]
    v8 = Verifier.from_dir(model, dim=8)
    assert v8.network.embedding_dim == 8 and v8.calibrator is not None
    assert v8.calibrator.threshold_ == json.loads((model / "calibration-dim8.json").read_text())["threshold"]

    a, b = sorted((test / "class0").glob("*.png"))[:2]
    r = run("compare", model, a, b, "--dim", "8", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["threshold"] == v8.calibrator.threshold_
    assert_clean_error(run("compare", model, a, b, "--dim", "12"), "not 12")

    # --adaptive: the cascade's decision for this pair, by hand from the per-size distances
    r = run("compare", model, a, b, "--adaptive", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    from siamkit.evaluation.sizes import size_distances
    from siamkit.inference import embed_all
    from siamkit.verify import load_image_for

    e = embed_all(net, torch.stack([load_image_for(net, a), load_image_for(net, b)]))
    dist = {k: float(v[0]) for k, v in size_distances(net, e, torch.tensor([0]), torch.tensor([1]), [8, 16, 32]).items()}
    want = None
    for i, k in enumerate(cascade.dims):  # the first size outside its band decides; the last always does
        t = cascade.thresholds_[i]
        if i == len(cascade.dims) - 1 or not (t - cascade.bands_[i][0] <= dist[k] <= t + cascade.bands_[i][1]):
            want = (k, dist[k] <= t)
            break
    assert (got["decided_at"], got["same"]) == want
    assert got["distance"] == pytest.approx(dist[want[0]], abs=1e-6) and list(map(int, got["distances"])) == [k for k in (8, 16, 32) if k <= want[0]]
    r = run("compare", model, a, b, "--adaptive")
    assert r.exit_code == 0 and f"decided at {want[0]} of 8/16/32 dims" in r.stdout
    assert_clean_error(run("compare", model, a, b, "--adaptive", "--dim", "8"), "not both")

    out = tmp_path / "rep"
    r = run("evaluate", model, "--data", test, "--dims", "8,16,32", "--out", out, "--n-way", "5", "--allow-overlap")
    assert r.exit_code == 0, r.output
    assert "| 8 |" in r.stdout and "| 32 |" in r.stdout and "adaptive size" in r.stdout
    res = json.loads((out / "sizes.json").read_text())
    assert [row["dim"] for row in res["rows"]] == [8, 16, 32]
    for row in res["rows"]:
        assert 0.0 <= row["roc_auc"] <= 1.0 and "5_way_1_shot" in row and "accuracy_at_threshold" in row
    assert abs(sum(res["adaptive"]["decided_at"].values()) - 1.0) < 1e-9


def test_bad_sizes_are_clean_errors(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, _, test = trained
    assert_clean_error(run("evaluate", model, "--data", test, "--dims", "12", "--out", tmp_path / "r", "--allow-overlap"),
                       "trained for the embedding sizes [8, 16, 32], not 12")
    assert_clean_error(run("evaluate", model, "--data", test, "--dims", "64", "--out", tmp_path / "r"), "outside 1..32")
    assert_clean_error(run("evaluate", model, "--data", test, "--dims", "a,b", "--out", tmp_path / "r"), "integers")
    bare = tmp_path / "bare"  # a copy without adaptive.json: --adaptive names the command that fits one
    import shutil

    shutil.copytree(model, bare)
    (bare / "adaptive.json").unlink(missing_ok=True)
    a, b = sorted((test / "class0").glob("*.png"))[:2]
    assert_clean_error(run("compare", bare, a, b, "--adaptive"), "no adaptive size cascade", "calibrate")
    data = make_image_folder(tmp_path / "d", classes=4, per_class=4)
    r = run("train", "--data", data, "--out", tmp_path / "x", *FAST, "--embedding-dim", "32", "--matryoshka-dims", "8,16")
    assert_clean_error(r, "must end at the embedding size 32")


def test_dim_view_matches_truncated_full_embedding(trained: tuple[Path, Path, Path]) -> None:
    model, _, _ = trained
    net = load_model(model)
    x = torch.rand(3, *net.input_spec.shape)
    from siamkit.inference import embed_all

    full = embed_all(net, x)
    torch.testing.assert_close(embed_all(net, x, dim=16), torch.nn.functional.normalize(full[:, :16], dim=1))


def test_gallery_at_a_size(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from siamkit.gallery import Gallery
    from siamkit.gallery.sizes import model_at_dim

    model, _, test = trained
    g = tmp_path / "g.db"
    imgs = sorted((test / "class0").glob("*.png"))
    r = run("gallery", "enroll", "alice", imgs[0], imgs[1], "--gallery", g, "--model", model, "--dim", "8")
    assert r.exit_code == 0, r.output
    r = run("gallery", "identify", imgs[2], "--gallery", g, "--model", model, "--dim", "8", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["candidates"][0]["identity"] == "alice"
    with Gallery.open(g, model_at_dim(model, 8), create=False) as gal:
        assert gal.meta["prefix_dim"] == 8 and gal.meta["embedding_dim"] == 8
    assert_clean_error(run("gallery", "identify", imgs[2], "--gallery", g, "--model", model),
                       "built at 8 dimensions", "--dim 8")
    assert_clean_error(run("gallery", "identify", imgs[2], "--gallery", g, "--model", model, "--dim", "16"),
                       "built at 8 dimensions")
    assert_clean_error(run("gallery", "identify", imgs[2], "--gallery", g, "--model", model, "--dim", "9"),
                       "not 9")
