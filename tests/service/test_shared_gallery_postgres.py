"""Two ``siamkit serve`` processes on one PostgreSQL gallery (real processes, httpx):

- an enrolment through one is identified through the other within a second; a delete
  likewise;
- enrol / delete of the same identity through both at once: nothing lost (every
  acknowledged enrolment and delete is accounted for), no half-written identity;
- one instance killed (SIGKILL) mid-enrolment: every acknowledged enrolment is there
  with all its samples, through the other;
- the database restarted mid-traffic: 503 while it is down, 200 again by itself, nothing
  acknowledged lost.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("psycopg")

from siamkit.service import KeyStore  # noqa: E402

from .test_service import build_model, image_bytes  # noqa: E402
from .test_service_e2e import Server, free_port  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("shared")
    model = build_model(root / "model")
    ks = KeyStore()
    read_key, admin_key = ks.add("reader", "read"), ks.add("admin", "admin")
    ks.save(root / "keys.json")
    return {"root": root, "model": model, "keys": root / "keys.json", "R": {"X-API-Key": read_key}, "A": {"X-API-Key": admin_key}}


def _start(setup: dict[str, Any], url: str, n: int) -> list[Server]:
    """n serve processes on the database ``url``, started at once."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    servers = []
    for _ in range(n):
        port = free_port()
        args = [sys.executable, "-m", "siamkit.cli", "serve", "--model", str(setup["model"]), "--keys", str(setup["keys"]),
                "--gallery", url, "--port", str(port), "--log-level", "warning", "--torch-threads", "1",
                "--rate-per-key", "0", "--rate-per-client", "0"]
        servers.append(Server(args, env, port, setup["root"] / f"serve-{port}.log"))
    for s in servers:
        s.wait_ready()
    return servers


@pytest.fixture(scope="module")
def db(postgres_server: Any) -> Iterator[str]:
    from tests.postgres_cluster import drop_database

    url = postgres_server.new_database()
    yield url
    drop_database(postgres_server.url, url)


@pytest.fixture(scope="module")
def two(setup: dict[str, Any], db: str) -> Iterator[list[Server]]:
    """Two instances for the whole module (starting one costs seconds); the last test kills one."""
    servers = _start(setup, db, 2)
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


def _enrol(c: Any, name: str, seeds: list[int], headers: dict[str, str]) -> Any:
    files = [("images", (f"{i}.png", image_bytes(s))) for i, s in enumerate(seeds)]
    return c.post("/v1/identities", data={"identity": name}, files=files, headers=headers)


def _identify(c: Any, seed: int, headers: dict[str, str]) -> Any:
    return c.post("/v1/identify", params={"k": 1}, files={"image": ("p.png", image_bytes(seed))}, headers=headers)


def _within(seconds: float, cond: Any) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - t0


def test_enrol_and_delete_through_one_seen_through_the_other(two: list[Server], setup: dict[str, Any]) -> None:
    a, b = two
    R, A = setup["R"], setup["A"]
    with httpx.Client(base_url=a.url, timeout=30) as ca, httpx.Client(base_url=b.url, timeout=30) as cb:
        assert _enrol(ca, "other", [5], A).status_code == 201  # so that a stranger has someone to lose to
        _within(5.0, lambda: _identify(cb, 5, R).json()["decision"] == "other")
        r = _enrol(ca, "alice", [1, 2], A)
        assert r.status_code == 201, r.text
        waited = _within(1.0, lambda: _identify(cb, 1, R).json()["decision"] == "alice")
        assert cb.get("/v1/identities/alice", headers=R).json()["n_samples"] == 2
        assert ca.delete("/v1/identities/alice", headers=A).status_code == 200
        waited = max(waited, _within(1.0, lambda: _identify(cb, 1, R).json()["decision"] != "alice"))
        assert cb.get("/v1/identities/alice", headers=R).status_code == 404
        assert cb.delete("/v1/identities/alice", headers=A).status_code == 404
    assert waited < 1.0


