"""Fine-tuning a Matryoshka model on feedback: every trained size learns the reports (the
loss is the mean over the prefixes), and every size is checked on the held-out classes."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import siamkit
from siamkit.calibration import Calibrator
from siamkit.errors import FinetuneRefused
from siamkit.feedback import FeedbackStore
from siamkit.losses import contrastive_loss
from siamkit.training.finetune import FinetuneConfig, _pair_loss, finetune
from siamkit.tuples import Pairs
from tests.square_classes import square_classes

SPEC = {"shape": [1, 28, 28], "channels": 1, "height": 28, "width": 28}


def net_of(dims: tuple[int, ...] | None, *, seed: int = 0) -> siamkit.SiameseNetwork:
    torch.manual_seed(seed)
    enc = siamkit.create_encoder("conv4", in_channels=1, embedding_dim=16, width=8)
    return siamkit.SiameseNetwork(enc, input_spec=dict(SPEC), matryoshka_dims=dims, normalize=True)


def test_the_feedback_loss_is_the_mean_over_the_trained_sizes() -> None:
    g = torch.Generator().manual_seed(0)
    e = F.normalize(torch.randn(6, 16, generator=g, dtype=torch.float64), dim=1)
    pairs = Pairs(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([True, False, False]))
    cfg, scale = FinetuneConfig(), 0.4

    def slow(d: int) -> torch.Tensor:  # the prefix re-normalised by hand, pair by pair
        out = []
        for a, b, same in zip(pairs.a.tolist(), pairs.b.tolist(), pairs.same.tolist()):
            x, y = e[a, :d] / e[a, :d].norm(), e[b, :d] / e[b, :d].norm()
            dist = float((x - y).norm())
            m = max(0.0, dist - cfg.pos_margin * scale) if same else max(0.0, cfg.neg_margin * scale - dist)
            out.append(m**2 / scale**2)
        return torch.tensor(out, dtype=torch.float64)

    got = _pair_loss(net_of((4, 8, 16)), e, pairs, cfg, scale)
    assert torch.allclose(got, (slow(4) + slow(8) + slow(16)) / 3, atol=1e-12)
    plain = _pair_loss(net_of(None), e, pairs, cfg, scale)
    assert torch.allclose(plain, slow(16), atol=1e-12)
    assert not torch.allclose(got, plain)  # the small sizes change the loss: they are trained
    full_only = contrastive_loss(e, pairs, pos_margin=cfg.pos_margin * scale, neg_margin=cfg.neg_margin * scale, reduction="none")
    assert torch.allclose(plain, full_only / scale**2)


def _png(t: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(t[0].numpy(), "L").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path, torch.Tensor, torch.Tensor]:
    model_dir = tmp_path / "model"
    net = net_of((4, 8, 16))
    siamkit.save_model(net, model_dir)
    rng = np.random.default_rng(0)
    d = np.r_[rng.uniform(0.0, 0.5, 60), rng.uniform(0.3, 1.2, 60)]
    Calibrator().fit(d, np.r_[np.ones(60, bool), np.zeros(60, bool)], split_name="synthetic",
                     model_fingerprint=net.fingerprint).save(model_dir)
    x, y = square_classes()
    fb = tmp_path / "fb.sqlite"
    with FeedbackStore.open(fb) as s:
        for i in range(4):  # "these two are different people" (classes 0 and 1)
            s.add(actor="t", kind="verify", image_a=(_png(x[i]), "png"), image_b=(_png(x[6 + i]), "png"), truth={"same": False})
    return model_dir, fb, x, y


def test_a_matryoshka_fine_tune_checks_every_size_on_held_out_classes(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model_dir, fb, x, y = world
    cfg = FinetuneConfig(steps=4, feedback_per_batch=4, replay_per_batch=12, eval_pairs=100, max_regression=1.0, min_reporters=1)
    rep = finetune(model_dir, fb, tmp_path / "new", replay_images=x, replay_labels=y, config=cfg)
    assert rep["accepted"] and set(rep["held_out_by_size"]) == {"4", "8"}
    for r in rep["held_out_by_size"].values():
        assert 0.0 <= r["old"] <= 1.0 and 0.0 <= r["new"] <= 1.0
    new = siamkit.load_model(tmp_path / "new")
    assert new.matryoshka_dims == (4, 8, 16)  # still a Matryoshka model: every size loads
    assert new.at_dim(4).embedding_dim == 4


def test_a_smaller_size_that_gets_worse_refuses_the_fine_tune(world, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model_dir, fb, x, y = world
    ft = sys.modules[_pair_loss.__module__]  # the module (siamkit.training.finetune names the function too)
    real = ft._compare

    def size_4_worse(*args, **kwargs):  # type: ignore[no-untyped-def]
        new_cal, out = real(*args, **kwargs)
        out["held_out"]["new"] = dict(out["held_out"]["old"])  # the full size unchanged
        out["held_out_by_size"]["4"] = {"old": 0.9, "new": 0.7}
        return new_cal, out

    monkeypatch.setattr(ft, "_compare", size_4_worse)
    cfg = FinetuneConfig(steps=2, feedback_per_batch=4, replay_per_batch=12, eval_pairs=100, max_regression=0.05, min_reporters=1)
    with pytest.raises(FinetuneRefused, match=r"roc_auc at 4 dims 0\.9000 -> 0\.7000"):
        finetune(model_dir, fb, tmp_path / "refused", replay_images=x, replay_labels=y, config=cfg)
    assert not (tmp_path / "refused").exists()
