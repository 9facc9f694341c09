"""siamkit.losses against the naive loop-based reference (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch

from siamkit.distances import get_distance
from siamkit.losses import (
    binary_pair_loss,
    contrastive_loss,
    multiple_negatives_ranking_loss,
    normalized_softmax_loss,
    pair_distances,
    triplet_loss,
)
from siamkit.miners import AllPairsMiner, BatchHardMiner, HardPairMiner, SemiHardMiner
from siamkit.tuples import Pairs, Triplets, all_pairs, pairs_from_pair_batch
from tests.reference import naive

NAMES = ["euclidean", "sqeuclidean", "cosine", "l1"]
DTYPES = [torch.float32, torch.float64]
REDUCTIONS = ["mean", "sum", "none", "mean_nonzero"]
SEEDS = [0, 1, 2]
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-10)}
LABELS10 = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3])


def _emb(seed: int, n: int, d: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + seed)


def _lst(t: torch.Tensor) -> list:
    return t.detach().double().tolist() if t.is_floating_point() else t.tolist()


def _pairs(path: str, labels: torch.Tensor, seed: int) -> Pairs:
    """'many': every pair (more than 4 per embedding: the pairwise-matrix path);
    'few': a random subset of at most 2 per embedding (the row-gather path)."""
    p = all_pairs(labels)
    n = labels.numel()
    if path == "many":
        assert len(p) > 4 * n
        return p
    keep = torch.randperm(len(p), generator=_gen(seed))[: 2 * n]
    return Pairs(p.a[keep], p.b[keep], p.same[keep])


def _triplets(n: int, t: int, seed: int) -> Triplets:
    g = _gen(seed)
    a = torch.randint(0, n, (t,), generator=g)
    p = (a + torch.randint(1, n, (t,), generator=g)) % n
    q = (a + torch.randint(1, n, (t,), generator=g)) % n
    return Triplets(a, p, q)


def _margins(emb: torch.Tensor, pairs: Pairs, name: str) -> tuple[float, float]:
    """Margins around the median pair distance, so both hinges are partly active."""
    fn = naive.DISTANCES[name]
    r = _lst(emb)
    d = sorted(fn(r[i], r[j]) for i, j in zip(pairs.a.tolist(), pairs.b.tolist()))
    med = d[len(d) // 2]
    return 0.9 * med, 1.1 * med


def _assert_matches(actual: torch.Tensor, expected, reduction: str, dtype: torch.dtype, n_tuples: int) -> None:
    assert actual.dtype == dtype
    if reduction == "none":
        assert actual.shape == (n_tuples,)
    else:
        assert actual.ndim == 0
    exp = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual.detach().double(), exp, **TOL[dtype])


def _has_zero_and_nonzero(values: list) -> bool:
    return any(v == 0 for v in values) and any(v > 0 for v in values)


# ====================================================================== values vs naive


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("path", ["few", "many"])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_contrastive_matches_naive(seed, dtype, name, power, path, reduction):
    emb = _emb(seed, 10, 5, dtype)
    pairs = _pairs(path, LABELS10, seed)
    pm, nm = _margins(emb, pairs, name)
    per = naive.contrastive_losses(
        _lst(emb), pairs.a.tolist(), pairs.b.tolist(), pairs.same.tolist(),
        distance=name, pos_margin=pm, neg_margin=nm, power=power,
    )
    assert _has_zero_and_nonzero(per)  # the case exercises both sides of the hinge
    out = contrastive_loss(
        emb, pairs, distance=name, pos_margin=pm, neg_margin=nm, power=power, reduction=reduction
    )
    _assert_matches(out, naive.reduce(per, reduction), reduction, dtype, len(pairs))


@pytest.mark.parametrize("dtype", DTYPES)
def test_contrastive_defaults_are_hadsell(dtype):
    # defaults: euclidean, pos_margin 0, neg_margin 1, power 2, mean
    emb = _emb(4, 10, 3, dtype) * 0.3  # small scale so some impostors are inside the margin
    pairs = all_pairs(LABELS10)
    per = naive.contrastive_losses(_lst(emb), pairs.a.tolist(), pairs.b.tolist(), pairs.same.tolist())
    assert any(v > 0 for v, s in zip(per, pairs.same.tolist()) if not s)
    _assert_matches(contrastive_loss(emb, pairs), naive.reduce(per, "mean"), "mean", dtype, len(pairs))


@pytest.mark.parametrize("dtype", DTYPES)
def test_contrastive_explicit_pair_batch(dtype):
    e1, e2 = _emb(5, 7, 4, dtype), _emb(6, 7, 4, dtype)
    same = torch.tensor([True, False, True, False, False, True, False])
    out = contrastive_loss(torch.cat([e1, e2]), pairs_from_pair_batch(same), neg_margin=3.0, reduction="none")
    r1, r2 = _lst(e1), _lst(e2)
    expected = [
        naive.contrastive_pair(naive.euclidean(r1[i], r2[i]), bool(same[i]), 0.0, 3.0, 2) for i in range(7)
    ]
    _assert_matches(out, expected, "none", dtype, 7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_triplet_matches_naive(seed, dtype, name, soft, reduction):
    emb = _emb(seed, 10, 5, dtype)
    trip = _triplets(10, 30, seed)
    margin = 0.2
    per = naive.triplet_losses(
        _lst(emb), trip.anchor.tolist(), trip.positive.tolist(), trip.negative.tolist(),
        distance=name, margin=margin, soft=soft,
    )
    if not soft:
        assert _has_zero_and_nonzero(per)
    out = triplet_loss(emb, trip, distance=name, margin=margin, soft=soft, reduction=reduction)
    _assert_matches(out, naive.reduce(per, reduction), reduction, dtype, len(trip))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_binary_pair_loss_matches_naive(seed, dtype, reduction):
    g = _gen(seed)
    # moderate logits: every per-pair loss is representably > 0 (see the extreme test)
    logits = (torch.randn(20, generator=g, dtype=torch.float64) * 3).to(dtype)
    same = torch.rand(20, generator=g) < 0.5
    per = naive.bce_with_logits(_lst(logits), same.tolist())
    out = binary_pair_loss(logits, same, reduction=reduction)
    _assert_matches(out, naive.reduce(per, reduction), reduction, dtype, 20)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_pair_loss_extreme_logits(dtype, reduction):
    # far tails must stay finite (no log(0)); confident-and-right pairs cost ~0,
    # confident-and-wrong pairs cost |logit|
    logits = torch.tensor([40.0, -40.0, 90.0, -90.0, 200.0, -200.0, 0.0], dtype=dtype)
    same = torch.tensor([True, False, False, True, True, True, False])
    per = naive.bce_with_logits(_lst(logits), same.tolist())
    out = binary_pair_loss(logits, same, reduction=reduction)
    assert torch.isfinite(out).all()
    exp = torch.tensor(naive.reduce(per, reduction), dtype=torch.float64)
    torch.testing.assert_close(out.double(), exp, rtol=1e-6, atol=1e-6)


def test_binary_pair_loss_accepts_column_logits():
    logits = torch.tensor([[2.0], [-1.0], [0.5]])
    same = torch.tensor([True, False, False])
    expected = naive.reduce(naive.bce_with_logits([2.0, -1.0, 0.5], same.tolist()), "mean")
    assert binary_pair_loss(logits, same).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        binary_pair_loss(torch.zeros(4), same)


MNR_LABELS = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4])


@pytest.mark.parametrize("scale", [20.0, 1.0])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_mnr_matches_naive(seed, dtype, with_labels, symmetric, scale):
    a, p = _emb(seed, 8, 6, dtype), _emb(seed + 10, 8, 6, dtype)
    labels = MNR_LABELS if with_labels else None
    expected = naive.multiple_negatives_ranking(
        _lst(a), _lst(p), scale=scale, labels=None if labels is None else labels.tolist(), symmetric=symmetric
    )
    out = multiple_negatives_ranking_loss(a, p, scale=scale, labels=labels, symmetric=symmetric)
    _assert_matches(out, expected, "mean", dtype, 8)


def test_mnr_label_mask_changes_the_loss():
    # the mask must actually remove same-class columns: guard against a no-op mask
    a, p = _emb(0, 8, 6), _emb(1, 8, 6)
    plain = multiple_negatives_ranking_loss(a, p)
    masked = multiple_negatives_ranking_loss(a, p, labels=MNR_LABELS)
    assert masked.item() < plain.item()  # fewer terms in every logsumexp of a labelled row
    # distinct labels everywhere = no mask
    assert multiple_negatives_ranking_loss(a, p, labels=torch.arange(8)).item() == pytest.approx(plain.item())
    with pytest.raises(ValueError, match="labels must have shape"):
        multiple_negatives_ranking_loss(a, p, labels=torch.arange(7))
    with pytest.raises(ValueError, match="differ in shape"):
        multiple_negatives_ranking_loss(a, p[:5])


# ====================================================================== gradients


def _grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, x)
    return g


def _weighted(values, weights: torch.Tensor):
    total = 0.0
    for v, w in zip(values, weights):
        total = total + v * w
    return total


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("path", ["few", "many"])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_contrastive_grad_matches_naive(name, power, path, reduction):
    n = 6
    emb = _emb(7, n, 3).requires_grad_(True)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    if path == "many":  # every ordered pair: 30 > 4 * 6
        a, b = (~torch.eye(n, dtype=torch.bool)).nonzero(as_tuple=True)
    else:
        p = all_pairs(labels)
        a, b = p.a[:10], p.b[:10]
    pairs = Pairs(a, b, labels[a] == labels[b])
    pm, nm = _margins(emb, pairs, name)
    kw = dict(distance=name, pos_margin=pm, neg_margin=nm, power=power)
    w = torch.rand(len(pairs), generator=_gen(7), dtype=torch.float64) + 0.5

    out = contrastive_loss(emb, pairs, reduction=reduction, **kw)
    loss = (out * w).sum() if reduction == "none" else out
    g = _grad(loss, emb)

    emb_ref = emb.detach().clone().requires_grad_(True)
    per = naive.contrastive_losses(emb_ref, a.tolist(), b.tolist(), pairs.same.tolist(), **kw)
    ref = _weighted(per, w) if reduction == "none" else naive.reduce(per, reduction)
    g_ref = _grad(ref, emb_ref)
    assert g_ref.abs().sum() > 0
    torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_triplet_grad_matches_naive(name, soft, reduction):
    emb = _emb(8, 6, 3).requires_grad_(True)
    trip = _triplets(6, 12, 8)
    w = torch.rand(len(trip), generator=_gen(8), dtype=torch.float64) + 0.5
    out = triplet_loss(emb, trip, distance=name, margin=0.2, soft=soft, reduction=reduction)
    g = _grad((out * w).sum() if reduction == "none" else out, emb)

    emb_ref = emb.detach().clone().requires_grad_(True)
    per = naive.triplet_losses(
        emb_ref, trip.anchor.tolist(), trip.positive.tolist(), trip.negative.tolist(),
        distance=name, margin=0.2, soft=soft,
    )
    ref = _weighted(per, w) if reduction == "none" else naive.reduce(per, reduction)
    g_ref = _grad(ref, emb_ref)
    assert g_ref.abs().sum() > 0
    torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_grad_matches_naive(reduction):
    g = _gen(9)
    logits = (torch.randn(10, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    same = torch.rand(10, generator=g) < 0.5
    w = torch.rand(10, generator=g, dtype=torch.float64) + 0.5
    out = binary_pair_loss(logits, same, reduction=reduction)
    grad = _grad((out * w).sum() if reduction == "none" else out, logits)
    ref_in = logits.detach().clone().requires_grad_(True)
    per = naive.bce_with_logits(ref_in, same.tolist())
    ref = _weighted(per, w) if reduction == "none" else naive.reduce(per, reduction)
    torch.testing.assert_close(grad, _grad(ref, ref_in))


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_labels", [False, True])
def test_mnr_grad_matches_naive(with_labels, symmetric):
    a, p = _emb(10, 5, 3).requires_grad_(True), _emb(11, 5, 3).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 2, 2]) if with_labels else None
    out = multiple_negatives_ranking_loss(a, p, scale=5.0, labels=labels, symmetric=symmetric)
    ga, gp = torch.autograd.grad(out, (a, p))
    a2, p2 = a.detach().clone().requires_grad_(True), p.detach().clone().requires_grad_(True)
    ref = naive.multiple_negatives_ranking(
        a2, p2, scale=5.0, labels=None if labels is None else labels.tolist(), symmetric=symmetric
    )
    ra, rp = torch.autograd.grad(ref, (a2, p2))
    torch.testing.assert_close(ga, ra)
    torch.testing.assert_close(gp, rp)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("path", ["few", "many"])
def test_contrastive_gradcheck(name, path):
    emb = _emb(12, 5, 3).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2])
    g = _gen(12)
    p = 8 if path == "few" else 30  # > 4 * 5: pairwise path
    a = torch.randint(0, 5, (p,), generator=g)
    b = (a + torch.randint(1, 5, (p,), generator=g)) % 5
    pairs = Pairs(a, b, labels[a] == labels[b])
    pm, nm = _margins(emb, pairs, name)
    assert torch.autograd.gradcheck(
        lambda e: contrastive_loss(e, pairs, distance=name, pos_margin=pm, neg_margin=nm, reduction="sum"),
        (emb,),
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("soft", [False, True])
def test_triplet_gradcheck(name, soft):
    emb = _emb(13, 5, 3).requires_grad_(True)
    trip = _triplets(5, 10, 13)
    assert torch.autograd.gradcheck(
        lambda e: triplet_loss(e, trip, distance=name, margin=0.3, soft=soft, reduction="mean"), (emb,)
    )


def test_binary_and_mnr_gradcheck():
    logits = _emb(14, 1, 9)[0].requires_grad_(True)
    same = torch.tensor([True, False] * 4 + [True])
    assert torch.autograd.gradcheck(lambda x: binary_pair_loss(x, same), (logits,))
    a, p = _emb(15, 5, 3).requires_grad_(True), _emb(16, 5, 3).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 2, 2])
    assert torch.autograd.gradcheck(
        lambda x, y: multiple_negatives_ranking_loss(x, y, scale=3.0, labels=labels, symmetric=True), (a, p)
    )


# ====================================================================== edge cases


def _empty_pairs() -> Pairs:
    e = torch.empty(0, dtype=torch.long)
    return Pairs(e, e, torch.empty(0, dtype=torch.bool))


def _empty_triplets() -> Triplets:
    e = torch.empty(0, dtype=torch.long)
    return Triplets(e, e, e)


EMPTY_CASES = {
    "contrastive": lambda x, r: contrastive_loss(x, _empty_pairs(), reduction=r),
    "triplet": lambda x, r: triplet_loss(x, _empty_triplets(), reduction=r),
    "triplet_soft": lambda x, r: triplet_loss(x, _empty_triplets(), soft=True, reduction=r),
    "binary": lambda x, r: binary_pair_loss(x[:0, 0], torch.empty(0, dtype=torch.bool), reduction=r),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "mean_nonzero"])
@pytest.mark.parametrize("case", sorted(EMPTY_CASES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_no_tuples_gives_zero_with_grad(case, reduction, dtype):
    emb = _emb(0, 6, 4, dtype).requires_grad_(True)
    loss = EMPTY_CASES[case](emb, reduction)
    assert loss.ndim == 0 and loss.dtype == dtype
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert emb.grad is not None and torch.equal(emb.grad, torch.zeros_like(emb))


@pytest.mark.parametrize("case", sorted(EMPTY_CASES))
def test_no_tuples_reduction_none_is_empty(case):
    out = EMPTY_CASES[case](_emb(0, 6, 4), "none")
    assert out.shape == (0,)


def test_mean_nonzero_all_zero_keeps_grad():
    emb = _emb(1, 10, 4).requires_grad_(True)
    pairs = all_pairs(LABELS10)
    # every positive inside pos_margin and every negative beyond neg_margin (0): nothing to learn
    loss = contrastive_loss(emb, pairs, pos_margin=1e6, neg_margin=0.0, reduction="mean_nonzero")
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))
    tl = triplet_loss(emb, _triplets(10, 5, 1), margin=-1e6, reduction="mean_nonzero")
    assert tl.item() == 0.0 and tl.grad_fn is not None


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_class(dtype):
    emb = _emb(2, 8, 4, dtype).requires_grad_(True)
    labels = torch.zeros(8, dtype=torch.long)
    pairs = AllPairsMiner().mine(emb, labels)
    assert bool(pairs.same.all()) and len(pairs) == 28
    out = contrastive_loss(emb, pairs, reduction="sum")
    per = naive.contrastive_losses(_lst(emb), pairs.a.tolist(), pairs.b.tolist(), pairs.same.tolist())
    _assert_matches(out, naive.reduce(per, "sum"), "sum", dtype, 28)
    hp = HardPairMiner(pos_margin=0.0, neg_margin=10.0).mine(emb, labels)
    assert len(hp) == 28 and bool(hp.same.all())
    for miner in (BatchHardMiner(), SemiHardMiner()):
        trip = miner.mine(emb, labels)
        assert len(trip) == 0
        loss = triplet_loss(emb, trip)
        assert loss.item() == 0.0 and loss.grad_fn is not None
        emb.grad = None
        loss.backward()
        assert torch.equal(emb.grad, torch.zeros_like(emb))


@pytest.mark.parametrize("path", ["few", "many"])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_embeddings_contrastive_finite(dtype, name, power, path):
    n = 10
    emb = _emb(3, 1, 5, dtype).repeat(n, 1).requires_grad_(True)
    pairs = _pairs(path, LABELS10, 3)
    out = contrastive_loss(emb, pairs, distance=name, neg_margin=1.5, power=power, reduction="none")
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(emb.grad).all()
    # d = 0 for every pair: positives cost 0, negatives neg_margin ** power (the exact
    # value in float32 through the pairwise matrix is tested in test_distances)
    expected = torch.where(pairs.same, 0.0, 1.5**power).to(torch.float64)
    torch.testing.assert_close(out.detach().double(), expected, rtol=0, atol=1e-2)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_embeddings_triplet_finite(dtype, name, soft):
    emb = _emb(4, 1, 5, dtype).repeat(8, 1).requires_grad_(True)
    trip = _triplets(8, 10, 4)
    out = triplet_loss(emb, trip, distance=name, margin=0.3, soft=soft)
    out.backward()
    assert torch.isfinite(emb.grad).all()
    expected = math.log(2.0) if soft else 0.3  # d_ap = d_an = 0
    assert out.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_embeddings_mnr_finite(dtype):
    a = _emb(5, 1, 4, dtype).repeat(6, 1).requires_grad_(True)
    p = a.detach().clone().requires_grad_(True)
    out = multiple_negatives_ranking_loss(a, p, symmetric=True)
    out.backward()
    assert out.item() == pytest.approx(math.log(6), rel=1e-5)  # all logits equal
    assert torch.isfinite(a.grad).all() and torch.isfinite(p.grad).all()


def test_batch_of_one():
    emb = _emb(6, 1, 4).requires_grad_(True)
    labels = torch.tensor([3])
    for miner in (AllPairsMiner(), HardPairMiner(), BatchHardMiner(), SemiHardMiner()):
        tuples = miner.mine(emb, labels)
        assert len(tuples) == 0
        loss = contrastive_loss(emb, tuples) if isinstance(tuples, Pairs) else triplet_loss(emb, tuples)
        assert loss.item() == 0.0
        emb.grad = None
        loss.backward()
        assert torch.equal(emb.grad, torch.zeros_like(emb))
    p = _emb(7, 1, 4).requires_grad_(True)
    mnr = multiple_negatives_ranking_loss(emb, p)
    assert mnr.item() == pytest.approx(0.0, abs=1e-12)  # one candidate: softmax = 1
    mnr.backward()
    assert torch.isfinite(p.grad).all()
    logit = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    b = binary_pair_loss(logit, torch.tensor([True]))
    assert b.item() == pytest.approx(naive.bce_with_logits_one(0.7, 1.0))


def test_integer_same_is_refused():
    emb = _emb(0, 4, 3)
    a, b = torch.tensor([0, 1]), torch.tensor([2, 3])
    for bad in (torch.tensor([1, 0]), torch.tensor([1, 0], dtype=torch.int32), torch.tensor([1.0, 0.0])):
        with pytest.raises(TypeError, match="bool"):
            contrastive_loss(emb, Pairs(a, b, bad))
        with pytest.raises(TypeError, match="bool"):
            binary_pair_loss(torch.zeros(2), bad)
        with pytest.raises(TypeError, match="bool"):
            pairs_from_pair_batch(bad)
    # the bool version of the same data works
    assert torch.isfinite(contrastive_loss(emb, Pairs(a, b, torch.tensor([True, False]))))


def test_bad_reduction_raises():
    emb = _emb(0, 4, 3)
    pairs = Pairs(torch.tensor([0]), torch.tensor([1]), torch.tensor([True]))
    trip = Triplets(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    for red in ("avg", "Mean", ""):
        with pytest.raises(ValueError, match="unknown reduction"):
            contrastive_loss(emb, pairs, reduction=red)
        with pytest.raises(ValueError, match="unknown reduction"):
            contrastive_loss(emb, _empty_pairs(), reduction=red)
        with pytest.raises(ValueError, match="unknown reduction"):
            triplet_loss(emb, trip, reduction=red)
        with pytest.raises(ValueError, match="unknown reduction"):
            triplet_loss(emb, _empty_triplets(), reduction=red)
        with pytest.raises(ValueError, match="unknown reduction"):
            binary_pair_loss(torch.zeros(1), torch.tensor([True]), reduction=red)
        with pytest.raises(ValueError, match="unknown reduction"):
            binary_pair_loss(torch.zeros(0), torch.zeros(0, dtype=torch.bool), reduction=red)


def test_embeddings_must_be_2d():
    with pytest.raises(ValueError, match="2-D"):
        contrastive_loss(torch.zeros(4), _empty_pairs())
    with pytest.raises(ValueError, match="2-D"):
        triplet_loss(torch.zeros(2, 3, 4), _empty_triplets())


# ====================================================================== pair_distances


class _Spy:
    """Wraps a distance and records which form pair_distances used."""

    def __init__(self, name: str):
        self.inner = get_distance(name)
        self.calls: list[str] = []

    def pairwise(self, x, y=None):
        self.calls.append("pairwise")
        return self.inner.pairwise(x, y)

    def paired(self, x, y):
        self.calls.append("paired")
        return self.inner.paired(x, y)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pair_distances_matrix_path_equals_paired_path(name, dtype):
    n = 12
    emb = _emb(20, n, 6, dtype).requires_grad_(True)
    g = _gen(20)
    a = torch.randint(0, n, (60,), generator=g)  # 60 > 4 * 12
    b = (a + torch.randint(1, n, (60,), generator=g)) % n

    spy = _Spy(name)
    many = pair_distances(emb, a, b, spy)
    assert spy.calls == ["pairwise"]
    few_spy = _Spy(name)
    few = pair_distances(emb, a[:10], b[:10], few_spy)
    assert few_spy.calls == ["paired"]

    direct = get_distance(name).paired(emb[a], emb[b])
    torch.testing.assert_close(many, direct, **TOL[dtype])
    torch.testing.assert_close(few, direct[:10], **TOL[dtype])
    g_many = _grad(many.sum(), emb)
    g_direct = _grad(direct.sum(), emb)
    gtol = 1e-4 if dtype == torch.float32 else 1e-8
    torch.testing.assert_close(g_many, g_direct, rtol=gtol, atol=gtol)


@pytest.mark.parametrize("name", NAMES)
def test_contrastive_duplicate_rows_do_not_depend_on_pair_count(name):
    """A positive pair of two identical embeddings costs 0 whatever the number of pairs.

    Through the pairwise-matrix path (many pairs) the float32 Euclidean distance of two
    identical rows comes out as sqrt(rounding error of ||x||^2 + ||y||^2 - 2 x.y)
    instead of 0.
    """
    emb = _emb(21, 16, 32, torch.float32)
    emb[1] = emb[0]
    labels = torch.arange(16) // 2  # rows 0 and 1 are a positive pair
    many = all_pairs(labels)  # 120 > 64
    few = Pairs(torch.tensor([0]), torch.tensor([1]), torch.tensor([True]))
    kw = dict(distance=name, power=1, reduction="none")
    loss_many = contrastive_loss(emb, many, **kw)
    loss_few = contrastive_loss(emb, few, **kw)
    idx = ((many.a == 0) & (many.b == 1)).nonzero().item()
    assert loss_few.item() == pytest.approx(0.0, abs=1e-6)
    assert loss_many[idx].item() == pytest.approx(0.0, abs=1e-5), (
        f"identical pair costs {loss_many[idx].item():.3g} via the pairwise path, {loss_few.item():.3g} via paired"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("margin", [0.0, 0.35])
@pytest.mark.parametrize("seed", [0, 1])
def test_normalized_softmax_matches_naive(seed: int, dtype: torch.dtype, margin: float) -> None:
    e = _emb(seed, 9, 5, dtype).requires_grad_(True)
    proxies = _emb(seed + 10, 4, 5, dtype).requires_grad_(True)
    labels = torch.randint(0, 4, (9,), generator=_gen(seed))
    out = normalized_softmax_loss(e, labels, proxies, scale=12.0, margin=margin)
    e_ref = e.detach().clone().requires_grad_(True)
    p_ref = proxies.detach().clone().requires_grad_(True)
    expected = naive.normalized_softmax(e_ref, labels.tolist(), p_ref, scale=12.0, margin=margin)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert out.item() == pytest.approx(float(expected.detach()), rel=tol, abs=tol)
    out.backward()
    expected.backward()
    torch.testing.assert_close(e.grad, e_ref.grad, rtol=tol * 10, atol=tol * 10)
    torch.testing.assert_close(proxies.grad, p_ref.grad, rtol=tol * 10, atol=tol * 10)


def test_normalized_softmax_margin_raises_the_loss_and_bad_input() -> None:
    e, proxies = _emb(0, 6, 4), _emb(1, 3, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    assert normalized_softmax_loss(e, labels, proxies, margin=0.3) > normalized_softmax_loss(e, labels, proxies)
    with pytest.raises(ValueError, match="index the 3 proxies"):
        normalized_softmax_loss(e, labels + 1, proxies)
    with pytest.raises(ValueError, match="proxies must be"):
        normalized_softmax_loss(e, labels, proxies[:, :3])
    with pytest.raises(ValueError, match="labels must have shape"):
        normalized_softmax_loss(e, labels[:5], proxies)
    empty = normalized_softmax_loss(e[:0].requires_grad_(True), labels[:0], proxies)
    assert empty.item() == 0.0