def test_concurrent_enrol_and_delete_of_one_identity_loses_nothing(two: list[Server], setup: dict[str, Any]) -> None:
    R, A = setup["R"], setup["A"]
    tally = {"enrolled": 0, "deleted": 0}
    lock = threading.Lock()

    def worker(server: Server, turn: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for i in range(12):
                if (i + turn) % 2 == 0:
                    r = _enrol(c, "x", [10 + turn, 20 + turn, 30 + turn], A)
                    assert r.status_code in (201, 409), r.text
                    key = "enrolled" if r.status_code == 201 else None
                else:
                    r = c.delete("/v1/identities/x", headers=A)
                    assert r.status_code in (200, 404), r.text
                    key = "deleted" if r.status_code == 200 else None
                if key:
                    with lock:
                        tally[key] += 1

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda st: worker(*st), [(two[0], 0), (two[1], 1), (two[0], 1), (two[1], 0)]))
    with httpx.Client(base_url=two[1].url, timeout=30) as c:
        r = c.get("/v1/identities/x", headers=R)
        present = r.status_code == 200
        if present:
            assert r.json()["n_samples"] == 3  # never half-written
        assert tally["enrolled"] - tally["deleted"] == int(present), (tally, present)
        assert tally["enrolled"] >= 1 and tally["deleted"] >= 1


def test_instance_killed_mid_enrolment_and_database_restarted(two: list[Server], setup: dict[str, Any], postgres_server: Any) -> None:
    a, b = two
    R, A = setup["R"], setup["A"]
    acked: list[tuple[str, int]] = []
    stop = threading.Event()

    def enrol_loop(server: Server, prefix: str) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                n = 1 + i % 4
                try:
                    r = _enrol(c, f"{prefix}{i}", [1000 * i + j for j in range(n)], A)
                except httpx.HTTPError:
                    continue  # killed / connection lost: not acknowledged
                if r.status_code == 201:
                    acked.append((f"{prefix}{i}", n))
                else:
                    assert r.status_code == 503, r.text

    threads = [threading.Thread(target=enrol_loop, args=(s, p)) for s, p in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    _within(30.0, lambda: sum(name.startswith("a") for name, _ in acked) >= 3)
    a.stop(signal.SIGKILL)  # mid-enrolment: its loop keeps posting
    restarted = getattr(postgres_server, "restart", None) is not None
    codes: list[int] = []
    if restarted:
        n_before = len(acked)
        postgres_server.stop("immediate")
        with httpx.Client(base_url=b.url, timeout=30) as c:
            # served from memory until the listener's heartbeat goes stale (2 s), then 503
            _within(10.0, lambda: _identify(c, 1, R).status_code == 503)
            codes.append(_identify(c, 1, R).status_code)
            codes.append(c.get("/healthz").status_code)
        postgres_server.start()
    with httpx.Client(base_url=b.url, timeout=30) as c:
        _within(20.0, lambda: _identify(c, 1, R).status_code == 200)  # back by itself
        _within(20.0, lambda: len(acked) > (n_before if restarted else 0) + 2)
        stop.set()
        for t in threads:
            t.join(60)
        assert codes in ([], [503, 503]), codes
        listed = {r["identity"]: r["n_samples"] for r in c.get("/v1/identities", params={"limit": 1000}, headers=R).json()["identities"]}
    for name, n in acked:  # every acknowledged enrolment, complete
        assert listed.get(name) == n, (name, n, listed.get(name))
    mine = {name: n for name, n in listed.items() if name[:1] in "ab" and name[1:].isdigit()}  # not the earlier tests'
    assert len(mine) >= len(acked)
    for name, n in mine.items():  # nothing half-written (n samples of identity i: 1 + i % 4)
        assert n == 1 + int(name[1:]) % 4, (name, n)
