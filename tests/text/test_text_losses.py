"""CoSENT, AnglE and cosine-similarity regression against loop references (values,
gradients, float32 and float64) and their edge cases."""

from __future__ import annotations

import pytest
import torch

from siamkit.losses import angle_loss, angle_similarity, cosent_loss, cosine_similarity_loss
from tests.reference import naive_text

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=3e-5, atol=3e-5), torch.float64: dict(rtol=1e-9, atol=1e-10)}
CASES = [
    ("cosent", lambda a, b, s: cosent_loss(a, b, s, scale=7.0), lambda a, b, s: naive_text.cosent(a, b, s, scale=7.0)),
    ("angle", lambda a, b, s: angle_loss(a, b, s, scale=3.0), lambda a, b, s: naive_text.angle_loss(a, b, s, scale=3.0)),
    ("cosine", cosine_similarity_loss, naive_text.cosine_mse),
]


def _data(seed: int, dtype: torch.dtype, n: int = 7, d: int = 6):
    g = torch.Generator().manual_seed(seed)
    e1 = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    e2 = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    scores = torch.tensor([0.0, 0.2, 0.2, 0.5, 0.9, 1.0, 0.4][:n], dtype=torch.float64)
    return e1, e2, scores


@pytest.mark.parametrize("name,fast,slow", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_value_and_gradient_match_the_reference(name, fast, slow, dtype, seed):
    e1, e2, scores = _data(seed, dtype)
    expected = slow(e1.double().tolist(), e2.double().tolist(), scores.tolist())
    a, b = e1.clone().requires_grad_(True), e2.clone().requires_grad_(True)
    out = fast(a, b, scores.to(dtype))
    assert out.dtype == dtype
    assert out.item() == pytest.approx(expected, rel=TOL[dtype]["rtol"], abs=TOL[dtype]["atol"])
    out.backward()
    ra, rb = e1.double().clone().requires_grad_(True), e2.double().clone().requires_grad_(True)
    slow(ra, rb, scores.tolist()).backward()
    torch.testing.assert_close(a.grad.double(), ra.grad, **TOL[dtype])
    torch.testing.assert_close(b.grad.double(), rb.grad, **TOL[dtype])


def test_cosent_only_the_order_of_scores_matters():
    e1, e2, scores = _data(3, torch.float64)
    base = cosent_loss(e1, e2, scores)
    assert cosent_loss(e1, e2, scores * 5 + 1).item() == pytest.approx(base.item())
    assert cosent_loss(e1, e2, scores.flip(0)).item() != pytest.approx(base.item())


def test_cosent_is_small_when_cosines_follow_the_scores():
    scores = torch.tensor([0.0, 0.5, 1.0])
    angles = torch.tensor([2.0, 1.0, 0.0])  # higher score, smaller angle
    e1 = torch.stack([torch.ones(3), torch.zeros(3)], dim=1)
    e2 = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    good = cosent_loss(e1, e2, scores)
    bad = cosent_loss(e1, e2, scores.flip(0))
    assert good.item() < 0.01 < bad.item()


def test_equal_scores_and_empty_batches_give_zero_with_gradient():
    e1 = torch.randn(4, 6, requires_grad=True)
    e2 = torch.randn(4, 6)
    for loss in (cosent_loss(e1, e2, torch.ones(4)), angle_loss(e1, e2, torch.ones(4))):
        assert loss.item() == pytest.approx(0.0, abs=1e-7)
        loss.backward()
    empty = torch.zeros(0, 6, requires_grad=True)
    for fn in (cosent_loss, angle_loss, cosine_similarity_loss):
        out = fn(empty, empty, torch.zeros(0))
        assert out.item() == 0.0
        out.backward()


def test_bad_shapes_are_refused():
    e = torch.randn(4, 6)
    with pytest.raises(ValueError, match="scores"):
        cosent_loss(e, e, torch.ones(3))
    with pytest.raises(ValueError, match="differ"):
        cosine_similarity_loss(e, e[:3], torch.ones(4))
    with pytest.raises(ValueError, match="even"):
        angle_similarity(torch.randn(2, 5), torch.randn(2, 5))


def test_cosine_loss_is_zero_at_the_target_cosines():
    e1, e2, _ = _data(5, torch.float64)
    target = torch.nn.functional.cosine_similarity(e1, e2)
    assert cosine_similarity_loss(e1, e2, target).item() == pytest.approx(0.0, abs=1e-12)
