from __future__ import annotations

import pytest
import torch

from siamkit import DataError, SiameseNetwork, create_encoder, list_encoders
from siamkit.summary import summarize


def test_registry_lists_and_rejects_typos() -> None:
    assert {"conv4", "koch", "resnet", "mlp"} <= set(list_encoders())
    with pytest.raises(TypeError, match="embeding_dim"):
        create_encoder("conv4", embeding_dim=3)
    with pytest.raises(ValueError, match="unknown encoder"):
        create_encoder("vgg")


@pytest.mark.parametrize("side", [8, 28, 33, 105])
@pytest.mark.parametrize("channels", [1, 3])
def test_conv4_any_size_and_channels(side: int, channels: int) -> None:
    enc = create_encoder("conv4", in_channels=channels, embedding_dim=24)
    assert enc(torch.rand(2, channels, side, side)).shape == (2, 24)


def test_conv4_default_is_protonet_64d_at_28() -> None:
    enc = create_encoder("conv4", in_channels=1)
    assert enc.embedding_dim == 64 and enc(torch.rand(3, 1, 28, 28)).shape == (3, 64)


def test_koch_matches_paper_shapes() -> None:
    enc = create_encoder("koch", in_channels=1)
    s = summarize(enc, (1, 105, 105))
    convs = [l for l in s.layers if l.kind == "Conv2d"]
    assert [l.output_shape for l in convs] == [(-1, 64, 96, 96), (-1, 128, 42, 42), (-1, 128, 18, 18), (-1, 256, 6, 6)]
    assert s.output_shape == (-1, 4096)
    assert 38_000_000 < s.total_params < 39_500_000
    with pytest.raises(DataError, match="65x65"):
        enc(torch.rand(1, 1, 40, 40))


def test_resnet_and_channel_errors() -> None:
    enc = create_encoder("resnet", in_channels=3, embedding_dim=32)
    assert enc(torch.rand(2, 3, 40, 30)).shape == (2, 32)
    with pytest.raises(DataError, match="3-channel"):
        enc(torch.rand(2, 1, 40, 30))
    with pytest.raises(DataError, match=r"\(B, C, H, W\)"):
        enc(torch.rand(1, 40, 30))


def test_twins_share_every_weight() -> None:
    net = SiameseNetwork(create_encoder("conv4", in_channels=1, embedding_dim=8, width=4), head="l1")
    x1, x2 = torch.rand(3, 1, 16, 16), torch.rand(3, 1, 16, 16)
    e1, e2 = net(x1, x2)
    net.eval()
    e1, e2 = net(x1, x2)
    # swapping the inputs swaps the outputs: one encoder, not two copies
    f2, f1 = net(x2, x1)
    assert torch.allclose(e1, f1, atol=1e-6) and torch.allclose(e2, f2, atol=1e-6)
    # one set of encoder parameters; the gradient of both branches lands in it
    n_params = sum(p.numel() for p in net.encoder.parameters())
    assert sum(p.numel() for p in net.parameters()) == n_params + 8 + 1
    net.pair_logits(e1, e2).sum().backward()
    assert all(p.grad is not None for p in net.encoder.parameters() if p.requires_grad)


def test_pair_distance_conventions() -> None:
    torch.manual_seed(0)
    net = SiameseNetwork(create_encoder("mlp", in_features=6, embedding_dim=4), normalize=True).eval()
    x = torch.rand(4, 6)
    d = net.pair_distance(x, x)
    assert torch.allclose(d, torch.zeros(4), atol=1e-6)
    s = net.distance_to_score(d)
    assert torch.allclose(s, torch.ones(4))
    y = torch.rand(4, 6)
    assert (net.distance_to_score(net.pair_distance(x, y)) < 1).all()
    with pytest.raises(ValueError, match="differ in shape"):
        net(x, y[:2])
    with pytest.raises(RuntimeError, match="no pair head"):
        net.pair_logits(x, y)


@pytest.mark.parametrize("normalize", [True, False])
def test_embed_all_tta_is_the_mean_over_the_views(normalize: bool) -> None:
    from siamkit.inference import embed_all

    torch.manual_seed(0)
    net = SiameseNetwork(create_encoder("conv4", in_channels=1, embedding_dim=8, width=4), normalize=normalize)
    x = (torch.rand(5, 1, 9, 7) * 255).to(torch.uint8)
    xf = x.float() / 255

    def shifted(dy: int, dx: int) -> torch.Tensor:  # the slow way: index with clamped coordinates
        rows = (torch.arange(9) - dy).clamp(0, 8)
        cols = (torch.arange(7) - dx).clamp(0, 6)
        return xf[:, :, rows][:, :, :, cols]

    def mean_of(views: list[torch.Tensor]) -> torch.Tensor:
        m = torch.stack([embed_all(net, v) for v in views]).mean(0)
        return torch.nn.functional.normalize(m, dim=1) if normalize else m

    shifts = [shifted(0, 0), shifted(1, 0), shifted(-1, 0), shifted(0, 1), shifted(0, -1)]
    torch.testing.assert_close(embed_all(net, x, tta="shift"), mean_of(shifts), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(embed_all(net, x, tta="flip"), mean_of([xf, xf.flip(-1)]), rtol=1e-5, atol=1e-6)
    both = shifts + [v.flip(-1) for v in shifts]
    torch.testing.assert_close(embed_all(net, x, tta="shift+flip", batch_size=2), mean_of(both), rtol=1e-5, atol=1e-6)
    assert embed_all(net, x[:0], tta="shift").shape == (0, 8)
    with pytest.raises(ValueError, match="tta 'rotate'"):
        embed_all(net, x, tta="rotate")
    vec = SiameseNetwork(create_encoder("mlp", in_features=4, embedding_dim=3))
    with pytest.raises(ValueError, match="tta needs images"):
        embed_all(vec, torch.rand(2, 4), tta="shift")
