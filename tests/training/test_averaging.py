"""WiSE-FT weight interpolation: against a loop reference, and the choice on validation scores."""

import pytest
import torch

from siamkit.errors import DataError
from siamkit.training.averaging import choose_interpolation, interpolate_state


def _pair():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    a.register_buffer("count", torch.tensor(3))
    b.register_buffer("count", torch.tensor(7))
    return a, b


def test_interpolate_matches_elementwise_reference():
    a, b = _pair()
    mixed = interpolate_state(a.state_dict(), b.state_dict(), 0.3)
    for key in ("weight", "bias"):
        s, t = a.state_dict()[key], b.state_dict()[key]
        ref = torch.tensor([0.7 * x + 0.3 * y for x, y in zip(s.flatten().tolist(), t.flatten().tolist())]).view_as(s)
        assert torch.allclose(mixed[key], ref, atol=1e-6)
    assert mixed["count"].item() == 7  # integer buffers come from the fine-tuned model
    assert torch.equal(interpolate_state(a.state_dict(), b.state_dict(), 1.0)["weight"], b.weight)
    assert torch.equal(interpolate_state(a.state_dict(), b.state_dict(), 0.0)["weight"], a.weight)


def test_interpolate_rejects_bad_alpha_and_mismatched_models():
    a, b = _pair()
    with pytest.raises(DataError, match="alpha"):
        interpolate_state(a.state_dict(), b.state_dict(), 1.5)
    with pytest.raises(DataError, match="other weights"):
        interpolate_state(torch.nn.Linear(4, 3).state_dict(), b.state_dict(), 0.5)
    with pytest.raises(DataError, match="shape"):
        interpolate_state(torch.nn.Linear(5, 3).state_dict(), torch.nn.Linear(4, 3).state_dict(), 0.5)


def test_choose_interpolation_keeps_the_best_mix_and_prefers_the_fine_tune_on_ties():
    a, b = _pair()
    start = {k: v.clone() for k, v in a.state_dict().items()}
    tuned_w = b.weight.detach().clone()
    target = torch.lerp(start["weight"], tuned_w, 0.7)  # the score peaks at alpha 0.7
    alpha, tried = choose_interpolation(b, start, lambda: -float((b.weight - target).abs().sum()))
    assert alpha == pytest.approx(0.7)
    assert torch.allclose(b.weight, target, atol=1e-6)
    assert [r["alpha"] for r in tried] == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    c, d = _pair()
    alpha, _ = choose_interpolation(d, c.state_dict(), lambda: 1.0)  # every mix scores the same
    assert alpha == 1.0 and torch.equal(d.weight, _pair()[1].weight)
