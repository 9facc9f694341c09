"""Texts in the gallery (library and CLI) and the service's JSON text endpoints, on the
tiny random BERT of conftest.py saved as a text model folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from siamkit.calibration import Calibrator
from siamkit.errors import DataError, GalleryError
from siamkit.gallery import Gallery
from siamkit.text import TextTwin, pretrained_twin
from siamkit.text.inputs import compare_texts, text_input_of
from siamkit.verify import Verifier

ALICE = ["a man is playing guitar", "a man is playing piano"]
BOB = ["a dog runs in the park", "a cat runs in the park"]


@pytest.fixture(scope="module")
def text_model(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibrated text model folder (threshold fitted on synthetic cosine distances)."""
    folder = tmp_path_factory.mktemp("text-model") / "model"
    twin = pretrained_twin(str(tiny_bert), max_length=16)
    twin.save(folder)
    twin = TextTwin.load(folder)
    rng = np.random.default_rng(0)
    d = np.r_[rng.uniform(0.0, 0.02, 40), rng.uniform(0.01, 0.3, 40)]
    same = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    Calibrator().fit(d, same, split_name="synthetic", model_fingerprint=twin.network.fingerprint).save(folder)
    return folder


def cosine_distance(twin: TextTwin, a: str, b: str) -> float:
    return 1.0 - float(twin.similarity([a], [b])[0])


def test_gallery_enrols_identifies_and_verifies_texts(text_model: Path, tmp_path: Path) -> None:
    twin = TextTwin.load(text_model)
    with Gallery.open(tmp_path / "g.db", text_model) as g:
        assert text_input_of(g.network) is not None
        rec = g.enroll("alice", ALICE, metadata={"team": "music"})
        assert rec.n_samples == 2 and {s.format for s in rec.samples} == {"text"}
        g.enroll("bob", BOB[0])  # one text
        g.add_samples("bob", [BOB[1]])
        probe = "a dog runs in the park"
        r = g.identify(probe, k=2)
        assert r.candidates[0].identity == "bob" and r.candidates[0].distance == pytest.approx(0.0, abs=1e-5)
        # the second candidate's distance is the twin's own cosine distance to alice's closest text
        want = min(cosine_distance(twin, probe, t) for t in ALICE)
        assert r.candidates[1].identity == "alice" and r.candidates[1].distance == pytest.approx(want, abs=1e-5)
        assert r.decision == "bob"
        v = g.verify("alice", "a woman eats food")
        assert v.distance == pytest.approx(min(cosine_distance(twin, "a woman eats food", t) for t in ALICE), abs=1e-5)
        before = g.identify("a cat sits on the table", k=2).candidates
        g.reembed(text_model)  # the kept texts are tokenised again
        after = g.identify("a cat sits on the table", k=2).candidates
        assert [(c.identity, round(c.distance, 5)) for c in before] == [(c.identity, round(c.distance, 5)) for c in after]


