"""The API keys and the feedback store in the gallery's PostgreSQL database, shared by
every service instance (two apps in this process, each with its own pools and caches,
stand for two instances):

- a key added through one store works on the other; a key revoked through one instance's
  store, or with ``siamkit keys revoke --keys URL``, is refused by the other within ~1 s
  even though that instance had verified (cached) it;
- feedback posted through one instance is listed through the other; the audit log of
  both instances' writes is one;
- the PostgreSQL feedback store answers every read as the SQLite store does;
- the CLI on a URL: keys add / list / revoke, one ``error:`` line for a taken name.

Skipped with the reason when no PostgreSQL server can be had (see tests/conftest.py).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("psycopg")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from siamkit.cli import app as cli  # noqa: E402
from siamkit.errors import FeedbackError, KeyFileError  # noqa: E402
from siamkit.feedback import FeedbackStore, PgFeedbackStore, open_feedback  # noqa: E402
from siamkit.service import ServiceSettings, create_app  # noqa: E402
from siamkit.service.pg_keys import PgKeyStore, open_keys  # noqa: E402

from .test_service import build_model, image_bytes  # noqa: E402


@pytest.fixture
def db(postgres_server: Any) -> Iterator[str]:
    from tests.postgres_cluster import drop_database

    url = postgres_server.new_database()
    yield url
    drop_database(postgres_server.url, url)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("shared-keys") / "model")


def _within(seconds: float, cond: Any) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - t0


def _identify(c: TestClient, key: str) -> int:
    r = c.post("/v1/identify", files={"image": ("p.png", image_bytes(1))}, headers={"X-API-Key": key})
    return r.status_code


def test_keys_shared_and_revocation_reaches_the_other_instance(db: str, model: Path) -> None:
    admin = PgKeyStore.open(db)
    try:
        boss, reader, other = admin.add("boss", "admin"), admin.add("reader", "read"), admin.add("other", "read")
        with pytest.raises(KeyFileError, match="already exists|could not add"):
            admin.add("reader", "read")
        seen = open_keys(db)
        seen.close()
        assert sorted(r.name for r in seen.records) == ["boss", "other", "reader"]
        apps = [create_app(ServiceSettings(model=model, keys=db, gallery=db)) for _ in range(2)]
        with TestClient(apps[0]) as a, TestClient(apps[1]) as b:
            for c in (a, b):  # both verify (and remember) every key
                assert _identify(c, reader) == 200 and _identify(c, other) == 200 and _identify(c, boss) == 200
            # revoked through instance a's store: b refuses it within a second
            assert apps[0].state.siamkit.keys.revoke("reader")
            waited = _within(1.5, lambda: _identify(b, reader) == 401)
            assert _identify(a, reader) == 401 and _identify(b, other) == 200
            # revoked with the CLI: both refuse it
            r = CliRunner().invoke(cli, ["keys", "revoke", "other", "--keys", db])
            assert r.exit_code == 0, r.output
            waited = max(waited, _within(1.5, lambda: _identify(a, other) == 401 and _identify(b, other) == 401))
            assert _identify(a, boss) == 200 and _identify(b, boss) == 200
            # a key added while they run works on both
            new = admin.add("late", "read")
            _within(1.5, lambda: _identify(a, new) == 200 and _identify(b, new) == 200)
        assert waited < 1.5
    finally:
        admin.close()


def test_cli_keys_on_a_database(db: str, request: pytest.FixtureRequest) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["keys", "add", "--name", "ops", "--role", "admin", "--keys", db])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    assert key.startswith("sk_")
    r = runner.invoke(cli, ["keys", "add", "--name", "ops", "--keys", db])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["keys", "list", "--keys", db])
    assert r.exit_code == 0 and "ops" in r.stdout and key not in r.stdout
    store = open_keys(db)
    request.addfinalizer(store.close)
    assert store.authenticate(key) is not None
    r = runner.invoke(cli, ["keys", "revoke", "nobody", "--keys", db])
    assert r.exit_code == 2 and "error:" in r.output
    assert runner.invoke(cli, ["keys", "revoke", "ops", "--keys", db]).exit_code == 0
    store.reload_if_changed(force=True)
    assert store.authenticate(key) is None
    r = runner.invoke(cli, ["keys", "list", "--keys", "postgresql://nobody@127.0.0.1:1/none"])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_feedback_and_audit_shared_by_two_instances(db: str, model: Path) -> None:
    ks = PgKeyStore.open(db)
    try:
        key = ks.add("desk", "admin")
    finally:
        ks.close()
    h = {"X-API-Key": key}
    apps = [create_app(ServiceSettings(model=model, keys=db, gallery=db)) for _ in range(2)]
    with TestClient(apps[0]) as a, TestClient(apps[1]) as b:
        assert isinstance(apps[0].state.siamkit.feedback, PgFeedbackStore)  # the gallery's database by default
        body = {"kind": "identify", "image_a": _b64(image_bytes(3)), "predicted_identity": "bob", "true_identity": "unknown"}
        r = a.post("/v1/feedback", json=body, headers=h)
        assert r.status_code == 201, r.text
        listed = b.get("/v1/feedback", headers=h).json()
        assert listed["total"] == 1 and listed["feedback"][0]["truth"] == {"identity": "unknown"}
        assert listed["feedback"][0]["actor"] == "desk"
        files = [("images", ("0.png", image_bytes(5)))]
        assert b.post("/v1/identities", data={"identity": "eve"}, files=files, headers=h).status_code == 201
        assert a.delete("/v1/identities/eve", headers=h).status_code == 200
        audit = apps[0].state.siamkit.feedback.audit_log()
        assert [e["action"] for e in audit][:3] == ["delete", "enroll", "feedback"]


def _fill(store: FeedbackStore) -> list[int]:
    img, img2 = (image_bytes(1), "png"), (image_bytes(2), "png")
    ids = [
        store.add(actor="a", kind="verify", image_a=img, image_b=img2, truth={"same": False}, predicted={"same": True}, note="twins"),
        store.add(actor="b", kind="identify", image_a=img, truth={"identity": "carol"}, reporter="desk 1"),
        store.add(actor="b", kind="identity_verify", image_a=img2, identity="carol", truth={"same": True},
                  predicted={"same": True}),  # a confirmation: stats counts it on both backends
        store.add(actor="c", kind="identify", image_a=img2, truth={"identity": "dan"}, model_fingerprint="f" * 8),
    ]
    assert store.set_status(ids[:2], "used", actor="finetune") == 2
    store.audit("ops", "enroll", "carol", {"n": 1})
    return ids


def _comparable(store: FeedbackStore) -> dict[str, Any]:
    def strip(rs: list[Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.summary().items() if k not in ("id", "created")} for r in rs]

    return {
        "all": strip(store.list()), "used": strip(store.list(status="used")), "page": strip(store.list(limit=2, offset=1)),
        "counts": (store.count(), store.count("new"), store.count("used")),
        "stats": store.stats(top=2),
        "audit": [(e["actor"], e["action"], e["target"], e["detail"]) for e in store.audit_log()],
        "audit2": len(store.audit_log(2)),
    }


def test_pg_feedback_store_answers_as_sqlite(db: str, tmp_path: Path) -> None:
    with FeedbackStore.open(tmp_path / "fb.sqlite") as lite, open_feedback(db) as pg:
        assert isinstance(pg, PgFeedbackStore)
        _fill(lite)
        ids = _fill(pg)
        assert _comparable(pg) == _comparable(lite)
        assert pg.stats()["confirmations"] == 1
        rec = pg.get(ids[0])
        assert rec.image_a == image_bytes(1) and rec.image_b == image_bytes(2) and isinstance(rec.image_a, bytes)
        with pytest.raises(FeedbackError):
            pg.get(10_000)
        with pytest.raises(FeedbackError):
            pg.add(actor="a", kind="verify", image_a=(b"x", "png"), truth={"same": True})
        assert pg.count() == 4  # the refused report left nothing
    with pytest.raises(FeedbackError, match="closed"):
        pg.count()
    with open_feedback(db, create=False) as again:
        assert again.count() == 4


def test_pg_feedback_store_missing_and_unreachable(db: str) -> None:
    with pytest.raises(FeedbackError, match="no feedback store"):
        open_feedback(db, create=False)
    with pytest.raises(FeedbackError, match="cannot reach"):
        open_feedback("postgresql://nobody@127.0.0.1:1/none")
