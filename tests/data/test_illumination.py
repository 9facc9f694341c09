"""IlluminationNorm: each method against a slow obvious implementation or a known property."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from siamkit.data.illumination import IlluminationNorm, standardize, tan_triggs, to_uint8
from siamkit.errors import SiamkitError


def _face_like(seed: int = 0, h: int = 56, w: int = 46) -> np.ndarray:
    """A smooth random image with texture (values spread over many grey levels)."""
    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.random((h, w)), 3) * 4 + rng.random((h, w)) * 0.3
    yy, xx = np.mgrid[0:h, 0:w]
    base += np.sin(xx / 5.0) * 0.5 + np.cos(yy / 7.0) * 0.5
    return to_uint8(base)


def _slow_tan_triggs(img: np.ndarray, gamma=0.2, s0=1.0, s1=2.0, alpha=0.1, tau=10.0) -> np.ndarray:
    x = img.astype(np.float64) ** gamma
    x = gaussian_filter(x, s0) - gaussian_filter(x, s1)
    n = x.size
    x = x / (sum(abs(v) ** alpha for v in x.ravel()) / n) ** (1 / alpha)
    x = x / (sum(min(tau, abs(v)) ** alpha for v in x.ravel()) / n) ** (1 / alpha)
    return np.array([[tau * np.tanh(v / tau) for v in row] for row in x])


def test_tantriggs_matches_slow_loop_version():
    img = _face_like(1, 20, 16)
    np.testing.assert_allclose(tan_triggs(img), _slow_tan_triggs(img), rtol=1e-9, atol=1e-9)


def test_tantriggs_exactly_invariant_to_global_gain():
    img = _face_like(2).astype(np.float64)
    np.testing.assert_allclose(tan_triggs(img), tan_triggs(img * 0.37), rtol=1e-9, atol=1e-9)


def test_tantriggs_nearly_invariant_to_gain_and_gamma_on_uint8():
    img = _face_like(3)
    darker = to_uint8(((img / 255.0) ** 1.5) * 0.6, 0.0, 1.0)  # gamma 1.5 and 60% gain, requantised
    norm = IlluminationNorm(method="tantriggs")
    a = np.asarray(norm(Image.fromarray(img)), dtype=np.float64)
    b = np.asarray(norm(Image.fromarray(darker)), dtype=np.float64)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    # while the raw images are far apart in pixel space
    assert np.abs(img.astype(float) - darker).mean() > 40


def test_tantriggs_removes_a_smooth_light_gradient_better_than_raw():
    img = _face_like(4).astype(np.float64)
    ramp = np.linspace(0.3, 1.0, img.shape[1])[None, :]
    lit = to_uint8(img * ramp, 0, 255)
    norm = IlluminationNorm(method="tantriggs")
    a = np.asarray(norm(Image.fromarray(img.astype(np.uint8))), dtype=np.float64)
    b = np.asarray(norm(Image.fromarray(lit)), dtype=np.float64)
    raw_corr = np.corrcoef(img.ravel(), lit.ravel())[0, 1]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > raw_corr


def test_histeq_flattens_the_cumulative_histogram_and_keeps_order():
    img = _face_like(5, 112, 92)
    skewed = to_uint8((img / 255.0) ** 3, 0.0, 1.0)  # most pixels dark
    out = np.asarray(IlluminationNorm(method="histeq")(Image.fromarray(skewed)))
    assert out.dtype == np.uint8
    # the slow obvious version: each pixel goes to (fraction of pixels <= it) * 255
    flat = skewed.ravel()
    slow = np.array([(flat <= v).mean() * 255 for v in flat]).reshape(skewed.shape)
    assert np.abs(out.astype(float) - slow).mean() < 4
    cdf = np.array([(out <= v).mean() for v in range(256)])
    assert np.abs(cdf - np.arange(256) / 255).max() < 0.08
    # monotone: a darker input pixel never becomes brighter than a brighter one
    order = np.argsort(flat, kind="stable")
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all()


def test_standardize_zero_mean_unit_variance_before_rescale():
    img = _face_like(6) * 0.5 + 30
    z = standardize(img)
    assert abs(z.mean()) < 1e-9 and abs(z.std() - 1) < 1e-9
    out = np.asarray(IlluminationNorm(method="standardize")(Image.fromarray(img.astype(np.uint8))), dtype=float)
    # the rescale maps -3 sd..3 sd to 0..255: the mean lands near mid-grey
    assert abs(out.mean() - 127.5) < 6
    # and a global gain + offset does not change the output
    other = np.asarray(IlluminationNorm(method="standardize")(Image.fromarray((img * 1.5 + 5).astype(np.uint8))), dtype=float)
    assert np.abs(out - other).max() <= 2


@pytest.mark.parametrize("method", ["histeq", "tantriggs", "standardize"])
def test_every_method_gives_grey_uint8_of_the_same_size_and_handles_flat_and_colour(method):
    norm = IlluminationNorm(method=method)
    out = norm(Image.new("RGB", (46, 56), (90, 120, 200)))
    assert out.mode == "L" and out.size == (46, 56)
    assert np.isfinite(np.asarray(out, dtype=float)).all()


@pytest.mark.parametrize("method", ["histeq", "tantriggs", "standardize"])
def test_to_dict_round_trip(method):
    norm = IlluminationNorm(method=method, sigma1=2.5)
    d = norm.to_dict()
    assert d["kind"] == "illumination" and d["method"] == method
    assert IlluminationNorm.from_dict(d) == norm
    assert IlluminationNorm.from_dict({"method": method}) == IlluminationNorm(method=method)


def test_bad_method_and_options_refused():
    with pytest.raises(SiamkitError, match="unknown illumination method 'retinex'"):
        IlluminationNorm(method="retinex")
    with pytest.raises(SiamkitError, match="sigma0 < sigma1"):
        IlluminationNorm(sigma0=2.0, sigma1=1.0)
    with pytest.raises(SiamkitError, match="unknown illumination option"):
        IlluminationNorm.from_dict({"method": "histeq", "strength": 1})
    with pytest.raises(SiamkitError, match="kind 'illumination'"):
        IlluminationNorm.from_dict({"kind": "resize", "method": "histeq"})


def test_module_is_torch_free():
    import ast
    from pathlib import Path

    import siamkit.data.illumination as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert "torch" not in names
