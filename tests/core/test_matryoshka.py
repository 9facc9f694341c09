"""Matryoshka embeddings: the loss against the obvious reference, sizes everywhere."""

from __future__ import annotations

import warnings

import pytest
import torch

from siamkit.errors import EmbeddingSizeError, SiamkitError
from siamkit.inference import embed_all
from siamkit.io import load_model, save_model
from siamkit.matryoshka import TruncationWarning, check_dims, matryoshka_loss, parse_dims, prefix, resolve_dim
from siamkit.training import TrainConfig
from siamkit.training.components import build_network, make_miner
from siamkit.training.objective import Objective
from tests.reference import naive_matryoshka as ref

DIMS = (2, 4, 8)
LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])


def _setup(dtype: torch.dtype = torch.float64, **kw: object) -> tuple[Objective, torch.Tensor]:
    cfg = TrainConfig(encoder="mlp", embedding_dim=8, matryoshka_dims=DIMS, progress=False, **kw)  # type: ignore[arg-type]
    net = build_network(cfg, (6,))
    g = torch.Generator().manual_seed(3)
    e = torch.randn(LABELS.numel(), 8, generator=g, dtype=torch.float64).to(dtype)
    if cfg.normalize:
        e = torch.nn.functional.normalize(e, dim=1)
    return Objective(cfg, net, make_miner(cfg, net)), e.requires_grad_()


def _grad(value: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(value, e)
    return g


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "sqeuclidean"])
@pytest.mark.parametrize("normalize", [True, False])
def test_triplet_matches_reference(distance: str, normalize: bool) -> None:
    obj, e = _setup(distance=distance, normalize=normalize, margin=0.3)
    got = obj(e, LABELS)
    want = ref.matryoshka_triplet(e, LABELS.tolist(), DIMS, distance=distance, margin=0.3, normalize=normalize)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(_grad(got, e), _grad(want, e), rtol=1e-7, atol=1e-9)


def test_weights_and_float32() -> None:
    obj, e = _setup(torch.float32, matryoshka_weights=(0.5, 0.0, 2.0))
    got = obj(e, LABELS)
    want = ref.matryoshka_triplet(e.double(), LABELS.tolist(), DIMS, distance="euclidean", margin=0.2,
                                  normalize=True, weights=(0.5, 0.0, 2.0))
    torch.testing.assert_close(got.double(), want.detach(), rtol=2e-5, atol=2e-5)


def test_contrastive_matches_reference() -> None:
    obj, e = _setup(loss="contrastive", margin=1.0)
    got = obj(e, LABELS)
    want = ref.matryoshka_contrastive(e, LABELS.tolist(), DIMS, distance="euclidean", neg_margin=1.0, normalize=True)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(_grad(got, e), _grad(want, e), rtol=1e-7, atol=1e-9)


def test_mnr_matches_reference() -> None:
    obj, e = _setup(loss="mnr", m_per_class=3, batch_size=12)
    got = obj(e, LABELS)
    want = ref.matryoshka_mnr(e, DIMS, 3, scale=20.0, normalize=True)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_plain_config_is_the_single_size_loss() -> None:
    obj, e = _setup()
    full = obj.one_size(e, LABELS)
    parts = sum(obj.one_size(prefix(e, d, normalize=True), LABELS) for d in DIMS)
    torch.testing.assert_close(obj(e, LABELS), parts)
    assert not torch.allclose(obj(e, LABELS), full)  # the prefixes do add terms


def test_binary_head_uses_its_first_weights() -> None:
    obj, e = _setup(loss="binary")
    net = obj.network.double()
    a, b = e[:3, :4], e[3:6, :4]
    want = (a - b).abs() @ net.pair_head.weight[0, :4] + net.pair_head.bias
    torch.testing.assert_close(net.pair_logits(a, b), want)
    assert torch.isfinite(obj(e, LABELS))


def test_normsoftmax_prefix_uses_proxy_prefix() -> None:
    cfg = TrainConfig(encoder="mlp", embedding_dim=8, matryoshka_dims=DIMS, loss="normsoftmax", progress=False)
    net = build_network(cfg, (6,))
    proxies = torch.randn(4, 8, dtype=torch.float64)
    obj = Objective(cfg, net, None, proxies=proxies, class_values=torch.arange(4))
    e = torch.nn.functional.normalize(torch.randn(12, 8, dtype=torch.float64), dim=1)
    from siamkit.losses import normalized_softmax_loss

    want = sum(normalized_softmax_loss(prefix(e, d, normalize=True), LABELS, proxies[:, :d], scale=16.0, margin=0.2)
               for d in DIMS)
    torch.testing.assert_close(obj(e, LABELS), want)


