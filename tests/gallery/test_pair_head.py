"""PairHeadReranker: a learned pair head over the top of a search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamkit.errors import GalleryError, ModelFileError
from siamkit.gallery.pair_head import PairHeadReranker, pair_features, recall_at_1
from siamkit.gallery.two_stage import TwoStageIndex


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def _clusters(n_classes: int, per: int, seed: int, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Identities whose identity lives in the first 4 values; the other 12 are large noise,
    so cosine distance ranks poorly and a head that learns to ignore the noise ranks well."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, 4)) * 1.0
    y = np.repeat(np.arange(n_classes), per)
    x = np.concatenate([centres[y] + 0.05 * rng.standard_normal((len(y), 4)), 1.2 * rng.standard_normal((len(y), d - 4))], 1)
    return _unit(x), y


def test_pair_features_symmetric_and_shaped() -> None:
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    f = pair_features(a, b)
    assert f.shape == (5, 16)
    assert torch.equal(f, pair_features(b, a))
    assert torch.allclose(f[:, 8:].sum(1), (a * b).sum(1))


def test_recall_at_1_obvious() -> None:
    rows = np.array([[0, 1], [1, 0], [-1, -1]])
    assert recall_at_1(rows, [7, 8], [7, 7, 7]) == pytest.approx(1 / 3)


def test_head_beats_cosine_on_noisy_embeddings_and_blend_is_chosen() -> None:
    xt, yt = _clusters(40, 6, seed=0)
    head = PairHeadReranker(hidden=32, epochs=20, top=10, negatives=8, seed=0).fit(xt, yt)
    xv, yv = _clusters(30, 4, seed=1)  # other identities: gallery = first of each, queries the rest
    first = np.r_[True, yv[1:] != yv[:-1]]
    scores = head.choose_blend(xv[~first], yv[~first], xv[first], yv[first])
    assert scores[0.0] < max(scores.values())  # the head helps here
    assert head.blend > 0 and scores[head.blend] == max(scores.values())
    # the same numbers through TwoStageIndex (all candidates: stage 2 is exact cosine)
    g, gl, q, ql = xv[first], yv[first], xv[~first], yv[~first]
    plain = TwoStageIndex(short_dim=4, candidates=len(g), kind="flat").build(g)
    with_head = TwoStageIndex(short_dim=4, candidates=len(g), kind="flat", reranker=head).build(g)
    r0 = recall_at_1(plain.search(q, 1)[1], gl, ql)
    r1 = recall_at_1(with_head.search(q, 1)[1], gl, ql)
    assert r0 == pytest.approx(scores[0.0]) and r1 == pytest.approx(scores[head.blend]) and r1 > r0


def test_rerank_only_reorders_the_top() -> None:
    x, y = _clusters(10, 4, seed=2)
    head = PairHeadReranker(epochs=2, top=3, blend=100.0).fit(x, y)
    rows = np.tile(np.arange(8), (2, 1))
    d = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (2, 1))
    d2, r2 = head.rerank(x[:2], x, rows, d)
    assert np.array_equal(r2[:, 3:], rows[:, 3:]) and sorted(r2[0, :3]) == [0, 1, 2]
    np.testing.assert_array_equal(np.take_along_axis(d, r2, 1), d2)  # distances follow their rows
    d3, r3 = head.rerank(x[:2], x, rows, d, blend=0.0)
    assert r3 is rows  # off: untouched


def test_save_load_roundtrip(tmp_path) -> None:
    x, y = _clusters(10, 4, seed=3)
    head = PairHeadReranker(epochs=2, blend=0.2).fit(x, y)
    back = PairHeadReranker.load(head.save(tmp_path / "h"))
    assert back.blend == 0.2 and back.top == head.top
    cand = np.stack([x[:5], x[5:10]])
    np.testing.assert_allclose(back.logits(x[:2], cand), head.logits(x[:2], cand), rtol=1e-6)
    (tmp_path / "h" / "pair_head.json").write_text('{"format": "other"}')
    with pytest.raises(ModelFileError):
        PairHeadReranker.load(tmp_path / "h")


def test_bad_input() -> None:
    with pytest.raises(GalleryError, match="top"):
        PairHeadReranker(top=0)
    with pytest.raises(GalleryError, match="blend"):
        PairHeadReranker(blend=-1.0)
    with pytest.raises(GalleryError, match="not trained"):
        PairHeadReranker().logits(np.zeros((1, 4), np.float32), np.zeros((1, 2, 4), np.float32))
    with pytest.raises(GalleryError, match="2\\+ identities"):
        PairHeadReranker().fit(np.eye(3, dtype=np.float32), [0, 1, 2])
    with pytest.raises(GalleryError, match="labels"):
        PairHeadReranker().fit(np.eye(3, dtype=np.float32), [0, 1])
    x, y = _clusters(5, 3, seed=4)
    head = PairHeadReranker(epochs=1).fit(x, y)
    with pytest.raises(GalleryError, match="16-value"):
        head.logits(np.zeros((1, 8), np.float32), np.zeros((1, 2, 8), np.float32))
    with pytest.raises(GalleryError, match="PairHeadReranker"):
        TwoStageIndex(short_dim=4, reranker="nope")
