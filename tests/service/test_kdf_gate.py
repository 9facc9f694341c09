"""Failed slow key checks are rate limited per client address and per key id (row 3 of issue 15:
random secrets for a real key id each cost a scrypt and are never cached)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from siamkit.service import KeyStore, ServiceSettings, create_app  # noqa: E402
from siamkit.service.ratelimit import KdfGate  # noqa: E402

from .test_service import SMALL, assert_error, build_model  # noqa: E402


def test_kdf_gate_unit() -> None:
    now = [0.0]
    gate = KdfGate(1.0, 2, clock=lambda: now[0])
    assert gate.wait("1.2.3.4", "aaaaaaaa") == 0.0
    gate.failed("1.2.3.4", "aaaaaaaa")
    assert gate.wait("1.2.3.4", "aaaaaaaa") == 0.0  # burst 2: one failure left
    gate.failed("1.2.3.4", "aaaaaaaa")
    assert gate.wait("1.2.3.4", "bbbbbbbb") == pytest.approx(1.0)  # this client is spent, whatever the key id
    assert gate.wait("5.6.7.8", "aaaaaaaa") == pytest.approx(1.0)  # this key id is spent, whoever asks
    assert gate.wait("5.6.7.8", "bbbbbbbb") == 0.0  # neither is
    for i in range(6):  # all clients together: 4x the burst (8 here); 2 charged already
        gate.failed(f"10.0.0.{i}", f"{i:08x}")
    assert gate.wait("10.0.1.1", "cccccccc") > 0.0
    now[0] = 10.0
    assert gate.wait("1.2.3.4", "aaaaaaaa") == 0.0  # refilled


def test_wrong_secrets_past_the_gate_get_429_without_a_kdf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import siamkit.service.security as security

    calls: list[int] = []
    real = security.hash_secret

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)

    ks = KeyStore()
    good = ks.add("owner", "read")
    monkeypatch.setattr(security, "hash_secret", counting)
    key_id = good.split("_")[1]
    settings = ServiceSettings(model=build_model(tmp_path / "model"), keys=ks, limits=SMALL, auth_rate=1.0, rate_burst=2.0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        def get(key: str) -> Any:
            return c.get("/v1/identities", headers={"X-API-Key": key})

        assert get(good).status_code == 503  # authenticated (no gallery here: 503); one KDF, not charged
        for s in "AB":  # two failed KDFs: the buckets (2) are spent
            assert_error(get(f"sk_{key_id}_{s * 43}"), 401, "unauthorized")
        for i in range(5):
            r = get(f"sk_{key_id}_{'C' * 42}{i}")
            assert_error(r, 429, "rate_limited")
            assert int(r.headers["retry-after"]) >= 1
        assert_error(get(f"sk_{'0' * 8}_{'D' * 43}"), 429, "rate_limited")  # an unknown id from the same client
        assert len(calls) == 3
        assert all(get(good).status_code == 503 for _ in range(5))  # the owner's verified key: from the cache
        assert len(calls) == 3


def test_right_keys_are_never_charged(tmp_path: Path) -> None:
    ks = KeyStore()
    keys = [ks.add(f"k{i}", "read") for i in range(4)]
    settings = ServiceSettings(model=build_model(tmp_path / "model"), keys=ks, limits=SMALL, auth_rate=1.0, rate_burst=1.0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        for key in keys:  # four first uses from one client, burst 1: all pass (a cold server, many clients)
            assert c.get("/v1/identities", headers={"X-API-Key": key}).status_code == 503
