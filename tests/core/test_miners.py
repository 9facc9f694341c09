"""siamkit.miners against the naive loop-based reference, plus edge cases and scale."""

from __future__ import annotations

import pytest
import torch

from siamkit.distances import get_distance
from siamkit.miners import MINERS, AllPairsMiner, BatchHardMiner, HardPairMiner, SemiHardMiner
from siamkit.tuples import Pairs, Triplets
from tests.reference import naive

DTYPES = [torch.float32, torch.float64]


def _emb(seed: int, n: int, d: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)


def _layout(name: str, seed: int) -> torch.Tensor:
    """Labels for a batch of 32, shuffled so classes are not contiguous."""
    if name == "m_per_class_4x8":  # 8 classes x 4 samples
        labels = torch.arange(8).repeat_interleave(4)
    elif name == "unbalanced":  # includes a singleton class (an anchor without positives)
        sizes = [1, 2, 3, 5, 8, 13]
        labels = torch.cat([torch.full((s,), 10 + c) for c, s in enumerate(sizes)])
    elif name == "two_classes":
        labels = torch.cat([torch.full((20,), 7), torch.full((12,), 3)])
    else:
        raise ValueError(name)
    perm = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(500 + seed))
    return labels[perm]


LAYOUTS = ["m_per_class_4x8", "unbalanced", "two_classes"]


def _pair_set(p: Pairs) -> set:
    return set(zip(p.a.tolist(), p.b.tolist(), p.same.tolist()))


def _trip_set(t: Triplets) -> set:
    return set(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()))


def _check_types(out) -> None:
    if isinstance(out, Pairs):
        assert out.a.dtype == torch.int64 and out.b.dtype == torch.int64
        assert out.same.dtype == torch.bool
        assert out.a.shape == out.b.shape == out.same.shape
    else:
        assert isinstance(out, Triplets)
        for t in out:
            assert t.dtype == torch.int64
        assert out.anchor.shape == out.positive.shape == out.negative.shape
    for t in out:
        assert t.ndim == 1
        assert not t.requires_grad and t.grad_fn is None


def _naive_matrix(emb: torch.Tensor, name: str) -> list[list[float]]:
    return naive.distance_matrix(emb.double().tolist(), name)


def _hard_pair_margins(emb, labels, name) -> tuple[float, float]:
    """Between the two middle positive (negative) distances: about half of each kept,
    and no pair sits exactly on a margin."""
    d = _naive_matrix(emb, name)
    lab = labels.tolist()
    pos = sorted(d[i][j] for i in range(len(lab)) for j in range(i + 1, len(lab)) if lab[i] == lab[j])
    neg = sorted(d[i][j] for i in range(len(lab)) for j in range(i + 1, len(lab)) if lab[i] != lab[j])
    k, m = len(pos) // 2, len(neg) // 2
    return (pos[k - 1] + pos[k]) / 2, (neg[m - 1] + neg[m]) / 2


# ====================================================================== vs naive


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", [0, 1])
class TestAgainstNaive:
    def test_all_pairs(self, seed, layout, distance, dtype):
        emb, labels = _emb(seed, 32, 16, dtype), _layout(layout, seed)
        out = AllPairsMiner(distance=distance).mine(emb, labels)
        _check_types(out)
        assert len(out) == 32 * 31 // 2
        assert _pair_set(out) == naive.all_pairs(labels)

    def test_hard_pairs(self, seed, layout, distance, dtype):
        emb, labels = _emb(seed, 32, 16, dtype), _layout(layout, seed)
        pm, nm = _hard_pair_margins(emb, labels, distance)
        out = HardPairMiner(pos_margin=pm, neg_margin=nm, distance=distance).mine(emb, labels)
        _check_types(out)
        expected = naive.hard_pairs(emb, labels, distance=distance, pos_margin=pm, neg_margin=nm)
        got = _pair_set(out)
        assert len(got) == len(out)  # no duplicates
        assert got == expected, f"missing {sorted(expected - got)[:5]}, extra {sorted(got - expected)[:5]}"
        # non-trivial: some of each kind kept, and some dropped
        assert 0 < out.num_positive and 0 < out.num_negative and len(out) < 32 * 31 // 2
        assert bool((out.a < out.b).all())

    def test_batch_hard(self, seed, layout, distance, dtype):
        emb, labels = _emb(seed, 32, 16, dtype), _layout(layout, seed)
        out = BatchHardMiner(distance=distance).mine(emb, labels)
        _check_types(out)
        expected = naive.batch_hard(emb, labels, distance=distance)
        assert _trip_set(out) == expected
        assert len(out) == len(expected)
        if layout == "unbalanced":
            assert len(out) == 31  # the singleton's anchor is skipped

    def test_semi_hard(self, seed, layout, distance, dtype):
        emb, labels = _emb(seed, 32, 16, dtype), _layout(layout, seed)
        out = SemiHardMiner(distance=distance).mine(emb, labels)
        _check_types(out)
        expected = naive.semi_hard(emb, labels, distance=distance)
        got = _trip_set(out)
        assert len(got) == len(out)  # one triplet per ordered positive pair, no duplicates
        assert got == expected, f"missing {sorted(expected - got)[:5]}, extra {sorted(got - expected)[:5]}"


