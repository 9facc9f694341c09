"""siamkit.evaluation.retrieval against the naive loops of Musgrave et al.'s definitions."""

from __future__ import annotations

import pytest
import torch

from siamkit.errors import DataError
from siamkit.evaluation import retrieval as retrieval_module
from siamkit.evaluation.retrieval import retrieval_metrics
from tests.reference import naive_metrics as naive

KEYS = ["precision_at_1", "r_precision", "map_at_r"]


def _data(seed: int, n: int, classes: int, dim: int = 4, spread: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, dim, generator=g, dtype=torch.float64)
    emb = centers[labels] + spread * torch.randn(n, dim, generator=g, dtype=torch.float64)
    return emb, labels


def _assert_same(got: dict, ref: dict) -> None:
    for k in KEYS:
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k
    assert got["num_queries"] == ref["num_queries"]
    assert got["num_skipped_queries"] == ref["num_skipped_queries"]


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_set_matches_naive(distance, seed):
    emb, labels = _data(seed, 60, 5)
    got = retrieval_metrics(emb, labels, distance=distance)
    ref = naive.retrieval(emb.tolist(), labels.tolist(), distance=distance)
    _assert_same(got, ref)
    assert 0 < got["map_at_r"] < got["r_precision"] < 1  # a non-trivial case


@pytest.mark.parametrize("seed", [0, 3])
def test_separate_references_match_naive(seed):
    q, ql = _data(seed, 25, 6)
    r, rl = _data(seed + 100, 70, 6)
    got = retrieval_metrics(q, ql, r, rl)
    ref = naive.retrieval(q.tolist(), ql.tolist(), r.tolist(), rl.tolist())
    _assert_same(got, ref)


@pytest.mark.parametrize("seed", [0, 4])
def test_query_subsample_matches_naive(seed, monkeypatch):
    emb, labels = _data(seed, 50, 5)
    rows = torch.randperm(50, generator=torch.Generator().manual_seed(seed))[:17]
    ref = naive.retrieval(emb.tolist(), labels.tolist(), query_rows=set(rows.tolist()))
    _assert_same(retrieval_metrics(emb, labels, query_rows=rows), ref)
    monkeypatch.setattr(retrieval_module, "_CHUNK_ELEMENTS", 60)  # several chunks of the subsample
    _assert_same(retrieval_metrics(emb, labels, query_rows=torch.cat([rows, rows[:3]])), ref)  # repeats count once
    assert ref["num_queries"] + ref["num_skipped_queries"] == 17
    assert retrieval_metrics(emb, labels, query_rows=torch.arange(50)) == retrieval_metrics(emb, labels)
    with pytest.raises(DataError, match="query_rows"):
        retrieval_metrics(emb, labels, emb, labels, query_rows=rows)
    with pytest.raises(DataError, match="query_rows"):
        retrieval_metrics(emb, labels, query_rows=torch.tensor([50]))


def test_hand_computed():
    # one dimension; query 0 (class 0) sees, in order: 1 (class 1), 2 (class 0), 3 (class 0)
    emb = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 0, 1])
    q = emb[:1]
    got = retrieval_metrics(q, labels[:1], emb[1:], labels[1:])
    # R = 2; rel = [0, 1]; P@1 = 0; R-precision = 1/2; MAP@R = (1/2) * (1/2) = 1/4
    assert got == {"precision_at_1": 0.0, "r_precision": 0.5, "map_at_r": 0.25, "num_queries": 1, "num_skipped_queries": 0}


def test_perfect_clusters_score_one():
    emb = torch.tensor([[0.0, 0], [0.1, 0], [0, 0.1], [9, 9], [9.1, 9], [20, 0]])
    labels = torch.tensor([3, 3, 3, 7, 7, 5])  # class 5 has a single member: skipped
    got = retrieval_metrics(emb, labels)
    assert got == {"precision_at_1": 1.0, "r_precision": 1.0, "map_at_r": 1.0, "num_queries": 5, "num_skipped_queries": 1}


