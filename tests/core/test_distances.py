"""siamkit.distances against scipy, scikit-learn and the naive reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.metrics import pairwise as skp

from siamkit.distances import (
    DISTANCES,
    BaseDistance,
    CosineDistance,
    EuclideanDistance,
    L1Distance,
    SquaredEuclideanDistance,
    get_distance,
)
from tests.reference import naive

NAMES = ["euclidean", "sqeuclidean", "cosine", "l1"]
SCIPY_METRIC = {"euclidean": "euclidean", "sqeuclidean": "sqeuclidean", "cosine": "cosine", "l1": "cityblock"}
DTYPES = [torch.float32, torch.float64]
# tolerance on distances of order 1..10, by dtype
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def _rand(seed: int, *shape: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _np(t: torch.Tensor) -> np.ndarray:
    # the exact values siamkit sees, in float64, so only siamkit's arithmetic differs
    return t.detach().double().numpy()


def _close(actual: torch.Tensor, expected, dtype: torch.dtype) -> None:
    expected = torch.tensor(np.array(expected, dtype=np.float64))
    torch.testing.assert_close(actual.double(), expected, **TOL[dtype])


# ------------------------------------------------------------------ vs scipy / sklearn


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_matches_scipy_cdist(name, dtype, seed):
    x, y = _rand(seed, 13, 7, dtype=dtype), _rand(seed + 100, 9, 7, dtype=dtype)
    d = get_distance(name).pairwise(x, y)
    assert d.shape == (13, 9) and d.dtype == dtype
    _close(d, cdist(_np(x), _np(y), metric=SCIPY_METRIC[name]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_pairwise_with_itself_matches_scipy_off_diagonal(name, dtype):
    # y=None means y=x; the diagonal (identical rows) has its own test below
    x = _rand(3, 11, 6, dtype=dtype)
    d = get_distance(name).pairwise(x)
    expected = cdist(_np(x), _np(x), metric=SCIPY_METRIC[name])
    off = ~torch.eye(11, dtype=torch.bool)
    _close(d[off], expected[off.numpy()], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_paired_matches_scipy(name, dtype, seed):
    x, y = _rand(seed, 12, 5, dtype=dtype), _rand(seed + 50, 12, 5, dtype=dtype)
    d = get_distance(name).paired(x, y)
    assert d.shape == (12,) and d.dtype == dtype
    _close(d, np.diag(cdist(_np(x), _np(y), metric=SCIPY_METRIC[name])), dtype)


SKLEARN_PAIRWISE = {
    "euclidean": lambda a, b: skp.euclidean_distances(a, b),
    "sqeuclidean": lambda a, b: skp.euclidean_distances(a, b, squared=True),
    "cosine": lambda a, b: skp.cosine_distances(a, b),
    "l1": lambda a, b: skp.manhattan_distances(a, b),
}
SKLEARN_PAIRED = {"euclidean": "euclidean", "cosine": "cosine", "l1": "manhattan"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_pairwise_matches_sklearn(name, dtype):
    x, y = _rand(7, 10, 8, dtype=dtype), _rand(8, 6, 8, dtype=dtype)
    _close(get_distance(name).pairwise(x, y), SKLEARN_PAIRWISE[name](_np(x), _np(y)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(SKLEARN_PAIRED))
def test_paired_matches_sklearn(name, dtype):
    x, y = _rand(9, 10, 8, dtype=dtype), _rand(10, 10, 8, dtype=dtype)
    # sklearn's paired cosine is 0.5 * ||x/|x| - y/|y|||^2 = 1 - cos: the same quantity
    expected = skp.paired_distances(_np(x), _np(y), metric=SKLEARN_PAIRED[name])
    _close(get_distance(name).paired(x, y), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_pairwise_matches_naive_reference(name, dtype):
    x, y = _rand(11, 6, 4, dtype=dtype), _rand(12, 5, 4, dtype=dtype)
    fn = naive.DISTANCES[name]
    expected = [[fn(a, b) for b in _np(y).tolist()] for a in _np(x).tolist()]
    _close(get_distance(name).pairwise(x, y), expected, dtype)


def test_l1_pairwise_chunked_path_matches_scipy():
    # 2**24 // (m * dim) < n forces the row-chunked branch of L1Distance._pairwise
    # chunk = 2**24 // (1100 * 64) = 238 rows: 239 rows leave a last chunk of one row
    x, y = _rand(0, 239, 64, dtype=torch.float32), _rand(1, 1100, 64, dtype=torch.float32)
    assert 2**24 // (1100 * 64) == 238
    _close(L1Distance().pairwise(x, y), cdist(_np(x), _np(y), metric="cityblock"), torch.float32)


@pytest.mark.parametrize("name", NAMES)
def test_small_nonzero_distances_are_accurate_in_float64(name):
    # near neighbours at distance ~1e-4: nothing may clamp or round them to another value
    x = _rand(12, 10, 8, dtype=torch.float64)
    y = x + 1e-4 * _rand(13, 10, 8, dtype=torch.float64)
    dist = get_distance(name)
    expected = np.diag(cdist(_np(x), _np(y), metric=SCIPY_METRIC[name]))
    got_pairwise = dist.pairwise(x, y).diagonal()
    for got in (got_pairwise, dist.paired(x, y)):
        torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["euclidean", "sqeuclidean"])
def test_many_near_duplicates_match_scipy(name, dtype):
    # a batch that is one point plus tiny noise: every pair is a near-duplicate, far more
    # than the few a row-by-row refinement would handle (40 x 40 pairs for 80 rows)
    c = _rand(14, 1, 16, dtype=torch.float64) * 2
    x = (c + 1e-3 * _rand(15, 40, 16, dtype=torch.float64)).to(dtype).requires_grad_(True)
    d = get_distance(name).pairwise(x)
    expected = torch.tensor(cdist(_np(x), _np(x), metric=SCIPY_METRIC[name]))
    scale = 1e-6 if name == "euclidean" else 1e-9
    tol = dict(rtol=1e-4, atol=scale) if dtype == torch.float32 else dict(rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(d.detach().double(), expected, **tol)
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_ranking_pairwise_has_the_order_of_pairwise(name, dtype):
    # miners rank with ranking_pairwise: it must give the same per-row order
    x, y = _rand(16, 12, 6, dtype=dtype), _rand(17, 30, 6, dtype=dtype)
    dist = get_distance(name)
    r, d = dist.ranking_pairwise(x, y), dist.pairwise(x, y)
    assert r.shape == d.shape == (12, 30)
    assert torch.equal(r.argsort(dim=1), d.argsort(dim=1))
    r_self = dist.ranking_pairwise(x)
    off = ~torch.eye(12, dtype=torch.bool)
    assert torch.equal(r_self[off].view(12, 11).argsort(1), dist.pairwise(x)[off].view(12, 11).argsort(1))


# ------------------------------------------------------------------ internal consistency


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_pairwise_diagonal_equals_paired(name, dtype, seed):
    x, y = _rand(seed, 15, 6, dtype=dtype), _rand(seed + 30, 15, 6, dtype=dtype)
    dist = get_distance(name)
    torch.testing.assert_close(dist.pairwise(x, y).diagonal(), dist.paired(x, y), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_identical_rows_have_zero_distance_in_both_forms(name, dtype):
    """The module promises pairwise and paired agree, and identical rows give distance 0.

    The tolerance scales with the embeddings' norm: an accurate float32 computation is
    off by a few ulps of ||x|| (||x||^2 for the squared distance), not by sqrt(ulp).
    """
    x = _rand(5, 40, 16, dtype=dtype)
    dist = get_distance(name)
    scale = float(x.norm(dim=1).max())
    power = {"sqeuclidean": 2, "cosine": 0}.get(name, 1)
    atol = (1e-5 if dtype == torch.float32 else 1e-12) * scale**power
    paired = dist.paired(x, x)
    if name == "cosine":  # 1 - <x/|x|, x/|x|> is 0 up to rounding (either sign)
        assert paired.abs().max().item() <= 4 * torch.finfo(dtype).eps
    else:
        assert torch.equal(paired, torch.zeros_like(paired))
    # y=None (the batch against itself) and a separate copy of the same rows
    for diag in (dist.pairwise(x).diagonal(), dist.pairwise(x, x.clone()).diagonal()):
        assert diag.abs().max().item() <= atol, (
            f"{name} pairwise(x, x) diagonal is up to {diag.abs().max().item():.3g}, "
            f"paired(x, x) is exactly 0 (tolerance {atol:.3g})"
        )


@pytest.mark.parametrize("name", NAMES)
def test_distances_are_symmetric_and_nonnegative(name):
    x = _rand(4, 20, 5, dtype=torch.float64)
    d = get_distance(name).pairwise(x)
    # cosine: 1 - cos may round to -1e-16 on the diagonal; nothing more negative
    assert (d >= -4 * torch.finfo(d.dtype).eps).all()
    torch.testing.assert_close(d, d.T)


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("form", ["pairwise", "paired"])
def test_gradients_finite_for_identical_embeddings(name, dtype, form):
    base = _rand(2, 6, 5, dtype=dtype)
    base[1] = base[0]  # a duplicated row inside the batch
    x = base.clone().requires_grad_(True)
    y = base.clone().requires_grad_(True)  # row-by-row identical to x
    dist = get_distance(name)
    d = dist.pairwise(x, y) if form == "pairwise" else dist.paired(x, y)
    d.sum().backward()
    assert torch.isfinite(d).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    if form == "paired":
        # every pair is identical: the distance is 0 and so is the chosen (sub)gradient
        if name != "cosine":
            assert torch.equal(d, torch.zeros_like(d))
            assert torch.equal(x.grad, torch.zeros_like(x.grad))
        else:  # cosine is 0, with a zero gradient, only up to rounding
            assert d.abs().max() <= 4 * torch.finfo(dtype).eps
            assert x.grad.abs().max() < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_naive_reference(name):
    x = _rand(21, 4, 3, dtype=torch.float64).requires_grad_(True)
    y = _rand(22, 4, 3, dtype=torch.float64).requires_grad_(True)
    w = _rand(23, 4, 4, dtype=torch.float64)
    (get_distance(name).pairwise(x, y) * w).sum().backward()
    gx, gy = x.grad.clone(), y.grad.clone()
    x.grad = y.grad = None
    ref = naive.distance_matrix(torch.cat([x, y]), name)
    total = sum(ref[i][4 + j] * w[i, j] for i in range(4) for j in range(4))
    total.backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gy, y.grad)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("form", ["pairwise", "paired"])
def test_gradcheck(name, form):
    x = _rand(31, 4, 3, dtype=torch.float64).requires_grad_(True)
    y = _rand(32, 4, 3, dtype=torch.float64).requires_grad_(True)
    dist = get_distance(name)
    fn = dist.pairwise if form == "pairwise" else dist.paired
    assert torch.autograd.gradcheck(fn, (x, y))


# ------------------------------------------------------------------ errors and registry


@pytest.mark.parametrize("name", NAMES)
def test_shape_errors(name):
    dist = get_distance(name)
    with pytest.raises(ValueError, match="2-D"):
        dist.pairwise(torch.randn(5))
    with pytest.raises(ValueError, match="2-D"):
        dist.pairwise(torch.randn(3, 4), torch.randn(4))
    with pytest.raises(ValueError, match="2-D"):
        dist.paired(torch.randn(5), torch.randn(5))
    with pytest.raises(ValueError, match="2-D"):
        dist.pairwise(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="sizes differ"):
        dist.pairwise(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="sizes differ"):
        dist.paired(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="same number of rows"):
        dist.paired(torch.randn(3, 4), torch.randn(2, 4))
    # different N is fine for the all-pairs form
    assert dist.pairwise(torch.randn(3, 4), torch.randn(2, 4)).shape == (3, 2)


def test_get_distance_unknown_name_lists_choices():
    with pytest.raises(ValueError) as exc:
        get_distance("manhattan")
    msg = str(exc.value)
    assert "manhattan" in msg
    for name in NAMES:
        assert name in msg


def test_get_distance_names_and_instances():
    expected = {
        "euclidean": EuclideanDistance,
        "sqeuclidean": SquaredEuclideanDistance,
        "cosine": CosineDistance,
        "l1": L1Distance,
    }
    assert sorted(DISTANCES) == sorted(expected)
    for name, cls in expected.items():
        d = get_distance(name)
        assert type(d) is cls and d.name == name
    inst = CosineDistance()
    assert get_distance(inst) is inst
    assert CosineDistance.bounded and not EuclideanDistance.bounded
    assert isinstance(get_distance("l1"), BaseDistance)


# ------------------------------------------------------------------ scores


@pytest.mark.parametrize("name", NAMES)
def test_to_score_is_monotone_decreasing(name):
    dist = get_distance(name)
    top = 2.0 if name == "cosine" else 50.0
    d = torch.linspace(0.0, top, 401, dtype=torch.float64)
    s = dist.to_score(d)
    assert (s[1:] < s[:-1]).all(), "score must strictly decrease as the distance grows"
    assert s[0].item() == pytest.approx(1.0)  # identical = 1
    assert (s >= 0).all() and (s <= 1).all()
    if name == "cosine":
        assert s[-1].item() == pytest.approx(0.0)  # opposite = 0


def test_to_score_documented_formulas():
    d = torch.tensor([0.0, 0.5, 1.0, 2.0, 7.0], dtype=torch.float64)
    torch.testing.assert_close(CosineDistance().to_score(d[:4]), 1.0 - d[:4] / 2.0)
    for name in ("euclidean", "sqeuclidean", "l1"):
        torch.testing.assert_close(get_distance(name).to_score(d), 1.0 / (1.0 + d))


@pytest.mark.parametrize("name", NAMES)
def test_to_score_reverses_the_distance_ranking(name):
    x = _rand(40, 1, 6, dtype=torch.float64)
    ys = _rand(41, 30, 6, dtype=torch.float64)
    dist = get_distance(name)
    d = dist.pairwise(x, ys)[0]
    s = dist.to_score(d)
    assert torch.equal(torch.argsort(d), torch.argsort(s, descending=True))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_streamed_paired_equals_the_plain_path(name: str, dtype: torch.dtype) -> None:
    """Without gradients, many rows go through reused row-chunk buffers (perf suite:
    pair scoring); the numbers are those of the one-shot expression, duplicates and
    zero rows included, and of scipy; with gradients the one-shot path runs."""
    d = get_distance(name)
    x = _rand(1, 5000, 130, dtype=dtype)  # 650k elements: several chunks, a partial last one
    y = _rand(2, 5000, 130, dtype=dtype)
    y[:7] = x[:7]  # identical rows: euclidean gives exactly 0
    x[7:9] = 0.0  # zero rows: cosine's eps clamp
    with torch.no_grad():
        streamed = d.paired(x, y)
    plain = d._paired(x, y)
    assert streamed.shape == (5000,) and streamed.dtype == dtype
    torch.testing.assert_close(streamed, plain, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-6)
    ref = np.array([cdist(x[i : i + 1].numpy(), y[i : i + 1].numpy(), SCIPY_METRIC[name])[0, 0] for i in range(9, 200)])
    np.testing.assert_allclose(streamed[9:200].numpy(), ref, **TOL[dtype])
    if name == "euclidean":
        assert (streamed[:7] == 0).all()
    xg = x.clone().requires_grad_(True)
    out = d.paired(xg, y)
    assert out.requires_grad
    out.sum().backward()
    assert torch.isfinite(xg.grad).all()
