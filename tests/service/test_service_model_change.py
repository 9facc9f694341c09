"""The service after another process re-embedded its gallery with a new model (a SQLite
file and a PostgreSQL database): 503 ``gallery_model_changed`` while its ``--model``
folder holds the old model, nothing written by it; once the folder holds the gallery's
new model, the next request switches the model and the index together and is answered
as a fresh instance on the new model answers it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from siamkit.gallery import Gallery  # noqa: E402
from siamkit.service import KeyStore, ServiceSettings, create_app  # noqa: E402

from .test_service import build_model, image_bytes  # noqa: E402


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        yield tmp_path / "g.db"
        return
    pytest.importorskip("psycopg")
    from tests.postgres_cluster import drop_database

    server = request.getfixturevalue("postgres_server")
    url = server.new_database()
    yield url
    drop_database(server.url, url)


def _enrol(c: TestClient, name: str, seed: int, h: dict[str, str]) -> Any:
    return c.post("/v1/identities", data={"identity": name}, files=[("images", ("0.png", image_bytes(seed)))], headers=h)


def _identify(c: TestClient, seed: int, h: dict[str, str]) -> Any:
    return c.post("/v1/identify", params={"k": 3}, files={"image": ("p.png", image_bytes(seed))}, headers=h)


def test_service_follows_a_reembedded_gallery(location: Any, tmp_path: Path) -> None:
    serving = build_model(tmp_path / "serving", seed=0)  # the instance's --model folder
    newer = build_model(tmp_path / "newer", seed=1)
    ks = KeyStore()
    h = {"X-API-Key": ks.add("boss", "admin")}
    app = create_app(ServiceSettings(model=serving, keys=ks, gallery=location, feedback=tmp_path / "fb.sqlite"))
    with TestClient(app, raise_server_exceptions=False) as c:
        for i in range(3):
            assert _enrol(c, f"p{i}", 20 + i, h).status_code == 201
        assert _identify(c, 21, h).json()["candidates"][0]["identity"] == "p1"
        with Gallery.migrate(location, newer) as other:  # another process moves the gallery to the new model
            assert other.n_samples == 3
        for call in (lambda: _identify(c, 21, h), lambda: _enrol(c, "late", 30, h)):
            r = call()
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "gallery_model_changed"
        with Gallery.open(location, newer) as fresh:
            assert "late" not in fresh and fresh.n_samples == 3
        # the deployment puts the new model in the instance's folder: the next request switches
        for f in newer.iterdir():
            shutil.copy2(f, serving / f.name)
        r = _identify(c, 21, h)
        assert r.status_code == 200, r.text
        with Gallery.open(location, newer) as fresh:
            want = fresh.identify(_probe(tmp_path, 21), k=3)
            new_fingerprint = fresh.meta["model_fingerprint"]
        got = r.json()["candidates"]
        assert [x["identity"] for x in got] == [x.identity for x in want.candidates]
        assert [round(x["distance"], 5) for x in got] == [round(x.distance, 5) for x in want.candidates]
        assert app.state.siamkit.fingerprint == new_fingerprint
        assert _enrol(c, "late", 30, h).status_code == 201
        assert c.get("/v1/identities/late", headers=h).json()["n_samples"] == 1


def _probe(tmp_path: Path, seed: int) -> str:
    p = tmp_path / f"probe{seed}.png"
    p.write_bytes(image_bytes(seed))
    return str(p)
