"""conv4_multiscale: embeddings from two depths of conv4."""

from __future__ import annotations

import pytest
import torch

from siamkit.encoders import create_encoder
from siamkit.io import load_model, save_model
from siamkit.network import SiameseNetwork


def test_fused_shape_and_uses_the_intermediate_block() -> None:
    torch.manual_seed(0)
    enc = create_encoder("conv4_multiscale", embedding_dim=16, width=8, grid=3, depth=3, tap=1, tap_grid=3)
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    out = enc(x)
    assert out.shape == (2, 16) and enc.embedding_dim == 16
    # the projection takes the last map (8 x 3 x 3) and the tapped one (8 x 3 x 3)
    assert enc.head[-1].in_features == 8 * 9 + 8 * 9
    out.sum().backward()
    assert enc.head[-1].weight.grad[:, 72:].abs().sum() > 0  # the local part gets gradient


def test_concat_parts_are_weighted() -> None:
    torch.manual_seed(0)
    enc = create_encoder("conv4_multiscale", embedding_dim=16, width=8, grid=1, depth=3, tap=2, mode="concat",
                         local_dim=4, local_weight=0.36).eval()
    e = enc(torch.rand(5, 1, 28, 28))
    assert torch.allclose(e[:, :12].norm(dim=1), torch.full((5,), 0.8), atol=1e-5)
    assert torch.allclose(e[:, 12:].norm(dim=1), torch.full((5,), 0.6), atol=1e-5)


def test_saved_and_rebuilt(tmp_path) -> None:
    enc = create_encoder("conv4_multiscale", embedding_dim=8, width=4, grid=2, depth=3, tap=2, mode="concat", local_dim=2)
    net = SiameseNetwork(enc).eval()
    back = load_model(save_model(net, tmp_path / "m"))
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(back.embed(x), net.embed(x), atol=1e-6)


@pytest.mark.parametrize("kw", [{"tap": 3}, {"tap": 0}, {"mode": "sum"}, {"mode": "concat", "local_dim": 16},
                                {"mode": "concat", "local_weight": 1.0}])
def test_bad_options(kw: dict) -> None:
    with pytest.raises(ValueError):
        create_encoder("conv4_multiscale", embedding_dim=16, depth=3, **kw)
