"""Seeded test conditions (relit, reframed) and the lighting augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamkit.data.lighting import RandomLighting
from siamkit.data.relight import apply_condition, reframe, relight
from siamkit.errors import DataError


def _images(n: int = 6, h: int = 40, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((n, 1, h, w)) * 200 + 30).astype(np.uint8)


@pytest.mark.parametrize("fn", [relight, reframe])
def test_conditions_are_seeded_per_image_and_keep_shape(fn):
    x = _images()
    a, b = fn(x, seed=3), fn(x, seed=3)
    assert a.shape == x.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fn(x, seed=4))
    assert not np.array_equal(a, x)
    # image i's change depends on (seed, i) only: a subset gets the same first images
    np.testing.assert_array_equal(fn(x[:3], seed=3), a[:3])


def test_relight_darkens_unevenly_but_keeps_the_structure():
    x = np.tile(np.linspace(40, 220, 32, dtype=np.float64), (40, 1)).astype(np.uint8)[None, None].repeat(8, 0)
    x[:, :, ::4] = 255  # texture
    r = relight(x, seed=0).astype(float)
    for i in range(8):
        ratio = (r[i, 0] + 1) / (x[i, 0].astype(float) + 1)
        assert ratio.std() > 0.05  # not a global gain: the light varies over the image
        assert np.corrcoef(r[i, 0].ravel(), x[i, 0].ravel())[0, 1] > 0.3


def test_reframe_identity_when_scale_one_and_no_shift_is_not_forced_but_content_moves():
    x = np.zeros((4, 1, 40, 32), np.uint8)
    x[:, :, 15:25, 11:21] = 255
    r = reframe(x, seed=1)
    for i in range(4):
        cy, cx = np.argwhere(r[i, 0] > 128).mean(0)
        assert abs(cy - 19.5) <= 0.12 * 40 + 1 and abs(cx - 15.5) <= 0.12 * 32 + 1  # shift at most ~10%
        area = (r[i, 0] > 128).sum()
        assert 100 / 1.2**2 * 0.8 <= area <= 100 / 0.8**2 * 1.2  # scale within 0.8-1.2


def test_bad_input_refused():
    with pytest.raises(DataError, match="uint8"):
        relight(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="unknown test condition"):
        apply_condition("foggy", _images())
    np.testing.assert_array_equal(apply_condition("clean", _images()), _images())


def test_random_lighting_uses_only_the_generator_and_stays_in_range():
    x = torch.rand(16, 1, 20, 16)
    aug = RandomLighting(strength=0.8, p=1.0)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.allclose(a, x)
    # p = 0 leaves the batch alone
    torch.testing.assert_close(RandomLighting(p=0.0)(x, torch.Generator().manual_seed(1)), x)
    with pytest.raises(ValueError):
        RandomLighting(strength=0.0)


def test_lighting_option_changes_training_and_is_validated():
    from siamkit.errors import SiamkitError
    from siamkit.training import TrainConfig, fit

    x = (torch.rand(32, 1, 12, 12) * 255).to(torch.uint8)
    y = torch.arange(8).repeat_interleave(4)
    base = dict(epochs=1, steps_per_epoch=2, batch_size=16, val_fraction=0, progress=False, health=False,
                precision="fp32", embedding_dim=8, encoder_kwargs={"width": 4})
    plain = fit(x, y, TrainConfig(**base)).network
    lit = fit(x, y, TrainConfig(**base, lighting=0.7)).network
    again = fit(x, y, TrainConfig(**base, lighting=0.7)).network
    pa, pl, pg = (torch.cat([p.flatten() for p in n.parameters()]) for n in (plain, lit, again))
    assert not torch.allclose(pa, pl)
    torch.testing.assert_close(pl, pg)  # seeded: the same run gives the same weights
    with pytest.raises(SiamkitError, match="lighting must be in"):
        TrainConfig(lighting=1.5)