@pytest.mark.parametrize("distance", ["sqeuclidean", "l1"])
@pytest.mark.parametrize("miner", ["hard_pairs", "batch_hard", "semi_hard"])
def test_other_distances_against_naive(miner, distance):
    emb, labels = _emb(3, 32, 8), _layout("m_per_class_4x8", 3)
    if miner == "hard_pairs":
        pm, nm = _hard_pair_margins(emb, labels, distance)
        out = _pair_set(HardPairMiner(pos_margin=pm, neg_margin=nm, distance=distance).mine(emb, labels))
        assert out == naive.hard_pairs(emb, labels, distance=distance, pos_margin=pm, neg_margin=nm)
    else:
        m = MINERS[miner](distance=get_distance(distance))
        assert _trip_set(m.mine(emb, labels)) == getattr(naive, miner)(emb, labels, distance=distance)


def test_distance_changes_what_is_mined():
    # guards against a miner ignoring its distance argument
    emb, labels = _emb(4, 32, 4), _layout("m_per_class_4x8", 4)
    emb = emb + torch.linspace(0, 3, 32)[:, None]  # make norms differ: cosine != euclidean order
    a = _trip_set(BatchHardMiner(distance="euclidean").mine(emb, labels))
    b = _trip_set(BatchHardMiner(distance="cosine").mine(emb, labels))
    assert a != b
    assert b == naive.batch_hard(emb, labels, distance="cosine")


def test_cosine_and_euclidean_agree_on_unit_vectors():
    # ||x - y||^2 = 2 (1 - cos) for unit vectors: the same order, so the same triplets
    emb = torch.nn.functional.normalize(_emb(5, 64, 16), dim=1)
    labels = torch.arange(16).repeat_interleave(4)
    for cls in (BatchHardMiner, SemiHardMiner):
        assert _trip_set(cls(distance="euclidean").mine(emb, labels)) == _trip_set(
            cls(distance="cosine").mine(emb, labels)
        )


# ====================================================================== semi-hard rule


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semi_hard_negative_is_farther_than_positive(seed, dtype):
    emb = _emb(seed, 64, 8, dtype)
    labels = torch.arange(16).repeat_interleave(4)
    trip = SemiHardMiner().mine(emb, labels)
    d = get_distance("euclidean").pairwise(emb.double())  # float64 check of the rule
    neg = labels[:, None] != labels[None, :]
    n_farther = n_fallback = 0
    for a, p, n in zip(*(t.tolist() for t in trip)):
        assert labels[a] == labels[p] and a != p and labels[a] != labels[n]
        farther = neg[a] & (d[a] > d[a, p])
        if farther.any():
            n_farther += 1
            assert d[a, n] > d[a, p]
            assert d[a, n] == d[a][farther].min()  # the closest of the farther negatives
        else:
            n_fallback += 1
            assert d[a, n] == d[a][neg[a]].max()  # all closer: the farthest negative
    assert len(trip) == 64 * 3
    assert n_farther > 0  # the case exercises the main rule
    # the fallback branch is exercised by test_semi_hard_fallback_when_every_negative_is_closer


