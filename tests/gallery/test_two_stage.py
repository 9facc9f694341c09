"""TwoStageIndex: short-prefix candidates re-ranked by the full vectors."""

from __future__ import annotations

import numpy as np
import pytest

from siamkit.errors import GalleryError
from siamkit.gallery.search import ExactIndex
from siamkit.gallery.two_stage import TwoStageIndex


def _data(n: int = 600, d: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_all_candidates_is_exact_search(metric: str) -> None:
    x, q = _data(), _data(20, seed=1)
    two = TwoStageIndex(short_dim=4, candidates=600, kind="flat", metric=metric).build(x)
    d, rows = two.search(q, 10)
    de, re = ExactIndex(metric=metric).build(x).search(q, 10)
    assert np.array_equal(rows, re)
    np.testing.assert_allclose(d, de, rtol=1e-4, atol=1e-4)


def test_candidates_come_from_the_prefix() -> None:
    x, q = _data(), _data(20, seed=1)
    two = TwoStageIndex(short_dim=4, candidates=15, kind="flat", metric="cosine").build(x)
    _, rows = two.search(q, 5)
    _, short_rows = ExactIndex(metric="cosine").build(x[:, :4]).search(q[:, :4], 15)
    for r, s in zip(rows, short_rows):
        assert set(r) <= set(s)  # re-ranked within stage 1's candidates
    # and in order of the full distance
    full = 1 - (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    for i, r in enumerate(rows):
        assert np.all(np.diff(full[i, r]) >= -1e-6)


def test_ivf_stage_and_params() -> None:
    x = _data(2000)
    two = TwoStageIndex(short_dim=8, candidates=50, kind="ivf", metric="cosine", nlist=16, nprobe=16).build(x)
    _, rows = two.search(x[:10], 1)
    assert rows[:, 0].tolist() == list(range(10))
    two.set_search_params(candidates=5, nprobe=1)
    assert two.candidates == 5
    assert two.memory_bytes() > x.nbytes


def test_few_vectors_and_errors() -> None:
    x = _data(3)
    d, rows = TwoStageIndex(short_dim=4, candidates=10).build(x).search(x[:1], 5)
    assert rows[0, 3:].tolist() == [-1, -1] and np.isinf(d[0, 3:]).all()
    with pytest.raises(GalleryError, match="short_dim 64 is more"):
        TwoStageIndex(short_dim=64).build(x)
    with pytest.raises(GalleryError, match="not built"):
        TwoStageIndex(short_dim=4).search(x, 1)
    with pytest.raises(GalleryError, match="queries have 8"):
        TwoStageIndex(short_dim=4).build(x).search(np.zeros((1, 8), np.float32), 1)
    with pytest.raises(GalleryError, match="candidates"):
        TwoStageIndex(short_dim=4, candidates=0)


def test_factory_stage_one() -> None:
    x, q = _data(), _data(20, seed=1)
    two = TwoStageIndex(short_dim=8, candidates=600, factory="IVF8,SQ8", nprobe=8).build(x)
    d, rows = two.search(q, 10)
    de, re = ExactIndex(metric="cosine").build(x).search(q, 10)
    assert np.array_equal(rows, re)  # every list visited, every row a candidate: exact
    two.set_search_params(candidates=30, nprobe=1)
    _, few = two.search(q, 10)
    assert two.coarse_.nprobe == 1 and not np.array_equal(few, re)  # 1 of 8 lists: misses some
    assert two.memory_bytes() < x.nbytes + 600 * 8 + 8 * 8 * 4 + 10_000  # 1 byte per prefix value


def test_bad_factory() -> None:
    with pytest.raises(GalleryError, match="factory"):
        TwoStageIndex(short_dim=8, factory="NOT_AN_INDEX").build(_data())
