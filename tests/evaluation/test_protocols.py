"""Evaluation protocols: bounded-memory pair scoring, an optional baseline, any N-way K-shot."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from siamkit import SiameseNetwork, create_encoder, save_model
from siamkit.cli import app
from siamkit.data import ImageFolderDataset
from siamkit.data.images import to_float
from siamkit.distances import EuclideanDistance, get_distance
from siamkit.evaluation.protocols import score_folder
from siamkit.inference import paired_distances
from siamkit.tuples import all_pairs

from ..conftest import make_image_folder


def test_paired_distances_in_chunks_equal_the_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    rows = torch.rand(30, 17, generator=g)
    a, b = torch.randint(30, (101,), generator=g), torch.randint(30, (101,), generator=g)
    for name in ("euclidean", "cosine", "l1"):
        dist = get_distance(name)
        want = dist.paired(rows[a], rows[b])
        for chunk in (1, 17, 40, 10_000):  # 1..many pairs per chunk
            assert torch.allclose(paired_distances(dist, rows, a, b, chunk_elems=chunk), want, atol=1e-6)
    assert paired_distances(EuclideanDistance(), rows, a[:0], b[:0]).shape == (0,)


def _net() -> SiameseNetwork:
    torch.manual_seed(0)
    enc = create_encoder("conv4", in_channels=1, embedding_dim=8, width=4)
    return SiameseNetwork(enc, normalize=True, input_spec={"shape": [1, 20, 20], "channels": 1, "height": 20, "width": 20}).eval()


def test_score_folder_baseline_is_optional_and_unchanged(tmp_path: Path) -> None:
    ds = ImageFolderDataset.from_folder(make_image_folder(tmp_path / "d", classes=6, per_class=4), image_size=(20, 20))
    net = _net()
    with_base = score_folder(net, ds, max_pairs=1000)
    raw = to_float(ds.images).flatten(1)
    a, b, _ = all_pairs(ds.labels)
    assert torch.allclose(with_base.baseline, EuclideanDistance().paired(raw[a], raw[b]), atol=1e-6)
    assert with_base.extra["5_way_1_shot"]["baseline_accuracy"] is not None
    no_base = score_folder(net, ds, max_pairs=1000, baseline=False)
    assert no_base.baseline is None and no_base.split["baseline"] is None
    assert no_base.extra["5_way_1_shot"]["baseline_accuracy"] is None
    assert torch.equal(no_base.distances, with_base.distances)


def test_score_folder_any_n_way_k_shot(tmp_path: Path) -> None:
    ds = ImageFolderDataset.from_folder(make_image_folder(tmp_path / "d", classes=6, per_class=4), image_size=(20, 20))
    s = score_folder(_net(), ds, n_ways=(2, 6, 7), k_shot=3)
    assert set(k for k in s.extra if "_way_" in k) == {"2_way_3_shot", "6_way_3_shot"}
    assert s.split["episodes"]["skipped_n_ways"] == [7] and s.split["episodes"]["k_shot"] == 3
    # K = 4 leaves no class with K + 1 images
    s = score_folder(_net(), ds, n_ways=(2,), k_shot=4)
    assert "2_way_4_shot" not in s.extra and s.split["episodes"]["skipped_n_ways"] == [2]


def test_cli_evaluate_no_baseline_and_n_way(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "te", classes=6, per_class=4)
    save_model(_net(), tmp_path / "m")
    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", str(tmp_path / "m"), "--data", str(data), "--out", str(tmp_path / "rep"),
                            "--no-baseline", "--n-way", "3", "--n-way", "9", "--k-shot", "2"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert "baseline" not in m and "3_way_2_shot" in m and "5_way_1_shot" not in m
    assert "raw pixels" not in r.output and "9-way: skipped" in r.output