def test_ties_broken_by_reference_index():
    # every reference at the same distance from the query; R = 2
    q = torch.zeros(1, 2, dtype=torch.float64)
    refs = torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0], [0, -1.0]], dtype=torch.float64)
    for ref_labels, expected in [
        ([1, 0, 0, 1], (0.0, 0.5, 0.25)),  # ranking 0,1 -> rel [0, 1]
        ([0, 1, 0, 1], (1.0, 0.5, 0.5)),  # rel [1, 0]
        ([1, 1, 0, 0], (0.0, 0.0, 0.0)),  # the two relevant ones rank 3rd and 4th
    ]:
        got = retrieval_metrics(q, torch.tensor([0]), refs, torch.tensor(ref_labels))
        assert (got["precision_at_1"], got["r_precision"], got["map_at_r"]) == expected
        _assert_same(got, naive.retrieval(q.tolist(), [0], refs.tolist(), ref_labels))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_heavy_ties_match_naive(seed):
    # integer grid points: many exactly equal distances, also across the top-R boundary
    g = torch.Generator().manual_seed(seed)
    emb = torch.randint(0, 3, (50, 2), generator=g).double()
    labels = torch.randint(0, 4, (50,), generator=g)
    got = retrieval_metrics(emb, labels)
    _assert_same(got, naive.retrieval(emb.tolist(), labels.tolist()))
    got = retrieval_metrics(emb[:10], labels[:10], emb[10:], labels[10:])
    _assert_same(got, naive.retrieval(emb[:10].tolist(), labels[:10].tolist(), emb[10:].tolist(), labels[10:].tolist()))


def test_duplicated_embeddings_and_self_exclusion():
    emb = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([0, 1, 0, 1])
    got = retrieval_metrics(emb, labels)
    _assert_same(got, naive.retrieval(emb.tolist(), labels.tolist()))
    # without exclusion the query is its own reference (R counts it), but among the three
    # identical rows the tie goes to the lowest index: query 1 (class 1) gets row 0 (class 0)
    kept = retrieval_metrics(emb, labels, exclude_self=False)
    assert kept["precision_at_1"] == 0.75
    distinct = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    assert retrieval_metrics(distinct, labels, exclude_self=False)["precision_at_1"] == 1.0
    _assert_same(kept, naive.retrieval(emb.tolist(), labels.tolist(), exclude_self=False))


def test_chunking_gives_the_same_result(monkeypatch):
    emb, labels = _data(7, 80, 4, spread=1.5)
    whole = retrieval_metrics(emb, labels)
    monkeypatch.setattr(retrieval_module, "_CHUNK_ELEMENTS", 100)  # 1 query per chunk
    assert retrieval_metrics(emb, labels) == pytest.approx(whole, abs=1e-12)


def test_queries_without_references_are_skipped_and_counted():
    q = torch.tensor([[0.0], [1.0], [2.0]])
    r = torch.tensor([[0.1], [1.1]])
    got = retrieval_metrics(q, torch.tensor([0, 1, 9]), r, torch.tensor([0, 1]))
    assert got["num_queries"] == 2 and got["num_skipped_queries"] == 1
    assert got["precision_at_1"] == 1.0


def test_float32_and_integer_embeddings():
    emb, labels = _data(4, 40, 3)
    ref = retrieval_metrics(emb, labels)
    got = retrieval_metrics(emb.float(), labels)
    for k in KEYS:
        assert got[k] == pytest.approx(ref[k], abs=1e-6)
    ints = torch.tensor([[0, 0], [0, 1], [5, 5], [5, 6]])
    assert retrieval_metrics(ints, torch.tensor([0, 0, 1, 1]))["map_at_r"] == 1.0


def test_errors():
    emb, labels = _data(0, 10, 2)
    with pytest.raises(DataError, match="both ref_emb and ref_labels"):
        retrieval_metrics(emb, labels, emb)
    with pytest.raises(DataError, match=r"query_labels must have shape \(10,\), got \(9,\)"):
        retrieval_metrics(emb, labels[:9])
    with pytest.raises(DataError, match="integer class ids"):
        retrieval_metrics(emb, labels.float())
    bad = emb.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(DataError, match="query_emb contain NaN"):
        retrieval_metrics(bad, labels)
    with pytest.raises(DataError, match="ref_emb contain NaN"):
        retrieval_metrics(emb, labels, bad, labels)
    with pytest.raises(DataError, match="4 dimensions but ref_emb has 3"):
        retrieval_metrics(emb, labels, emb[:, :3], labels)
    with pytest.raises(DataError, match=r"must be 2-D"):
        retrieval_metrics(emb[0], labels[:1])
    with pytest.raises(DataError, match="no query has a reference of its own class"):
        retrieval_metrics(emb[:3], torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="unknown distance"):
        retrieval_metrics(emb, labels, distance="hamming")