def test_matryoshka_loss_refuses_bad_weights() -> None:
    with pytest.raises(EmbeddingSizeError, match="2 matryoshka weights for 3"):
        matryoshka_loss(lambda p: p.sum(), torch.ones(2, 8), DIMS, normalize=False, weights=(1, 1))


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"matryoshka_dims": (4, 2, 8)}, "strictly increasing"),
        ({"matryoshka_dims": (2, 4)}, "must end at the embedding size 8"),
        ({"matryoshka_dims": (0, 8)}, "strictly increasing"),
        ({"matryoshka_dims": ()}, "empty"),
        ({"matryoshka_dims": (2, 8), "matryoshka_weights": (1.0,)}, "2 non-negative"),
        ({"matryoshka_weights": (1.0,)}, "without matryoshka_dims"),
    ],
)
def test_config_refuses(kw: dict, msg: str) -> None:
    with pytest.raises(SiamkitError, match=msg):
        TrainConfig(encoder="mlp", embedding_dim=8, **kw)


def test_config_round_trip_and_encoder_size_check() -> None:
    cfg = TrainConfig(encoder="mlp", embedding_dim=8, matryoshka_dims=[2, 8])  # a list from JSON / TOML
    assert cfg.matryoshka_dims == (2, 8)
    assert TrainConfig.from_dict(cfg.to_dict()).matryoshka_dims == (2, 8)
    with pytest.raises(EmbeddingSizeError, match="end at the embedding size"):
        build_network(TrainConfig(encoder="conv4", embedding_dim=None, matryoshka_dims=(4, 8)), (1, 28, 28))


def test_parse_and_resolve() -> None:
    assert parse_dims(" 16, 32,64 ") == (16, 32, 64)
    for bad in ("", "a,b", "0,4"):
        with pytest.raises(EmbeddingSizeError):
            parse_dims(bad)
    assert check_dims([1, 3]) == (1, 3)
    assert resolve_dim(None, 8, DIMS) == 8
    assert resolve_dim(4, 8, DIMS) == 4
    with pytest.raises(EmbeddingSizeError, match=r"trained for the embedding sizes \[2, 4, 8\], not 3"):
        resolve_dim(3, 8, DIMS)
    with pytest.raises(EmbeddingSizeError, match="outside 1..8"):
        resolve_dim(9, 8, None)
    with pytest.warns(TruncationWarning, match="not trained for truncated"):
        assert resolve_dim(3, 8, None) == 3


def _net(dims: tuple[int, ...] | None = DIMS, **kw: object):
    cfg = TrainConfig(encoder="mlp", embedding_dim=8, matryoshka_dims=dims, progress=False, **kw)  # type: ignore[arg-type]
    return build_network(cfg, (6,)).eval()


def test_embed_dim_is_the_renormalised_prefix(tmp_path) -> None:
    net = _net()
    x = torch.rand(5, 6)
    full = net.embed(x)
    e4 = net.embed(x, dim=4)
    assert e4.shape == (5, 4)
    torch.testing.assert_close(e4, torch.nn.functional.normalize(full[:, :4], dim=1))
    torch.testing.assert_close(embed_all(net, x, dim=4), e4)
    view = net.at_dim(4)
    assert view.embedding_dim == 4 and view.full_dim == 8 and net.embedding_dim == 8
    torch.testing.assert_close(view.embed(x), e4)
    assert view.encoder is net.encoder  # shares the weights
    with pytest.raises(EmbeddingSizeError):
        net.embed(x, dim=3)
    save_model(net, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.matryoshka_dims == DIMS
    assert loaded.at_dim(4).fingerprint == f"{loaded.fingerprint}#dim=4"
    assert loaded.at_dim(4).at_dim(8).fingerprint == loaded.fingerprint
    assert loaded.at_dim(8) is loaded
    with pytest.raises(ValueError, match="save the full network"):
        save_model(view, tmp_path / "v")


def test_plain_model_truncates_with_a_warning() -> None:
    net = _net(None)
    assert "matryoshka_dims" not in net.config()
    with pytest.warns(TruncationWarning):
        view = net.at_dim(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert view.embed(torch.rand(2, 6)).shape == (2, 3)  # warned once, at the view


def test_recipe_file_sets_the_sizes(tmp_path) -> None:
    from siamkit.errors import RecipeError
    from siamkit.training.recipes import load_recipe

    body = ('[recipe]\nname = "m"\ndescription = "d"\ntask = "classes"\n[input]\nimage_size = [28, 28]\nchannels = 1\n'
            '[train]\nembedding_dim = 32\nmatryoshka_dims = [8, 16, 32]\n')
    (tmp_path / "m.toml").write_text(body)
    assert load_recipe(str(tmp_path / "m.toml")).train.matryoshka_dims == (8, 16, 32)
    (tmp_path / "bad.toml").write_text(body.replace("[8, 16, 32]", "[8, 16]"))
    with pytest.raises(RecipeError, match="end at the embedding size 32"):
        load_recipe(str(tmp_path / "bad.toml"))