def test_semi_hard_fallback_when_every_negative_is_closer():
    # class 0 is spread out, class 1 sits in the middle: for the pair (0, 1) every
    # negative is closer than the positive, so the farthest negative is chosen
    emb = torch.tensor([[-10.0, 0.0], [10.0, 0.3], [0.0, 1.0], [0.0, -2.0], [1.0, 0.5]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    got = _trip_set(SemiHardMiner().mine(emb, labels))
    # d(0, 1) = 20.0; d(0, 2..4) = 10.05, 10.20, 11.01: all closer, the farthest is 4
    assert (0, 1, 4) in got
    # d(1, 2..4) = 10.02, 10.26, 9.00: all closer than 20.0, the farthest is 3
    assert (1, 0, 3) in got
    # d(2, 3) = 3.0; both negatives are farther, d(2, 1) = 10.02 < d(2, 0) = 10.05: 1 is chosen
    assert (2, 3, 1) in got
    assert got == naive.semi_hard(emb, labels)


@pytest.mark.parametrize("distance", ["sqeuclidean", "euclidean"])
@pytest.mark.parametrize("n_classes", [8, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_semi_hard_exact_ties_are_not_farther(dtype, n_classes, distance):
    """Integer embeddings: exact ties everywhere (squared distances are small integers).

    A negative at exactly d(a, p) is not "farther": the chosen negative must be at the
    smallest distance strictly greater than d(a, p) (or the largest, if none).
    8 classes give few positive pairs per anchor (P <= 8N), 2 classes many (P > 8N):
    SemiHardMiner uses a different search in each regime.
    """
    g = torch.Generator().manual_seed(9)
    emb = torch.randint(-2, 3, (40, 3), generator=g).to(dtype)
    labels = torch.randint(0, n_classes, (40,), generator=g)
    d = naive.distance_matrix(emb.tolist(), "sqeuclidean")  # exact small integers
    trip = SemiHardMiner(distance=distance).mine(emb, labels)
    lab = labels.tolist()
    n_tied = 0
    for a, p, n in zip(*(t.tolist() for t in trip)):
        negs = [m for m in range(40) if lab[m] != lab[a]]
        farther = [d[a][m] for m in negs if d[a][m] > d[a][p]]
        n_tied += any(d[a][m] == d[a][p] for m in negs)
        if farther:
            assert d[a][n] == min(farther)
        else:
            assert d[a][n] == max(d[a][m] for m in negs)
    assert n_tied > 0  # the data does contain negatives tied with the positive
    expected_count = sum(lab.count(c) * (lab.count(c) - 1) for c in set(lab))
    assert len(trip) == expected_count


# ====================================================================== edge cases


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_class(dtype):
    emb, labels = _emb(0, 12, 5, dtype), torch.zeros(12, dtype=torch.long)
    for cls in (BatchHardMiner, SemiHardMiner):
        out = cls().mine(emb, labels)
        _check_types(out)
        assert len(out) == 0
    hp = HardPairMiner(pos_margin=0.0, neg_margin=100.0).mine(emb, labels)
    _check_types(hp)
    assert len(hp) == 66 and hp.num_negative == 0
    assert _pair_set(hp) == naive.hard_pairs(emb, labels, pos_margin=0.0, neg_margin=100.0)
    ap = AllPairsMiner().mine(emb, labels)
    assert len(ap) == 66 and bool(ap.same.all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_sample_its_own_class(dtype):
    emb, labels = _emb(1, 12, 5, dtype), torch.arange(12)
    for cls in (BatchHardMiner, SemiHardMiner):
        out = cls().mine(emb, labels)
        _check_types(out)
        assert len(out) == 0
    hp = HardPairMiner(pos_margin=0.0, neg_margin=100.0).mine(emb, labels)
    assert len(hp) == 66 and hp.num_positive == 0
    assert AllPairsMiner().mine(emb, labels).num_positive == 0


@pytest.mark.parametrize("cls", [AllPairsMiner, HardPairMiner, BatchHardMiner, SemiHardMiner])
def test_batch_of_one(cls):
    out = cls().mine(_emb(2, 1, 5), torch.tensor([4]))
    _check_types(out)
    assert len(out) == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_duplicated_embeddings(dtype, distance):
    """Duplicates tie distances (0 within and across classes): check validity, not indices."""
    base = _emb(3, 6, 8, dtype)
    idx = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 0, 1])  # rows 10, 11 copy 0, 1
    emb = base[idx]
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 1, 2])  # copies also across classes
    d = torch.tensor(_naive_matrix(emb, distance), dtype=torch.float64)
    pos = (labels[:, None] == labels[None, :]) & ~torch.eye(12, dtype=torch.bool)
    neg = labels[:, None] != labels[None, :]
    tol = 1e-3 if dtype == torch.float32 else 1e-9  # float32 Euclidean near 0 is ~1e-3 off

    bh = BatchHardMiner(distance=distance).mine(emb, labels)
    _check_types(bh)
    assert len(bh) == 12
    for a, p, n in zip(*(t.tolist() for t in bh)):
        assert pos[a, p] and neg[a, n]
        assert d[a, p] >= d[a][pos[a]].max() - tol
        assert d[a, n] <= d[a][neg[a]].min() + tol

    sh = SemiHardMiner(distance=distance).mine(emb, labels)
    _check_types(sh)
    assert len(sh) == int(pos.sum())
    for a, p, n in zip(*(t.tolist() for t in sh)):
        assert pos[a, p] and neg[a, n]
        farther = neg[a] & (d[a] > d[a, p] + tol)
        if farther.any():
            assert d[a, n] > d[a, p] - tol
            assert d[a, n] <= d[a][farther].min() + tol

    hp = HardPairMiner(pos_margin=0.5, neg_margin=0.5, distance=distance).mine(emb, labels)
    for a, b, s in zip(*(t.tolist() for t in hp)):
        assert a < b and s == bool(labels[a] == labels[b])
        assert (d[a, b] > 0.5 - tol) if s else (d[a, b] < 0.5 + tol)
    # the zero-distance negative pair (0, 10) must be kept, the zero-distance positive (0, 1) not
    got = {(a, b) for a, b, _ in _pair_set(hp)}
    assert (0, 10) in got and (0, 1) not in got


# ====================================================================== types, grad, labels


@pytest.mark.parametrize("name", sorted(MINERS))
def test_miners_run_without_grad(name):
    emb = _emb(4, 16, 5).requires_grad_(True)
    labels = torch.arange(4).repeat_interleave(4)
    with torch.enable_grad():
        out = MINERS[name]().mine(emb, labels)
    _check_types(out)
    assert len(out) > 0
    assert emb.grad is None
    # the mined indices feed a loss that still differentiates w.r.t. the embeddings
    if isinstance(out, Pairs):
        loss = (emb[out.a] - emb[out.b]).pow(2).sum()
    else:
        loss = (emb[out.anchor] - emb[out.positive]).pow(2).sum()
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


class _GradSpy:
    """A distance that records whether autograd was recording when the miner called it."""

    def __init__(self):
        self.inner = get_distance("euclidean")
        self.seen: list[tuple[bool, bool]] = []

    def pairwise(self, x, y=None):
        self.seen.append((torch.is_grad_enabled(), x.requires_grad))
        return self.inner.pairwise(x, y)

    def ranking_pairwise(self, x, y=None):
        self.seen.append((torch.is_grad_enabled(), x.requires_grad))
        return self.inner.ranking_pairwise(x, y)


@pytest.mark.parametrize("name", ["hard_pairs", "batch_hard", "semi_hard"])
def test_miners_compute_distances_without_a_graph(name):
    miner = MINERS[name]()
    spy = _GradSpy()
    miner.distance = spy
    emb = _emb(4, 16, 5).requires_grad_(True)
    with torch.enable_grad():
        miner.mine(emb, torch.arange(4).repeat_interleave(4))
    assert spy.seen == [(False, False)]  # no autograd graph over the (N, N) matrix


@pytest.mark.parametrize("name", sorted(MINERS))
def test_bad_labels_raise(name):
    miner = MINERS[name]()
    emb = _emb(5, 8, 3)
    with pytest.raises(ValueError, match="shape"):
        miner.mine(emb, torch.zeros(8, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        miner.mine(emb, torch.zeros(7, dtype=torch.long))
    with pytest.raises(TypeError, match="integers"):
        miner.mine(emb, torch.zeros(8, dtype=torch.float32))
    with pytest.raises(TypeError, match="integers"):
        miner.mine(emb, torch.zeros(8, dtype=torch.bool))
    # plain Python ints and int32 are fine
    assert len(miner.mine(emb, [0, 0, 1, 1, 2, 2, 3, 3])) >= 0
    ok = miner.mine(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3], dtype=torch.int32))
    _check_types(ok)


# ====================================================================== scale


def test_large_batch_mines_in_quadratic_memory():
    """2048 x 128, 512 classes of 4. A batch^3 tensor would be 34 GB (float32): it would
    not fit on a 24 GB machine, so finishing at all shows the miners stay O(n^2)."""
    n, classes = 2048, 512
    emb = torch.nn.functional.normalize(_emb(6, n, 128, torch.float32), dim=1)
    labels = torch.randperm(n, generator=torch.Generator().manual_seed(6)) % classes
    d = torch.cdist(emb.double(), emb.double(), compute_mode="donot_use_mm_for_euclid_dist")
    pos = (labels[:, None] == labels[None, :]) & ~torch.eye(n, dtype=torch.bool)
    neg = ~(labels[:, None] == labels[None, :])

    bh = BatchHardMiner().mine(emb, labels)
    _check_types(bh)
    assert len(bh) == n
    a, p, q = bh
    assert torch.equal(a, torch.arange(n))
    assert bool(pos[a, p].all()) and bool(neg[a, q].all())
    tol = 1e-4
    assert bool((d[a, p] >= d.masked_fill(~pos, -1).max(1).values - tol).all())
    assert bool((d[a, q] <= d.masked_fill(~neg, 9).min(1).values + tol).all())

    sh = SemiHardMiner().mine(emb, labels)
    _check_types(sh)
    assert len(sh) == n * 3
    a, p, q = sh
    assert bool(pos[a, p].all()) and bool(neg[a, q].all())
    d_ap, d_an = d[a, p], d[a, q]
    farther = neg[a] & (d[a] > d_ap[:, None] + tol)  # (6144, 2048)
    has = farther.any(1)
    assert bool(has.any())
    closest_farther = d[a].masked_fill(~farther, 9).min(1).values
    assert bool((d_an[has] > d_ap[has] - tol).all())
    assert bool((d_an[has] <= closest_farther[has] + tol).all())
