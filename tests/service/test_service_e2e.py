"""End to end: a real uvicorn process on 127.0.0.1 (a free port), driven with httpx.

- the whole flow: verify, enrol, add samples, identify, verify against a record, feedback,
  delete, bad input, concurrent clients, metrics;
- a process killed (SIGKILL) while enrolling: the gallery reopens consistent, every
  acknowledged enrolment is there with all its samples, and the service starts again.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from siamkit.service import KeyStore  # noqa: E402

from .test_service import build_model, image_bytes, png_header_only  # noqa: E402

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, args: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log = log
        self._logf = open(log, "wb")
        self.proc = subprocess.Popen(args, env=env, stdout=self._logf, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 90.0) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None and httpx.get(self.url + "/healthz", timeout=5.0).status_code == 200

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._logf.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("e2e")
    model = build_model(root / "model")
    ks = KeyStore()
    read_key, admin_key = ks.add("reader", "read"), ks.add("admin", "admin")
    ks.save(root / "keys.json")
    return {"root": root, "model": model, "keys": root / "keys.json", "read": read_key, "admin": admin_key}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_uvicorn(setup: dict[str, Any], gallery: Path) -> Server:
    env = _env()
    env.update(SIAMKIT_MODEL=str(setup["model"]), SIAMKIT_KEYS=str(setup["keys"]), SIAMKIT_GALLERY=str(gallery))
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "--factory", "siamkit.service.app:create_app_from_env",
            "--host", HOST, "--port", str(port), "--log-level", "warning"]
    s = Server(args, env, port, setup["root"] / f"uvicorn-{port}.log")
    s.wait_ready()
    return s


def start_cli(setup: dict[str, Any], gallery: Path) -> Server:
    port = free_port()
    args = [sys.executable, "-m", "siamkit.cli", "serve", "--model", str(setup["model"]), "--keys", str(setup["keys"]),
            "--gallery", str(gallery), "--port", str(port), "--log-level", "warning", "--torch-threads", "1"]
    s = Server(args, _env(), port, setup["root"] / f"cli-{port}.log")
    s.wait_ready()
    return s


@pytest.fixture
def server(setup: dict[str, Any], tmp_path: Path) -> Iterator[Server]:
    s = start_uvicorn(setup, tmp_path / "gallery.db")
    try:
        yield s
    finally:
        s.stop()


def files_pair(a: bytes, b: bytes) -> dict[str, Any]:
    return {"image_a": ("a.png", a, "image/png"), "image_b": ("b.png", b, "image/png")}


def test_e2e_flow(server: Server, setup: dict[str, Any]) -> None:
    R = {"X-API-Key": setup["read"]}
    A = {"Authorization": f"Bearer {setup['admin']}"}
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        r = c.post("/v1/verify", files=files_pair(image_bytes(1), image_bytes(1)), headers=R)
        assert r.status_code == 200 and r.json()["decision"] == "same", r.text
        assert c.post("/v1/verify", files=files_pair(image_bytes(1), image_bytes(2))).status_code == 401

        alice = [image_bytes(10), image_bytes(11)]
        r = c.post("/v1/identities", data={"identity": "alice"}, files=[("images", (f"{i}.png", d)) for i, d in enumerate(alice)], headers=A)
        assert r.status_code == 201, r.text
        r = c.post("/v1/identities", data={"identity": "bob"}, files=[("images", ("b.png", image_bytes(20)))], headers=A)
        assert r.status_code == 201, r.text
        assert c.post("/v1/identities/bob/samples", files=[("images", ("c.png", image_bytes(21)))], headers=A).json()["n_samples"] == 2
        assert c.post("/v1/identities", data={"identity": "x"}, files=[("images", ("b.png", image_bytes(20)))], headers=R).status_code == 403

        r = c.post("/v1/identify", params={"k": 2}, files={"image": ("p.png", alice[1])}, headers=R)
        assert r.status_code == 200 and r.json()["decision"] == "alice", r.text
        r = c.post("/v1/identities/alice/verify", files={"image": ("p.png", alice[0])}, headers=R)
        assert r.status_code == 200 and r.json()["same"] is True

        fb = {"kind": "identify", "image_a": base64.b64encode(alice[0]).decode(), "predicted_identity": "bob", "true_identity": "alice"}
        assert c.post("/v1/feedback", json=fb, headers=A).status_code == 201

        # bad input over the wire: all 4xx JSON
        for data, status in [(b"", 400), (b"%PDF-1.4\n" * 50, 415), (image_bytes(1)[:50], 400), (png_header_only(20000, 20000), 413)]:
            r = c.post("/v1/verify", files=files_pair(data, image_bytes(1)), headers=R)
            assert r.status_code == status and r.json()["error"]["code"], r.text
        r = c.post("/v1/feedback", content=b"{" + b" " * (5 * 1024 * 1024) + b"}", headers={**A, "content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        assert c.post("/v1/identities/nobody/verify", files={"image": ("p.png", alice[0])}, headers=R).status_code == 404
        assert c.get("/v1/nothing").json()["error"]["code"] == "not_found"

        assert c.delete("/v1/identities/alice", headers=A).json()["removed_samples"] == 2
        assert c.delete("/v1/identities/alice", headers=A).status_code == 404
        r = c.post("/v1/identify", files={"image": ("p.png", alice[0])}, headers=R)
        assert r.json()["candidates"][0]["identity"] == "bob"

    # concurrent clients
    def one(i: int) -> int:
        with httpx.Client(base_url=server.url, timeout=60.0) as c:
            return c.post("/v1/verify", files=files_pair(image_bytes(i), image_bytes(i + 1)), headers=R).status_code

    with ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(one, range(24)))
    assert codes == [200] * 24

    # raw garbage on the socket does not take the server down
    for junk in (b"GARBAGE\r\n\r\n", b"POST /v1/verify HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00"):
        with socket.create_connection((HOST, server.port), timeout=5) as s:
            s.sendall(junk)
            try:
                s.recv(1024)
            except OSError:
                pass
    assert server.alive()
    metrics = httpx.get(server.url + "/metrics").text
    assert 'route="/v1/verify",status="200"' in metrics and "siamkit_decisions_total" in metrics


def test_killed_during_enrolment_reopens_consistent(setup: dict[str, Any], tmp_path: Path) -> None:
    from siamkit.gallery import Gallery

    gallery = tmp_path / "gallery.db"
    server = start_cli(setup, gallery)
    A = {"X-API-Key": setup["admin"]}
    n_images = 16
    batch = [("images", (f"{i}.png", image_bytes(100 + i, size=(64, 64)))) for i in range(n_images)]
    acknowledged: list[str] = []
    stop = threading.Event()

    def enrol_loop(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                name = f"w{worker}-{i}"
                try:
                    r = c.post("/v1/identities", data={"identity": name}, files=batch, headers=A)
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    acknowledged.append(name)

    threads = [threading.Thread(target=enrol_loop, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    while len(acknowledged) < 4 and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    time.sleep(0.13)  # land somewhere inside a later enrolment
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acknowledged) >= 4, server.log.read_text()[-2000:]

    with Gallery.open(gallery, setup["model"], create=False) as g:
        assert g.store.integrity_check() == "ok"
        recs = {r.identity: r for r in g.list()}
        assert set(acknowledged) <= set(recs)  # every acknowledged enrolment is durable
        assert all(r.n_samples == n_images for r in recs.values())  # no half-enrolled identity
        assert g.n_samples == n_images * len(recs)

    server = start_cli(setup, gallery)  # and the service starts again on it
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            h = c.get("/healthz").json()
            assert h["gallery"]["identities"] == len(recs)
            r = c.post("/v1/identify", files={"image": ("p.png", batch[0][1][1])}, headers=A)
            assert r.status_code == 200 and r.json()["candidates"]
    finally:
        server.stop()