def test_gallery_refuses_bad_text_inputs(text_model: Path, tmp_path: Path) -> None:
    with Gallery.open(tmp_path / "g.db", text_model) as g:
        with pytest.raises(DataError, match="text model"):
            g.enroll("carol", torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
        with pytest.raises(DataError, match="empty"):
            g.enroll("carol", ["a dog", "   "])
        with pytest.raises(GalleryError, match="empty"):
            g.enroll("carol", [])
        with pytest.raises(DataError, match="characters"):
            g.identify("a" * 100_001)
        assert g.list() == []  # nothing half-enrolled


def test_an_image_gallery_cannot_move_to_a_text_model(text_model: Path, tmp_path: Path) -> None:
    import siamkit

    net = siamkit.SiameseNetwork(siamkit.create_encoder("mlp", in_features=4, hidden=[8], embedding_dim=4),
                                 input_spec={"shape": [4]})
    with Gallery.open(tmp_path / "g.db", net) as g:
        g.enroll("x", np.ones((1, 4), np.float32))
    with pytest.raises(GalleryError, match="not a text"):
        Gallery.migrate(tmp_path / "g.db", text_model)


def test_compare_texts_matches_the_twin(text_model: Path) -> None:
    v = Verifier.from_dir(text_model)
    twin = TextTwin.load(text_model)
    r = compare_texts(v, ALICE[0], BOB[0])
    assert r.distance == pytest.approx(cosine_distance(twin, ALICE[0], BOB[0]), abs=1e-6)
    assert r.same is not None and r.threshold == pytest.approx(v.calibrator.threshold_)


def test_cli_gallery_with_texts(text_model: Path, tmp_path: Path) -> None:
    from siamkit.cli import app

    runner = CliRunner()
    db = str(tmp_path / "g.db")
    common = ["--gallery", db, "--model", str(text_model)]
    r = runner.invoke(app, ["gallery", "enroll", "alice", *ALICE, *common])
    assert r.exit_code == 0, r.output
    assert "alice: 2 samples" in r.output
    r = runner.invoke(app, ["gallery", "enroll", "bob", "a dog runs in the park //", *common])  # no path mangling
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["gallery", "identify", "a dog runs in the park //", *common, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["candidates"][0]["identity"] == "bob" and out["candidates"][0]["distance"] == pytest.approx(0, abs=1e-5)
    r = runner.invoke(app, ["gallery", "verify", "alice", ALICE[1], *common, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["distance"] == pytest.approx(0, abs=1e-5)
    r = runner.invoke(app, ["gallery", "add", "alice", " ", *common])
    assert r.exit_code == 2 and "error:" in r.output and "empty" in r.output


# --------------------------------------------------------------------------- the service

fastapi = pytest.importorskip("fastapi")


@pytest.fixture
def served(text_model: Path, tmp_path: Path) -> Any:
    from fastapi.testclient import TestClient

    from siamkit.service import KeyStore, Limits, ServiceSettings, create_app

    ks = KeyStore()
    read, admin = ks.add("reader", "read"), ks.add("boss", "admin")
    app = create_app(ServiceSettings(model=text_model, keys=ks, gallery=tmp_path / "g.db",
                                     limits=Limits(max_batch=3, max_k=4), max_inference=1))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, {"X-API-Key": read}, {"X-API-Key": admin}


def test_service_text_endpoints(served: Any, text_model: Path) -> None:
    c, R, A = served
    twin = TextTwin.load(text_model)
    r = c.post("/v1/text/verify", json={"text_a": ALICE[0], "text_b": BOB[0]}, headers=R)
    assert r.status_code == 200, r.text
    assert r.json()["distance"] == pytest.approx(cosine_distance(twin, ALICE[0], BOB[0]), abs=1e-5)
    assert r.json()["decision"] in ("same", "different")
    r = c.post("/v1/text/identities", json={"identity": "alice", "texts": ALICE, "metadata": {"team": "music"}}, headers=A)
    assert r.status_code == 201, r.text
    assert r.json()["n_samples"] == 2 and r.json()["metadata"] == {"team": "music"}
    assert c.post("/v1/text/identities", json={"identity": "alice", "texts": ALICE}, headers=A).status_code == 409
    r = c.post("/v1/text/identities/alice/samples", json={"texts": ["a woman sings a song"]}, headers=A)
    assert r.status_code == 200 and r.json()["n_samples"] == 3
    r = c.post("/v1/text/identify?k=2", json={"text": "a woman sings a song"}, headers=R)
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["identity"] == "alice" and r.json()["decision"] == "alice"
    r = c.post("/v1/text/identities/alice/verify", json={"text": ALICE[0]}, headers=R)
    assert r.status_code == 200 and r.json()["same"] is True and r.json()["identity"] == "alice"


def test_service_text_errors(served: Any) -> None:
    c, R, A = served
    assert c.post("/v1/text/verify", json={"text_a": "a"}, headers=R).status_code == 422
    assert c.post("/v1/text/verify", json={"text_a": "", "text_b": "a dog"}, headers=R).status_code == 422
    assert c.post("/v1/text/verify", json={"text_a": "a", "text_b": "b"}).status_code == 401
    assert c.post("/v1/text/identities", json={"identity": "x", "texts": ["a"]}, headers=R).status_code == 403
    r = c.post("/v1/text/verify", content=b"text_a=a", headers={**R, "content-type": "text/plain"})
    assert r.status_code == 415
    r = c.post("/v1/text/identities", json={"identity": "x", "texts": ["a dog"] * 4}, headers=A)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_samples"
    r = c.post("/v1/text/identities", json={"identity": "x", "texts": ["a dog", "  "]}, headers=A)
    assert r.status_code == 422 and "empty" in r.json()["error"]["message"]
    assert c.post("/v1/text/identify?k=5", json={"text": "a dog"}, headers=R).status_code == 422  # max_k 4
    assert c.post("/v1/text/identities/nobody/verify", json={"text": "a dog"}, headers=R).status_code == 404
    # images sent to a text model: 415 naming the JSON endpoints
    r = c.post("/v1/verify", files={"image_a": ("a.png", b"\x89PNG....", "image/png"),
                                    "image_b": ("b.png", b"\x89PNG....", "image/png")}, headers=R)
    assert r.status_code == 415 and "/v1/text" in r.json()["error"]["message"]


def test_openapi_shows_json_text_and_multipart_image_bodies(served: Any) -> None:
    c, _, _ = served
    paths = c.get("/openapi.json").json()["paths"]
    assert "application/json" in paths["/v1/text/identify"]["post"]["requestBody"]["content"]
    assert "application/json" in paths["/v1/text/identities"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in paths["/v1/identify"]["post"]["requestBody"]["content"]


def test_text_endpoints_refuse_an_image_model(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    import siamkit
    from siamkit.service import KeyStore, ServiceSettings, create_app

    spec = {"shape": [1, 28, 28], "channels": 1, "height": 28, "width": 28}
    net = siamkit.SiameseNetwork(siamkit.create_encoder("conv4", in_channels=1, embedding_dim=8, width=4), input_spec=spec)
    siamkit.save_model(net, tmp_path / "m")
    ks = KeyStore()
    key = ks.add("reader", "read")
    with TestClient(create_app(ServiceSettings(model=tmp_path / "m", keys=ks)), raise_server_exceptions=False) as c:
        r = c.post("/v1/text/verify", json={"text_a": "a", "text_b": "b"}, headers={"X-API-Key": key})
    assert r.status_code == 415 and "images" in r.json()["error"]["message"]
