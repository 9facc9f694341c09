"""The ``strokes`` step: binarised ink redrawn at one width (the scan's stroke width and ink
level no longer reach the network), and the input-side shortcut features."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from siamkit.data.preprocess import preprocess_kinds, step_from_dict, step_to_dict
from siamkit.data.strokes import StrokeNormalize, input_features
from siamkit.input_spec import InputSpec


def stroke_image(thickness: int, level: int = 255, size: tuple[int, int] = (40, 60)) -> Image.Image:
    """Bright ink on black: a horizontal bar and a vertical bar of ``thickness`` pixels."""
    a = np.zeros(size, dtype=np.uint8)
    a[18 : 18 + thickness, 5:55] = level
    a[5:35, 40 : 40 + thickness] = level
    return Image.fromarray(a, "L")


def column_width(a: np.ndarray, col: int) -> int:
    return int((a[:, col] > 0).sum())


@pytest.mark.parametrize("width", [1.0, 3.0, 5.0])
def test_thin_and_thick_strokes_come_out_equally_wide(width: float) -> None:
    step = StrokeNormalize(width=width)
    outs = [np.asarray(step(stroke_image(t, level))) for t, level in ((2, 255), (4, 140), (9, 200))]
    for out in outs:
        assert set(np.unique(out).tolist()) <= {0, 255}  # binary: the ink level is gone
        # the horizontal bar, away from the crossing: exactly `width` pixels high
        assert column_width(out, 15) == int(width), column_width(out, 15)
    # the same drawing at three thicknesses and levels: about the same ink amount (thinning shortens
    # each bar end by about half the thickness: 4 ends x 4 px for the 9-px bars)
    amounts = [int((o > 0).sum()) for o in outs]
    assert max(amounts) - min(amounts) <= 0.25 * max(amounts), amounts
    # without the step the amounts differ by more than 3x
    raw = [int((np.asarray(stroke_image(t)) > 0).sum()) for t in (2, 4, 9)]
    assert max(raw) > 3 * min(raw)


def test_blank_and_registered_and_round_trip() -> None:
    step = StrokeNormalize(width=3)
    blank = step(Image.new("L", (30, 20), 0))
    assert blank.size == (30, 20) and np.asarray(blank).max() == 0
    assert "strokes" in preprocess_kinds()
    d = step_to_dict(step)
    assert d == {"kind": "strokes", "width": 3.0} and step_from_dict(d) == step
    spec = InputSpec.from_dict({"shape": [1, 40, 60], "channels": 1, "height": 40, "width": 60, "version": 2,
                                "preprocess": [d], "tta": None})
    assert spec.preprocess == (step,)
    assert np.array_equal(np.asarray(spec.preprocessor()(stroke_image(6))), np.asarray(step(stroke_image(6))))
    with pytest.raises(ValueError, match="stroke width"):
        StrokeNormalize(width=0.5)
    with pytest.raises(ValueError, match="stroke width"):
        StrokeNormalize(width=40)


def test_input_features() -> None:
    imgs = np.stack([np.asarray(stroke_image(t))[None] for t in (3, 7)])
    f = input_features(imgs)
    assert set(f) == {"input_ink", "input_stroke_width", "input_aspect", "input_fill"}
    np.testing.assert_allclose(f["input_ink"], imgs.reshape(2, -1).mean(axis=1) / 255.0)
    assert f["input_stroke_width"][0] == pytest.approx(3, abs=1.0)
    assert f["input_stroke_width"][1] == pytest.approx(7, abs=1.5)
    # ink box: columns 5..54 (50 wide), rows 5..34 (30 high) for thickness 3
    assert f["input_aspect"][0] == pytest.approx(np.log(50 / 30))
    # after the step the stroke widths agree
    normed = np.stack([np.asarray(StrokeNormalize(width=3)(stroke_image(t)))[None] for t in (3, 7)])
    g = input_features(normed)
    assert abs(g["input_stroke_width"][0] - g["input_stroke_width"][1]) < 0.5
    empty = input_features(np.zeros((1, 1, 10, 10), dtype=np.uint8))
    assert all(v[0] == 0 for v in empty.values())


def test_fixed_canvas_stretches_the_crop() -> None:
    step = StrokeNormalize(width=3, size=(30, 90))
    out = step(stroke_image(5, size=(40, 60)))
    assert out.size == (90, 30) and set(np.unique(np.asarray(out)).tolist()) <= {0, 255}
    assert step_from_dict(step_to_dict(step)) == step and step_to_dict(step)["size"] == [30, 90]
    with pytest.raises(ValueError):
        StrokeNormalize(size=(0, 10))
