"""score_folder at scale: pairs drawn without listing them all, the raw-pixel baseline in
chunks (or not at all), and N-way K-shot episodes of any N."""

from __future__ import annotations

import pytest
import torch

import siamkit.tuples as tuples
from siamkit import SiameseNetwork, create_encoder
from siamkit.data.images import ImageFolderDataset, to_float
from siamkit.errors import DataError
from siamkit.evaluation.protocols import raw_pair_distances, score_folder
from siamkit.tuples import all_pairs, sample_all_pairs, subsample_pairs


def _dataset(classes: int = 6, per_class: int = 4, size: int = 8) -> ImageFolderDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (classes * per_class, 1, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return ImageFolderDataset(images, labels, [f"c{i}" for i in range(classes)])


def _net(size: int = 8) -> SiameseNetwork:
    torch.manual_seed(0)
    spec = {"shape": [1, size, size], "channels": 1, "height": size, "width": size}
    return SiameseNetwork(create_encoder("conv4", in_channels=1, embedding_dim=4, width=4), input_spec=spec)


def test_sample_all_pairs_is_the_old_call_below_the_enumeration_limit() -> None:
    labels = torch.arange(10).repeat_interleave(5)
    got = sample_all_pairs(labels, 300, torch.Generator().manual_seed(3))
    want = subsample_pairs(all_pairs(labels), 300, torch.Generator().manual_seed(3))
    for x, y in zip(got, want):
        assert torch.equal(x, y)


@pytest.mark.parametrize("max_pairs", [400, 3000])
def test_sample_all_pairs_beyond_the_limit_draws_distinct_pairs_i_lt_j(monkeypatch: pytest.MonkeyPatch, max_pairs: int) -> None:
    monkeypatch.setattr(tuples, "ENUMERATE_PAIRS", 10)
    labels = torch.arange(20).repeat_interleave(6)[torch.randperm(120, generator=torch.Generator().manual_seed(1))]
    n_gen = 20 * 15  # 300 genuine pairs of 7,140
    a, b, same = sample_all_pairs(labels, max_pairs, torch.Generator().manual_seed(0))
    assert a.numel() == max_pairs
    assert bool((a < b).all())
    assert torch.unique(a * 120 + b).numel() == max_pairs  # no pair twice
    assert torch.equal(same, labels[a] == labels[b])
    # genuine pairs kept when they fit in half, else half of the pairs
    assert int(same.sum()) == min(n_gen, max_pairs // 2)
    assert bool(same[: int(same.sum())].all())  # genuine first


def test_sample_all_pairs_impostors_are_spread_over_all_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuples, "ENUMERATE_PAIRS", 10)
    labels = torch.arange(50).repeat_interleave(2)  # 100 samples
    a, b, same = sample_all_pairs(labels, 2000, torch.Generator().manual_seed(0))
    hits = torch.bincount(torch.cat([a[~same], b[~same]]), minlength=100).float()
    # each sample sits in ~2 * 1950 / 100 = 39 impostor pairs; a biased sampler would not
    assert hits.min() > 15 and hits.max() < 70


def test_raw_pair_distances_in_chunks_equal_the_full_computation() -> None:
    ds = _dataset()
    a, b, _ = all_pairs(ds.labels)
    raw = to_float(ds.images).flatten(1)
    want = torch.linalg.vector_norm(raw[a] - raw[b], dim=1)
    got = raw_pair_distances(ds.images, a, b, chunk_values=64 * 3)  # 3 pairs per chunk
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_score_folder_without_baseline_computes_none() -> None:
    scored = score_folder(_net(), _dataset(), baseline=False)
    assert scored.baseline is None
    assert "not computed" in scored.split["baseline"]
    assert all("baseline_accuracy" not in v for v in scored.extra.values())
    with_base = score_folder(_net(), _dataset())
    assert with_base.baseline is not None and with_base.baseline.shape == with_base.distances.shape
    assert "baseline_accuracy" in with_base.extra["5_way_1_shot"]


def test_score_folder_n_way_k_shot() -> None:
    ds = _dataset(classes=6, per_class=4)
    scored = score_folder(_net(), ds, n_way=[6], k_shot=3, baseline=False)
    assert set(k for k in scored.extra if "way" in k) == {"6_way_3_shot"}
    assert 0.0 <= scored.extra["6_way_3_shot"]["accuracy"] <= 1.0
    assert scored.split["episodes"]["n_way"] == [6] and scored.split["episodes"]["k_shot"] == 3
    with pytest.raises(DataError, match="6 classes with >= 4"):
        score_folder(_net(), ds, n_way=[7], k_shot=3)
    with pytest.raises(DataError, match="0 classes"):
        score_folder(_net(), ds, n_way=[2], k_shot=4)  # 4 images per class: no query left
