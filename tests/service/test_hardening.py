"""The defects an outside attacker found in a live ``siamkit serve``, each reproduced:
metadata and identity names the gallery stores but cannot serve back, authentication
order, the key store's timing and revocation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from siamkit.errors import GalleryError  # noqa: E402
from siamkit.gallery.store_schema import check_identity, check_metadata  # noqa: E402
from siamkit.service import KeyStore, ServiceSettings, create_app  # noqa: E402

from .test_service import SMALL, assert_error, build_model, image_bytes, many  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("hard") / "model")


@pytest.fixture(scope="module")
def keys() -> tuple[KeyStore, str, str]:
    ks = KeyStore()
    return ks, ks.add("reader", "read"), ks.add("boss", "admin")


@pytest.fixture
def client(model_dir: Path, keys: tuple[KeyStore, str, str], tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ServiceSettings(model=model_dir, keys=keys[0], gallery=tmp_path / "g.db", limits=SMALL, max_inference=2))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _enroll(c: TestClient, key: str, identity: str, metadata: str | None = None, seed: int = 0) -> Any:
    data = {"identity": identity} if metadata is None else {"identity": identity, "metadata": metadata}
    return c.post("/v1/identities", data=data, files=many([image_bytes(seed)]), headers={"X-API-Key": key})


# --------------------------------------------------------------------------- row 1: metadata


def test_metadata_rule_unit() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    for bad, match in [
        (deep, "deeper"), ({"a": "\ud800"}, "surrogate"), ({"\udfff": 1}, "surrogate"), ({"a": float("nan")}, "finite"),
        ({1: 2}, "strings"), ({"": 1}, "characters"), ({"a": object()}, "object"), ({"a": "x" * 70_000}, "bytes"), ([1], "dict"),
    ]:
        with pytest.raises(GalleryError, match=match):
            check_metadata(bad)
    ok = {"a": [1, 2.5, None, True, {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}], "name": "Zoë"}
    assert check_metadata(ok) is ok and check_metadata(None) == {}
    with pytest.raises(GalleryError, match="deeper"):
        check_metadata({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {}}}}}}}}})


def test_deep_or_surrogate_metadata_is_422_and_never_stored(client: TestClient, keys: tuple[KeyStore, str, str]) -> None:
    admin = keys[2]
    deep = '{"a":' * 260 + "1" + "}" * 260
    for i, meta in enumerate([deep, '{"a":"\\ud800"}', '{"\\udc00":1}']):
        assert_error(_enroll(client, admin, f"p{i}", meta), 422, "invalid_metadata")
    assert _enroll(client, admin, "ok", '{"a": {"b": 1}}').status_code == 201
    r = client.get("/v1/identities", headers={"X-API-Key": keys[1]})
    assert r.status_code == 200 and [x["identity"] for x in r.json()["identities"]] == ["ok"]


# --------------------------------------------------------------------------- row 2: identity names


def test_identity_rule_unit() -> None:
    for good in ["alice", "id6", "Zoë Ó", "a.b", "x@y+z", "new-1_2", "李"]:
        assert check_identity(good) == good
    for bad in ["a/b", ".", "..", "../x", " a", "a ", "a\tb", "a\x00", "unknown", "x" * 257, "a\\b", "a?b", "a#b", "a%2Fb", "\ud800"]:
        with pytest.raises(GalleryError):
            check_identity(bad)


def test_every_enrollable_identity_can_be_read_verified_and_deleted(client: TestClient, keys: tuple[KeyStore, str, str]) -> None:
    from urllib.parse import quote

    read, admin = keys[1], keys[2]
    for name in ["a/b", ".", "..", "a?b", "x#y"]:
        assert_error(_enroll(client, admin, name), 422, "invalid_identity")
    for i, name in enumerate(["a.b", "Zoë x", "x@y+z"]):
        assert _enroll(client, admin, name, seed=i).status_code == 201
        url = f"/v1/identities/{quote(name, safe='')}"
        assert client.get(url, headers={"X-API-Key": read}).json()["identity"] == name
        r = client.post(f"{url}/verify", files={"image": ("x.png", image_bytes(i), "image/png")}, headers={"X-API-Key": read})
        assert r.status_code == 200, r.text
        assert client.delete(url, headers={"X-API-Key": admin}).json()["removed_samples"] == 1
    assert client.get("/v1/identities", headers={"X-API-Key": read}).json()["total"] == 0


# --------------------------------------------------------------------------- row 10: authentication first


def test_authentication_comes_before_any_body_check(client: TestClient, keys: tuple[KeyStore, str, str]) -> None:
    bodies: list[dict[str, Any]] = [
        {"content": b"x", "headers": {"content-type": "text/plain"}},
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"content": b"--b\r\ngarbage", "headers": {"content-type": "multipart/form-data; boundary=b"}},
        {"content": b"", "headers": {}},
    ]
    for path in ["/v1/verify", "/v1/identify", "/v1/identities", "/v1/identities/a/samples", "/v1/identities/a/verify", "/v1/feedback"]:
        for body in bodies:
            assert_error(client.post(path, **body), 401, "unauthorized")
            bad = {**body, "headers": {**body["headers"], "X-API-Key": "sk_wrong"}}
            assert_error(client.post(path, **bad), 401, "unauthorized")
    # with a valid key the body checks still answer
    assert_error(client.post("/v1/verify", content=b"x", headers={"content-type": "text/plain", "X-API-Key": keys[1]}), 415)
    assert_error(client.post("/v1/feedback", content=b"{no", headers={"content-type": "application/json", "X-API-Key": keys[2]}), 422)
    spec = client.get("/openapi.json").json()["paths"]
    for path, method in [("/v1/verify", "post"), ("/v1/identities", "post"), ("/v1/feedback", "post"), ("/v1/identities", "get")]:
        assert {"401", "403", "422"} <= set(spec[path][method]["responses"]), (path, method)
    assert "415" in spec["/v1/verify"]["post"]["responses"]


# --------------------------------------------------------------------------- rows 4, 5: the key store


def test_unknown_key_ids_cost_a_kdf_and_repeated_failures_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    import siamkit.service.security as security

    ks = KeyStore()
    good = ks.add("a", "read")
    calls: list[int] = []
    real = security.hash_secret

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(security, "hash_secret", counting)
    key_id = good.split("_")[1]
    unknown = f"sk_{'0' if key_id[0] != '0' else '1'}{key_id[1:]}_{'A' * 43}"
    wrong = f"sk_{key_id}_{'B' * 43}"
    assert ks.authenticate(unknown) is None and len(calls) == 1  # the dummy record's scrypt
    assert ks.authenticate(wrong) is None and len(calls) == 2
    for _ in range(5):
        assert ks.authenticate(wrong) is None and ks.authenticate(unknown) is None
    assert len(calls) == 2  # repeats are refused from the failure cache
    assert ks.authenticate(good) is not None and len(calls) == 3
    assert ks.authenticate(good) is not None and len(calls) == 3
    monkeypatch.setattr(security, "FAILED_TTL_S", 0.0)
    assert ks.authenticate(wrong) is None and len(calls) == 4


def test_revoked_key_stops_working_in_a_running_service(model_dir: Path, tmp_path: Path) -> None:
    import time

    from typer.testing import CliRunner

    from siamkit.cli import app as cli

    keys_file = tmp_path / "keys.json"
    ks = KeyStore(path=keys_file)
    k1, k2 = ks.add("one", "read"), ks.add("two", "read")
    ks.save()
    app = create_app(ServiceSettings(model=model_dir, keys=keys_file, limits=SMALL, max_inference=1))
    pair = {"image_a": ("a.png", image_bytes(0), "image/png"), "image_b": ("b.png", image_bytes(1), "image/png")}
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/v1/verify", files=pair, headers={"X-API-Key": k1}).status_code == 200
        r = CliRunner().invoke(cli, ["keys", "revoke", "one", "--keys", str(keys_file)])
        assert r.exit_code == 0 and "within about a second" in r.output
        time.sleep(1.1)
        assert_error(c.post("/v1/verify", files=pair, headers={"X-API-Key": k1}), 401, "unauthorized")
        assert c.post("/v1/verify", files=pair, headers={"X-API-Key": k2}).status_code == 200
        keys_file.write_text("not json")  # a broken file keeps the last good keys
        time.sleep(0.6)
        assert c.post("/v1/verify", files=pair, headers={"X-API-Key": k2}).status_code == 200


# --------------------------------------------------------------------------- rows 3/6: rate limits


def test_token_bucket_unit() -> None:
    from siamkit.service.ratelimit import RateLimiter

    now = [0.0]
    rl = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [rl.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take("a") == pytest.approx(0.5) and rl.take("b") == 0.0
    now[0] = 0.5
    assert rl.take("a") == 0.0 and rl.take("a") > 0
    now[0] = 100.0
    assert [rl.take("a") for _ in range(3)] == [0.0] * 3 and rl.take("a") > 0  # refills to burst, not beyond


def test_rate_limits_answer_429_with_retry_after(model_dir: Path, keys: tuple[KeyStore, str, str], tmp_path: Path) -> None:
    settings = ServiceSettings(model=model_dir, keys=keys[0], limits=SMALL, rate_per_key=1.0, rate_per_client=None, rate_burst=2.0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        codes = [c.get("/v1/identities", headers={"X-API-Key": keys[1]}).status_code for _ in range(3)]
        assert codes == [503, 503, 429]  # no gallery: 503 until the key's 2 tokens are spent
        r = c.get("/v1/identities", headers={"X-API-Key": keys[1]})
        err = assert_error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1 and err["message"]
        assert c.get("/v1/identities", headers={"X-API-Key": keys[2]}).status_code == 503  # another key: its own bucket
        assert all(c.get("/healthz").status_code == 200 for _ in range(5))
        assert "429" in c.get("/openapi.json").json()["paths"]["/v1/verify"]["post"]["responses"]
    settings = ServiceSettings(model=model_dir, keys=keys[0], limits=SMALL, rate_per_client=1.0, rate_burst=1.0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.get("/v1/identities").status_code == 401
        assert_error(c.get("/v1/identities", headers={"X-API-Key": f"sk_{'a' * 8}_{'x' * 30}"}), 429, "rate_limited")
