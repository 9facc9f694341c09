"""Gallery: enrol / list / remove / verify / identify, open set, scoring rules, model
checks, re-embedding, search backends and their index cache, bad input, CLI."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from siamkit import SiameseNetwork, create_encoder, save_model
from siamkit.calibration import Calibrator
from siamkit.errors import DataError, SiamkitError
from siamkit.gallery import (
    UNKNOWN,
    ExactIndex,
    FaissIndex,
    Gallery,
    GalleryError,
    GalleryFileError,
    IdentityExistsError,
    ModelMismatchError,
    UnknownIdentityError,
    choose_index,
    model_hash,
    recall_at_k,
)
from siamkit.cli.gallery import gallery_app
from siamkit.inference import network_pairwise
from siamkit.inference import embed_all
from siamkit.verify import Verifier

S = 24  # image side
SPEC = {"shape": [1, S, S], "channels": 1, "height": S, "width": S}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids waiting on busy cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- data


def _pattern(c: int, rng: np.random.Generator) -> np.ndarray:
    """Identity c: a bright 5x5 square at one of 20 places, on a noisy background."""
    a = np.zeros((S, S), np.float32)
    r, q = divmod(c, 5)
    a[2 + r * 4 : 7 + r * 4, 2 + q * 4 : 7 + q * 4] = 200
    return a + rng.random((S, S)) * 30


def _noisy(a: np.ndarray, rng: np.random.Generator, sd: float = 12.0) -> np.ndarray:
    return np.clip(a + rng.normal(0, sd, a.shape), 0, 255).astype(np.uint8)


class Faces:
    """Synthetic identities: ``images(c, n)`` = n noisy images of identity c (uint8 (n, 1, S, S))."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.patterns = [_pattern(c, self.rng) for c in range(20)]

    def images(self, c: int, n: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([[_noisy(self.patterns[c], self.rng)] for _ in range(n)]))


def _net(seed: int = 0, **kw: Any) -> SiameseNetwork:
    torch.manual_seed(seed)
    enc = create_encoder("conv4", in_channels=1, embedding_dim=None, width=16, depth=2, grid=4)
    return SiameseNetwork(enc, normalize=True, input_spec=dict(SPEC), **kw).eval()


def _calibrate(net: SiameseNetwork, faces: Faces, ids: range = range(15, 20)) -> Calibrator:
    """Fit on identities 15-19 (never enrolled in these tests)."""
    x = torch.cat([faces.images(c, 4) for c in ids])
    y = torch.arange(len(ids)).repeat_interleave(4)
    e = embed_all(net, x)
    i, j = torch.triu_indices(len(y), len(y), 1)
    d = net.embedding_distance(e[i], e[j]).detach().numpy()
    return Calibrator(threshold_method="eer").fit(d, (y[i] == y[j]).numpy(), split_name="cal", model_fingerprint=net.fingerprint)


@pytest.fixture(scope="module")
def faces() -> Faces:
    return Faces(0)


@pytest.fixture(scope="module")
def net() -> SiameseNetwork:
    return _net(0)


@pytest.fixture(scope="module")
def cal(net: SiameseNetwork, faces: Faces) -> Calibrator:
    return _calibrate(net, faces)


@pytest.fixture
def gallery(where: Any, net: SiameseNetwork, cal: Calibrator, faces: Faces):  # type: ignore[no-untyped-def]
    """Identities 0-9 enrolled with 1-3 samples each (a SQLite file, a PostgreSQL database)."""
    g = Gallery.open(where(), net, calibrator=cal)
    for c in range(10):
        g.enroll(f"id{c}", faces.images(c, 1 + c % 3), metadata={"c": c})
    yield g
    g.close()


class VecEncoder(nn.Module):
    """The identity map on vectors (an 'encoder' whose embedding is its input)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embedding_dim = dim
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _vec_net(dim: int = 2, **kw: Any) -> SiameseNetwork:
    return SiameseNetwork(VecEncoder(dim), input_spec={"shape": [dim]}, **kw).eval()


# --------------------------------------------------------------------------- enrol / list / get / remove


def test_enroll_list_get_metadata_round_trip(where: Any, tmp_path: Path, net: SiameseNetwork, faces: Faces) -> None:
    meta = {"name": "Zoë Ω", "team": "R&D", "level": 3, "tags": ["a", "b"], "nested": {"x": 1.5, "none": None}}
    with Gallery.open(where(), net) as g:
        r = g.enroll("zoe", faces.images(0, 3), metadata=meta, sample_metadata=[{"cam": i} for i in range(3)])
        assert r.identity == "zoe" and r.n_samples == 3 and r.metadata == meta
        assert [s.metadata for s in r.samples] == [{"cam": 0}, {"cam": 1}, {"cam": 2}]
        assert all(s.has_input for s in r.samples)
        g.enroll("bob", faces.images(1, 1))
        g.add_samples("bob", faces.images(1, 2))
    with Gallery.open(where(), None, create=False) as g:  # no model: inspection only
        recs = g.list()
        assert [(r.identity, r.n_samples) for r in recs] == [("zoe", 3), ("bob", 3)]
        assert recs[0].metadata == meta
        assert g.get("zoe").metadata == meta
        assert "zoe" in g and "nobody" not in g and len(g) == 2 and g.n_samples == 6
        g.set_metadata("bob", {"team": "ops"})
        assert g.get("bob").metadata == {"team": "ops"}
        with pytest.raises(GalleryError, match="needs a model"):
            g.identify(faces.images(0, 1)[0])
        actions = [e["action"] for e in g.audit_log()]
        assert actions == ["update_metadata", "add_samples", "enroll", "enroll", "create"]


def test_remove(gallery: Gallery, faces: Faces) -> None:
    assert gallery.remove("id3") == 1 + 3 % 3
    assert "id3" not in gallery and len(gallery) == 9
    r = gallery.identify(faces.images(3, 1)[0], k=3)
    assert "id3" not in [c.identity for c in r.candidates]
    assert r.decision == UNKNOWN
    # the others are still found, also after the in-memory view was updated
    for c in (0, 4, 9):
        assert gallery.identify(faces.images(c, 1)[0]).decision == f"id{c}"
    with pytest.raises(UnknownIdentityError, match="'id3' is not enrolled"):
        gallery.remove("id3")


def test_enroll_from_image_files(where: Any, tmp_path: Path, net: SiameseNetwork, cal: Calibrator, faces: Faces) -> None:
    paths = []
    for i, img in enumerate(faces.images(2, 3)):
        p = tmp_path / f"two{i}.png"
        Image.fromarray(img[0].numpy(), "L").save(p)
        paths.append(p)
    with Gallery.open(where(), net, calibrator=cal) as g:
        r = g.enroll("two", [str(p) for p in paths[:2]])
        assert [s.format for s in r.samples] == ["file:.png", "file:.png"]
        g.enroll("seven", faces.images(7, 2))
        assert g.identify(paths[2]).decision == "two"
        assert g.verify("two", paths[2]).same is True
        assert g.verify("seven", paths[2]).same is False


# --------------------------------------------------------------------------- verify / identify


def test_verify_matches_verifier_and_decides(gallery: Gallery, net: SiameseNetwork, cal: Calibrator, faces: Faces) -> None:
    probe = faces.images(0, 1)[0]
    r = gallery.verify("id0", probe)
    # id0 has one sample: the distance is exactly the Verifier's pair distance
    enrolled_id = gallery.get("id0").samples[0].id
    assert r.sample_id == enrolled_id and r.n_samples == 1
    assert r.same is True and r.distance <= r.threshold == pytest.approx(cal.threshold_)
    assert 0.5 < r.confidence <= 1.0 and 0.0 < r.score <= 1.0
    impostor = gallery.verify("id1", probe)
    assert impostor.same is False and impostor.distance > cal.threshold_ and impostor.confidence < 0.5
    # same numbers as a Verifier on the pair
    enrolled = g_sample(gallery, enrolled_id)[0]
    v = Verifier(net, cal).verify(enrolled, probe)
    assert r.distance == pytest.approx(v.distance, abs=1e-5)
    assert r.confidence == pytest.approx(v.confidence, abs=1e-4)


def test_verify_reports_the_closest_sample(gallery: Gallery, faces: Faces) -> None:
    # id2 has 3 samples: the best-rule distance is the minimum over them
    r = gallery.verify("id2", faces.images(2, 1)[0])
    ids = [s.id for s in gallery.get("id2").samples]
    assert r.n_samples == 3 and r.sample_id in ids and r.distance == pytest.approx(r.sample_distance)
    m = gallery.verify("id2", faces.images(2, 1)[0], scoring="mean")
    assert m.scoring == "mean" and m.same is True


def test_identify_closed_and_open_set(gallery: Gallery, faces: Faces) -> None:
    for c in range(10):
        r = gallery.identify(faces.images(c, 1)[0], k=5)
        assert r.decision == f"id{c}" and r.unknown is False
        assert len(r.candidates) == 5 and r.best.identity == f"id{c}"
        d = [x.distance for x in r.candidates]
        assert d == sorted(d) and len({x.identity for x in r.candidates}) == 5
        assert [x.score for x in r.candidates] == sorted([x.score for x in r.candidates], reverse=True)
        assert r.confidence > 0.5 and r.index == "exact"
    for c in (10, 11, 12):  # never enrolled
        r = gallery.identify(faces.images(c, 1)[0], k=3)
        assert r.decision == UNKNOWN and r.unknown is True
        assert r.best.distance > r.threshold and len(r.candidates) == 3  # still ranked
    # k larger than the gallery: every identity once
    r = gallery.identify(faces.images(0, 1)[0], k=50)
    assert len(r.candidates) == 10
    # batch form gives the same answers
    rs = gallery.identify_batch(torch.cat([faces.images(c, 1) for c in (1, 11)]), k=2)
    assert [x.decision for x in rs] == ["id1", UNKNOWN]


def test_identify_without_calibration_ranks_but_does_not_decide(where: Any, tmp_path: Path, net: SiameseNetwork, faces: Faces) -> None:
    with Gallery.open(where(), net) as g:
        for c in range(3):
            g.enroll(f"id{c}", faces.images(c, 2))
        r = g.identify(faces.images(1, 1)[0], k=2)
        assert r.decision is None and r.unknown is None and r.threshold is None and r.confidence is None
        assert "not calibrated" in r.note and r.best.identity == "id1"
        v = g.verify("id1", faces.images(1, 1)[0])
        assert v.same is None and v.confidence is None and v.distance < 0.3


def test_empty_gallery(where: Any, tmp_path: Path, net: SiameseNetwork, cal: Calibrator, faces: Faces) -> None:
    with Gallery.open(where(), net, calibrator=cal) as g:
        r = g.identify(faces.images(0, 1)[0])
        assert r.candidates == [] and r.decision == UNKNOWN and r.note == "the gallery is empty"
        assert g.list() == [] and len(g) == 0


def test_best_and_mean_scoring_differ_where_they_should(where: Any, tmp_path: Path) -> None:
    """A has samples at 0 and 10, B one at 4. A probe at 0.5 is closest to A's first
    sample (best: A, 0.5) but closer to B than to A's mean at 5 (mean: B, 3.5)."""
    net = _vec_net(2)
    with Gallery.open(where(), net) as g:
        g.enroll("A", torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
        g.enroll("B", torch.tensor([[4.0, 0.0]]))
        probe = torch.tensor([0.5, 0.0])
        best = g.identify(probe, k=2, scoring="best")
        mean = g.identify(probe, k=2, scoring="mean")
        assert [(c.identity, round(c.distance, 5)) for c in best.candidates] == [("A", 0.5), ("B", 3.5)]
        assert [(c.identity, round(c.distance, 5)) for c in mean.candidates] == [("B", 3.5), ("A", 4.5)]
        assert g.verify("A", probe, scoring="best").distance == pytest.approx(0.5)
        assert g.verify("A", probe, scoring="mean").distance == pytest.approx(4.5)
        # and the same through a FAISS flat index (candidates re-scored with the network)
    with Gallery.open(where(), net, index="flat", scoring="mean") as g:
        assert g.identify(probe, k=2).best.identity == "B"
        assert g.identify(probe, k=2, scoring="best").best.identity == "A"


def test_scoring_rule_is_stored(where: Any, tmp_path: Path) -> None:
    net = _vec_net(2)
    with Gallery.open(where(), net, scoring="mean") as g:
        g.enroll("A", torch.tensor([[0.0, 0.0]]))
    with Gallery.open(where(), net) as g:
        assert g.scoring == "mean" and g.meta["scoring"] == "mean"
        assert g.identify(torch.tensor([1.0, 0.0])).scoring == "mean"


# --------------------------------------------------------------------------- models


def test_refuses_another_model_then_reembed(where: Any, tmp_path: Path, net: SiameseNetwork, faces: Faces) -> None:
    model_a, model_b = tmp_path / "a", tmp_path / "b"
    save_model(net, model_a)
    other = _net(seed=1)
    save_model(other, model_b)
    paths = []
    for i, img in enumerate(faces.images(5, 2)):
        paths.append(tmp_path / f"five{i}.png")
        Image.fromarray(img[0].numpy(), "L").save(paths[-1])
    path = where()
    with Gallery.open(path, model_a) as g:
        g.enroll("five", paths)  # kept as image files
        g.enroll("six", faces.images(6, 2))  # kept as raw arrays
        fp_a = g.meta["model_fingerprint"]
        assert fp_a == net.fingerprint
    with pytest.raises(ModelMismatchError) as e:
        Gallery.open(path, model_b)
    msg = str(e.value)
    assert fp_a in msg and other.fingerprint in msg and "siamkit gallery reembed" in msg
    # the same weights loaded again are accepted (the check is on recipe + weights)
    Gallery.open(path, _net(seed=0)).close()
    # migrate to model b
    with Gallery.migrate(path, model_b) as g:
        assert g.meta["model_fingerprint"] == other.fingerprint and g.meta["model_hash"] == model_hash(other)
        assert g.identify(faces.images(5, 1)[0]).best.identity == "five"
        assert g.identify(faces.images(6, 1)[0]).best.identity == "six"
        assert g.audit_log(1)[0]["action"] == "reembed"
    with pytest.raises(ModelMismatchError):
        Gallery.open(path, model_a)
    # and back, through an open gallery's reembed()
    with Gallery.open(path, model_b) as g:
        assert g.reembed(model_a) == 4
        assert g.identify(faces.images(6, 1)[0]).best.identity == "six"
    Gallery.open(path, model_a).close()


def test_reembed_refused_without_kept_inputs(tmp_path: Path, net: SiameseNetwork, faces: Faces) -> None:
    path = tmp_path / "g.db"
    with Gallery.open(path, net, keep_inputs=False) as g:
        g.enroll("a", faces.images(0, 2))
        assert g.get("a").samples[0].has_input is False
    before = path.read_bytes()
    with pytest.raises(GalleryError, match="2 sample.*without keeping their input"):
        Gallery.migrate(path, _net(seed=1))
    with Gallery.open(path, net) as g:  # unchanged: still the first model's gallery
        assert g.identify(faces.images(0, 1)[0]).best.identity == "a"
    assert len(path.read_bytes()) == len(before)


def test_calibrator_of_another_model_is_refused(where: Any, tmp_path: Path, net: SiameseNetwork, cal: Calibrator) -> None:
    other = _net(seed=1)
    other.fingerprint = "sha256:other"
    c = Calibrator().fit(np.array([0.1, 0.9]), np.array([True, False]), model_fingerprint="sha256:mine")
    with pytest.raises(GalleryError, match="fitted for model 'sha256:mine'"):
        Gallery.open(where(), other, calibrator=c)


def test_pair_head_and_l1_models_use_exact_search(where: Any, tmp_path: Path, faces: Faces) -> None:
    torch.manual_seed(0)
    enc = create_encoder("conv4", in_channels=1, embedding_dim=None, width=16, depth=2, grid=4)
    head = SiameseNetwork(enc, head="l1", input_spec=dict(SPEC)).eval()
    with torch.no_grad():
        head.pair_head.weight.fill_(-1.0)  # logit = -|e1 - e2|_1 + b: closer = higher
        head.pair_head.bias.fill_(5.0)
    with pytest.raises(GalleryError, match="only exact search"):
        Gallery.open(where("h.db"), head, index="hnsw")
    with Gallery.open(where("h.db"), head) as g:
        for c in range(4):
            g.enroll(f"id{c}", faces.images(c, 2))
        probe = faces.images(2, 1)
        r = g.identify(probe[0], k=4)
        assert r.index == "exact" and r.best.identity == "id2"
        # distances are the network's: -logit of the pair
        v = g.verify("id2", probe[0])
        e = embed_all(head, torch.cat([probe, g_sample(g, v.sample_id)]))
        assert v.distance == pytest.approx(float(head.embedding_distance(e[:1], e[1:]).detach()[0]), abs=1e-4)
        assert r.best.distance == pytest.approx(v.distance, abs=1e-5)
    l1 = _vec_net(3, distance="l1")
    with Gallery.open(where("l1.db"), l1, index="auto") as g:
        g.enroll("a", torch.tensor([[0.0, 0.0, 0.0]]))
        g.enroll("b", torch.tensor([[1.0, 1.0, 1.0]]))
        r = g.identify(torch.tensor([0.9, 0.9, 0.0]), k=2)
        assert [c.identity for c in r.candidates] == ["b", "a"] and r.best.distance == pytest.approx(1.2)


def g_sample(g: Gallery, sample_id: int) -> torch.Tensor:
    """The kept input of a sample, read through the store (either backend)."""
    kept = {sid: s for batch in g.store.iter_stored_samples() for sid, s in batch}[sample_id]
    assert kept is not None and kept.format == "uint8"
    return torch.from_numpy(kept.array().copy())[None]


def test_model_hash_stable_across_save_load(tmp_path: Path, net: SiameseNetwork) -> None:
    from siamkit import load_model

    save_model(net, tmp_path / "m")
    assert model_hash(load_model(tmp_path / "m")) == model_hash(net)
    assert model_hash(_net(seed=1)) != model_hash(net)


# --------------------------------------------------------------------------- search


def _clustered(n: int, d: int, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    a = rng.integers(0, clusters, n)
    x = centres[a] + 0.15 * rng.standard_normal((n, d)).astype(np.float32)
    q = x[rng.integers(0, n, 200)] + 0.05 * rng.standard_normal((200, d)).astype(np.float32)
    return x, q


def test_choose_index_rule() -> None:
    assert choose_index(0) == choose_index(100_000) == "exact"
    assert choose_index(100_001) == choose_index(10**7) == "ivf"
    assert choose_index(10, exact_max=5) == "ivf"
    assert choose_index(10**7, supports_faiss=False) == "exact"
    with pytest.raises(ValueError):
        choose_index(-1)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exact_and_faiss_flat_agree(metric: str) -> None:
    x, q = _clustered(3000, 16, 50)
    de, re_ = ExactIndex(metric=metric).build(x).search(q, 10)
    df, rf = FaissIndex(kind="flat", metric=metric).build(x).search(q, 10)
    assert recall_at_k(rf, re_, 10) > 0.999
    np.testing.assert_allclose(de, df, rtol=1e-3, atol=1e-3)
    # small index: padded with -1 / inf
    d, r = ExactIndex(metric=metric).build(x[:3]).search(q[:2], 5)
    assert (r[:, 3:] == -1).all() and np.isinf(d[:, 3:]).all()
    d2, r2 = FaissIndex(kind="flat", metric=metric).build(x[:3]).search(q[:2], 5)
    assert (r2[:, 3:] == -1).all() and np.isinf(d2[:, 3:]).all()


@pytest.mark.parametrize(
    "kind,params,min_recall",
    [("hnsw", {}, 0.95), ("ivf", {"nprobe": 8}, 0.9)],
)
def test_approximate_recall_against_exact(kind: str, params: dict, min_recall: float) -> None:
    x, q = _clustered(20_000, 32, 400, seed=1)
    _, exact = FaissIndex(kind="flat", metric="cosine").build(x).search(q, 10)
    idx = FaissIndex(kind=kind, metric="cosine", **params).build(x)
    _, approx = idx.search(q, 10)
    rec = recall_at_k(approx, exact, 10)
    assert rec >= min_recall, f"{kind} recall@10 {rec:.3f}"
    # add() extends the rows; remove() rebuilds without the removed rows
    idx.add(x[:5] + 100.0)
    assert idx.ntotal == 20_005
    idx.remove([20_000, 20_001])
    assert idx.ntotal == 20_003
    np.testing.assert_allclose(idx.vectors()[:3], FaissIndex(kind="flat", metric="cosine").build(x[:3]).vectors(), atol=1e-6)


def test_network_pairwise_matches_paired(net: SiameseNetwork, faces: Faces) -> None:
    e = embed_all(net, torch.cat([faces.images(c, 2) for c in range(5)]))
    full = network_pairwise(net, e[:3], e, chunk_elems=7)
    for i in range(3):
        torch.testing.assert_close(full[i], net.embedding_distance(e[i : i + 1].expand(len(e), -1), e), atol=1e-5, rtol=1e-5)


def _index_of(g: Gallery) -> Any:
    return g._indexes["best"][0]


def test_index_cache_rebuilt_when_missing_corrupt_or_stale(tmp_path: Path, net: SiameseNetwork, cal: Calibrator, faces: Faces) -> None:
    path = tmp_path / "g.db"
    cache = Path(f"{path}.best-hnsw.faiss")
    side = Path(f"{cache}.json")
    probes = torch.cat([faces.images(c, 1) for c in range(8)])

    def answers(g: Gallery) -> list[str | None]:
        return [r.decision for r in g.identify_batch(probes, k=3)]

    with Gallery.open(path, net, calibrator=cal, index="hnsw") as g:
        for c in range(8):
            g.enroll(f"id{c}", faces.images(c, 2))
        want = answers(g)
        assert want == [f"id{c}" for c in range(8)]
        assert _index_of(g).build_seconds_ > 0  # built
    assert cache.is_file() and side.is_file()
    assert json.loads(side.read_text())["state"]["generation"] == 8

    # reopened: loaded from the cache, not rebuilt
    with Gallery.open(path, net, calibrator=cal, index="hnsw") as g:
        assert answers(g) == want and _index_of(g).build_seconds_ == 0.0

    # missing -> rebuilt and rewritten
    cache.unlink()
    with Gallery.open(path, net, calibrator=cal, index="hnsw") as g:
        assert answers(g) == want and _index_of(g).build_seconds_ > 0
    assert cache.is_file()

    # corrupted (same size, other bytes; then truncated) -> rebuilt
    for damage in ("flip", "truncate", "garbage sidecar"):
        if damage == "flip":
            b = bytearray(cache.read_bytes())
            b[len(b) // 2] ^= 0xFF
            cache.write_bytes(bytes(b))
        elif damage == "truncate":
            cache.write_bytes(cache.read_bytes()[:100])
        else:
            side.write_text("{not json")
        with Gallery.open(path, net, calibrator=cal, index="hnsw") as g:
            assert answers(g) == want and _index_of(g).build_seconds_ > 0, damage

    # stale: another handle (as another process would) writes -> generation moves on
    with Gallery.open(path, net, calibrator=cal, index="hnsw") as g:
        assert answers(g) == want
        with Gallery.open(path, net, calibrator=cal, index="exact") as other:
            other.enroll("late", faces.images(12, 1))
        # this handle notices the write and rebuilds its view and index
        assert g.identify(faces.images(12, 1)[0]).decision == "late"
        assert _index_of(g).ntotal == 17 and _index_of(g).build_seconds_ > 0
    assert json.loads(side.read_text())["state"]["generation"] == 9

    # the cache of a different gallery file (copied over) is not used
    path2 = tmp_path / "g2.db"
    with Gallery.open(path2, net, calibrator=cal, index="hnsw") as g:
        g.enroll("x", faces.images(0, 1))
    Path(f"{path2}.best-hnsw.faiss").write_bytes(cache.read_bytes())
    Path(f"{path2}.best-hnsw.faiss.json").write_text(side.read_text())
    with Gallery.open(path2, net, calibrator=cal, index="hnsw") as g:
        assert g.identify(faces.images(0, 1)[0]).decision == "x" and _index_of(g).ntotal == 1


def test_incremental_add_keeps_the_index_and_saves_it_on_close(tmp_path: Path, net: SiameseNetwork, cal: Calibrator, faces: Faces) -> None:
    path = tmp_path / "g.db"
    with Gallery.open(path, net, calibrator=cal, index="ivf", index_params={"nlist": 2, "nprobe": 2}) as g:
        for c in range(6):
            g.enroll(f"id{c}", faces.images(c, 2))
        assert g.build_index() == "ivf"
        index = _index_of(g)
        g.enroll("id6", faces.images(6, 2))
        assert _index_of(g) is index and index.ntotal == 14  # appended, not rebuilt
        assert g.identify(faces.images(6, 1)[0]).decision == "id6"
    side = json.loads(Path(f"{path}.best-ivf.faiss.json").read_text())
    assert side["state"]["generation"] == 7 and side["ntotal"] == 14


def test_auto_switches_to_ivf_beyond_exact_max(where: Any, tmp_path: Path, net: SiameseNetwork, cal: Calibrator, faces: Faces) -> None:
    with Gallery.open(where(), net, calibrator=cal, exact_max=5) as g:
        g.enroll("a", faces.images(0, 3))
        assert g.identify(faces.images(0, 1)[0]).index == "exact"
        g.enroll("b", faces.images(1, 3))
        r = g.identify(faces.images(1, 1)[0])
        assert r.index == "ivf" and r.decision == "b"
        m = g.identify(faces.images(1, 1)[0], scoring="mean")
        assert m.index == "exact"  # 2 templates only
        # an IVF index trained on few vectors is rebuilt once the gallery has outgrown it
        index = _index_of(g)
        assert index.index_.nlist == 1
        for c in range(2, 12):
            g.enroll(f"id{c}", faces.images(c, 30))
        r = g.identify(faces.images(11, 1)[0])
        assert r.decision == "id11" and _index_of(g).index_.nlist > 1


def test_two_handles_see_each_others_writes(where: Any, tmp_path: Path, net: SiameseNetwork, cal: Calibrator, faces: Faces) -> None:
    path = where()
    a = Gallery.open(path, net, calibrator=cal)
    b = Gallery.open(path, net, calibrator=cal)
    try:
        a.enroll("x", faces.images(0, 1))
        assert b.identify(faces.images(0, 1)[0]).decision == "x"
        b.enroll("y", faces.images(1, 1))
        b.remove("x")
        assert a.identify(faces.images(1, 1)[0]).decision == "y"
        assert a.identify(faces.images(0, 1)[0]).decision == UNKNOWN
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------- bad input


def test_bad_input(gallery: Gallery, faces: Faces, tmp_path: Path) -> None:
    img = faces.images(0, 1)[0]
    with pytest.raises(UnknownIdentityError, match="'nobody' is not enrolled"):
        gallery.verify("nobody", img)
    with pytest.raises(UnknownIdentityError, match="'nobody' is not enrolled"):
        gallery.add_samples("nobody", faces.images(0, 1))
    with pytest.raises(UnknownIdentityError):
        gallery.get("nobody")
    with pytest.raises(UnknownIdentityError):
        gallery.set_metadata("nobody", {})
    with pytest.raises(GalleryError, match="list of samples is empty"):
        gallery.enroll("new", [])
    with pytest.raises(GalleryError, match="no samples"):
        gallery.enroll("new", torch.zeros(0, 1, S, S, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"shape \(3, 24, 24\).*takes \(1, 24, 24\)"):
        gallery.enroll("new", torch.zeros(2, 3, S, S, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"shape \(1, 20, 24\)"):
        gallery.enroll("new", torch.zeros(2, 1, 20, S, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"shape \(1, 1, 24, 24\), but the model takes \(1, 24, 24\)"):
        gallery.identify(torch.zeros(1, 1, 1, S, S, dtype=torch.uint8))
    with pytest.raises(DataError, match="dtype torch.int64"):
        gallery.enroll("new", torch.zeros(1, 1, S, S, dtype=torch.int64))
    with pytest.raises(DataError, match="NaN"):
        gallery.enroll("new", torch.full((1, 1, S, S), float("nan")))
    with pytest.raises(DataError, match="does not exist"):
        gallery.enroll("new", [tmp_path / "missing.png"])
    with pytest.raises(GalleryError, match="not a mix"):
        gallery.enroll("new", [str(tmp_path / "a.png"), img])
    with pytest.raises(GalleryError, match="image file paths or a uint8 array"):
        gallery.enroll("new", 42)
    # duplicate: an error, nothing merged or changed
    n = gallery.get("id1").n_samples
    with pytest.raises(IdentityExistsError, match="'id1' is already enrolled.*add_samples"):
        gallery.enroll("id1", faces.images(1, 2))
    assert gallery.get("id1").n_samples == n
    for name, msg in [("", "non-empty"), (" x", "spaces"), ("a\nb", "control"), ("unknown", "reserved"), (3, "string"), ("x" * 300, "limit")]:
        with pytest.raises(GalleryError, match=msg):
            gallery.enroll(name, faces.images(0, 1))  # type: ignore[arg-type]
    with pytest.raises(GalleryError, match="JSON-serialisable"):
        gallery.enroll("new", faces.images(0, 1), metadata={"x": object()})
    with pytest.raises(GalleryError, match="must be a dict"):
        gallery.enroll("new", faces.images(0, 1), metadata=["x"])  # type: ignore[arg-type]
    with pytest.raises(GalleryError, match="JSON-serialisable"):
        gallery.enroll("new", faces.images(0, 1), metadata={"x": float("nan")})
    with pytest.raises(GalleryError, match="2 samples but 1 sample metadata"):
        gallery.enroll("new", faces.images(0, 2), sample_metadata=[{}])
    assert "new" not in gallery
    with pytest.raises(GalleryError, match="k must be a positive integer"):
        gallery.identify(img, k=0)
    with pytest.raises(GalleryError, match="scoring must be one of"):
        gallery.identify(img, scoring="median")
    with pytest.raises(GalleryError, match="expected one sample"):
        gallery.identify(faces.images(0, 2))
    assert all(isinstance(e, SiamkitError) for e in (GalleryError("x"), IdentityExistsError("x")))


def test_bad_files_and_options(tmp_path: Path, net: SiameseNetwork) -> None:
    with pytest.raises(GalleryFileError, match="does not exist"):
        Gallery.open(tmp_path / "none.db", net, create=False)
    with pytest.raises(GalleryFileError, match="creating one needs a model"):
        Gallery.open(tmp_path / "none.db", None)
    with pytest.raises(GalleryFileError, match="folder .* does not exist"):
        Gallery.open(tmp_path / "no" / "g.db", net)
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(GalleryFileError, match="not a readable siamkit gallery"):
        Gallery.open(junk, net)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE t(x)")
    with pytest.raises(GalleryFileError, match="not a siamkit gallery"):
        Gallery.open(other, net)
    newer = tmp_path / "newer.db"
    Gallery.open(newer, net).close()
    with sqlite3.connect(newer) as con:
        con.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(GalleryFileError, match="schema version 99, written by a newer siamkit"):
        Gallery.open(newer, net)
    with pytest.raises(GalleryError, match="scoring must be one of"):
        Gallery.open(tmp_path / "x.db", net, scoring="max")
    with pytest.raises(GalleryError, match="index must be one of"):
        Gallery.open(tmp_path / "x.db", net, index="annoy")
    with pytest.raises(GalleryError, match="unknown index parameter"):
        Gallery.open(tmp_path / "x.db", net, index_params={"efsearch": 5})
    with pytest.raises(GalleryError, match="must be a Verifier"):
        Gallery.open(tmp_path / "x.db", 42)  # type: ignore[arg-type]
    g = Gallery.open(tmp_path / "x.db", net)
    g.close()
    g.close()  # idempotent
    with pytest.raises(GalleryError, match="closed"):
        g.list()


# --------------------------------------------------------------------------- CLI


def _cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(gallery_app, [str(a) for a in args])


def _one_line_error(result, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_cli_end_to_end(where: Any, tmp_path: Path, net: SiameseNetwork, cal: Calibrator, faces: Faces) -> None:
    model = tmp_path / "model"
    save_model(net, model)
    cal.model_fingerprint_ = net.fingerprint
    cal.save(model)
    imgs: dict[int, list[Path]] = {}
    for c in (0, 1, 2, 13):
        imgs[c] = []
        for i, a in enumerate(faces.images(c, 3)):
            p = tmp_path / f"c{c}_{i}.png"
            Image.fromarray(a[0].numpy(), "L").save(p)
            imgs[c].append(p)
    g = where()
    opts = ["--gallery", g, "--model", model]
    r = _cli("enroll", "alice", imgs[0][0], imgs[0][1], *opts, "--metadata", '{"team": "R&D"}')
    assert r.exit_code == 0 and "enrolled alice: 2 samples" in r.output, r.output
    assert _cli("enroll", "bob", imgs[1][0], *opts).exit_code == 0
    r = _cli("add", "bob", imgs[1][1], *opts)
    assert r.exit_code == 0 and "bob: 2 samples" in r.output
    assert _cli("enroll", "carol", imgs[2][0], *opts).exit_code == 0
    r = _cli("list", "--gallery", g)
    assert r.exit_code == 0 and "3 identities, 5 samples" in r.output and '{"team": "R&D"}' in r.output
    r = _cli("list", "--gallery", g, "--json")
    assert [x["identity"] for x in json.loads(r.output)["identities"]] == ["alice", "bob", "carol"]
    r = _cli("verify", "alice", imgs[0][2], *opts)
    assert r.exit_code == 0 and "decision:   SAME" in r.output, r.output
    r = _cli("verify", "bob", imgs[0][2], *opts, "--json")
    assert json.loads(r.output)["same"] is False
    r = _cli("identify", imgs[2][2], *opts, "-k", "2")
    assert r.exit_code == 0 and r.output.startswith("decision: carol"), r.output
    r = _cli("identify", imgs[13][0], *opts, "--json")
    out = json.loads(r.output)
    assert out["decision"] == "unknown" and len(out["candidates"]) == 3
    r = _cli("identify", imgs[13][0], *opts, "--scoring", "mean", "--index", "flat")
    assert r.exit_code == 0 and "decision: unknown" in r.output and "(scoring mean, flat search)" in r.output
    r = _cli("remove", "carol", "--gallery", g)
    assert r.exit_code == 0 and "removed carol (1 sample)" in r.output
    # reembed with another model
    other = tmp_path / "other"
    save_model(_net(seed=3), other)
    _one_line_error(_cli("identify", imgs[0][2], "--gallery", g, "--model", other), "was built with model", "reembed")
    r = _cli("reembed", "--gallery", g, "--model", other)
    assert r.exit_code == 0 and "re-embedded 4 samples" in r.output, r.output
    r = _cli("identify", imgs[0][2], "--gallery", g, "--model", other)
    assert r.exit_code == 0 and "decision: none" in r.output and "alice" in r.output  # not calibrated


def test_cli_errors(tmp_path: Path, net: SiameseNetwork, faces: Faces) -> None:
    model = tmp_path / "model"
    save_model(net, model)
    p = tmp_path / "a.png"
    Image.fromarray(faces.images(0, 1)[0, 0].numpy(), "L").save(p)
    g = tmp_path / "g.db"
    _one_line_error(_cli("list", "--gallery", g), "does not exist")
    _one_line_error(_cli("enroll", "a", p, "--gallery", g), "--model is required")
    _one_line_error(_cli("enroll", "a", tmp_path / "missing.png", "--gallery", g, "--model", model), "does not exist")
    assert _cli("enroll", "a", p, "--gallery", g, "--model", model).exit_code == 0
    _one_line_error(_cli("enroll", "a", p, "--gallery", g, "--model", model), "already enrolled")
    _one_line_error(_cli("enroll", "b", p, "--gallery", g, "--model", model, "--metadata", "{bad"), "--metadata must be a JSON object")
    _one_line_error(_cli("verify", "zed", p, "--gallery", g, "--model", model), "'zed' is not enrolled")
    _one_line_error(_cli("remove", "zed", "--gallery", g), "'zed' is not enrolled")
    _one_line_error(_cli("identify", p, "--gallery", g, "--model", model, "-k", "0"), "-k must be >= 1")
    _one_line_error(_cli("identify", p, "--gallery", g, "--model", model, "--index", "annoy"), "index must be one of")
    _one_line_error(_cli("reembed", "--gallery", g), "--model is required")
    _one_line_error(_cli("list", "--gallery", tmp_path), "is a folder")
