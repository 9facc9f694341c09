"""Connection-level attacks against a real ``siamkit serve`` on 127.0.0.1, with raw sockets.

Each test reproduces an attack that held connections open before
``siamkit.service.connections`` (slow body, slow headers, idle connections) and asserts
the bound, with short timeouts (``--timeout-headers 1 --timeout-body 1.5``) so that the
tests stay fast; a legitimate request is served meanwhile.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from siamkit.service import KeyStore  # noqa: E402
from siamkit.service.connections import ConnectionLimits, protocol_class  # noqa: E402

from .test_service import build_model, image_bytes  # noqa: E402
from .test_service_e2e import HOST, Server, free_port  # noqa: E402

TIMEOUT_HEADERS, TIMEOUT_BODY, MAX_CONNECTIONS = 1.0, 1.5, 40


def start(root: Path, *options: str) -> tuple[Server, str]:
    """A real ``siamkit serve`` on a free loopback port with ``options``; (server, admin key)."""
    model = build_model(root / "model")
    ks = KeyStore()
    key = ks.add("admin", "admin")
    ks.save(root / "keys.json")
    port = free_port()
    args = [sys.executable, "-m", "siamkit.cli", "serve", "--model", str(model), "--keys", str(root / "keys.json"),
            "--gallery", str(root / "g.db"), "--port", str(port), "--log-level", "warning", "--torch-threads", "1",
            "--rate-per-client", "0", "--rate-per-key", "0", *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    s = Server(args, env, port, root / "serve.log")
    s.wait_ready()
    return s, key


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    s, key = start(tmp_path_factory.mktemp("conn"), "--timeout-headers", str(TIMEOUT_HEADERS), "--timeout-body",
                   str(TIMEOUT_BODY), "--max-connections", str(MAX_CONNECTIONS), "--timeout-keep-alive", "1")
    try:
        yield {"server": s, "key": key, "port": s.port}
    finally:
        s.stop()


def connect(port: int) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=10)
    s.settimeout(10)
    return s


def trickle_until_closed(s: socket.socket, data: bytes, interval: float, limit: float) -> tuple[float, bytes]:
    """Send ``data`` one byte every ``interval`` s until the server closes; (seconds, what it answered)."""
    s.setblocking(False)
    got = b""
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < limit:
        try:
            chunk = s.recv(65536)
            if not chunk:
                return time.monotonic() - t0, got
            got += chunk
            continue
        except BlockingIOError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0, got
        try:
            s.send(data[i % len(data):i % len(data) + 1] or b"x")
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0, got
        i += 1
        time.sleep(interval)
    raise AssertionError(f"still open after {limit} s; got {got[:200]!r}")


def is_closed(s: socket.socket) -> bool:
    """Whether the server closed ``s`` (what it answered before is read and dropped)."""
    s.setblocking(False)
    try:
        while s.recv(65536):
            pass
        return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def wait_until(condition: Any, limit: float) -> bool:
    """Poll ``condition()`` every 0.1 s for up to ``limit`` s (the server may lag on a loaded machine)."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > limit:
            return False
        time.sleep(0.1)
    return True


def legit_verify(port: int, key: str) -> int:
    files = {"image_a": ("a.png", image_bytes(seed=1), "image/png"), "image_b": ("b.png", image_bytes(seed=2), "image/png")}
    r = httpx.post(f"http://{HOST}:{port}/v1/verify", files=files, headers={"X-API-Key": key}, timeout=30)
    return r.status_code


def status_and_body(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_connection_limits_and_protocol_class() -> None:
    cls = protocol_class(ConnectionLimits(timeout_headers=3, timeout_body=4, max_connections=5))
    assert cls.limits == ConnectionLimits(3, 4, 5)
    assert protocol_class(ConnectionLimits()).limits.max_connections == 256  # each call its own class
    from uvicorn.importer import import_from_string
    from uvicorn.protocols.http.h11_impl import H11Protocol

    plain = import_from_string("siamkit.service.connections:GuardedH11Protocol")  # uvicorn --http ...
    assert issubclass(plain, H11Protocol) and plain.limits == ConnectionLimits()


@pytest.mark.parametrize("with_key", [True, False])
def test_slow_body_gets_408_or_is_closed_within_the_body_timeout(served: dict[str, Any], with_key: bool) -> None:
    head = (f"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: 1000000\r\n{'X-API-Key: ' + served['key'] + chr(13) + chr(10) if with_key else ''}\r\n").encode()
    with connect(served["port"]) as s:
        s.sendall(head)
        t, got = trickle_until_closed(s, b"--b\r\n", interval=0.3, limit=TIMEOUT_BODY + 8)
    assert t < TIMEOUT_BODY + 3
    status, body = status_and_body(got)
    if with_key:  # the app waits for the body: 408 with the JSON error shape
        assert status == 408 and body["error"]["code"] == "request_timeout"
    else:  # the app answers 401 at once; the trickle after it is cut off by the same deadline
        assert status == 401
    assert served["server"].alive()


def test_slow_headers_get_408_within_the_header_timeout(served: dict[str, Any]) -> None:
    with connect(served["port"]) as s:
        t, got = trickle_until_closed(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 1000, 0.2, TIMEOUT_HEADERS + 8)
    assert t < TIMEOUT_HEADERS + 3
    status, body = status_and_body(got)
    assert status == 408 and "headers" in body["error"]["message"]


def test_silent_and_kept_alive_connections_are_closed(served: dict[str, Any]) -> None:
    with connect(served["port"]) as silent, connect(served["port"]) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # one request, then nothing
        t0 = time.monotonic()
        assert wait_until(lambda: is_closed(silent) and is_closed(kept), TIMEOUT_HEADERS + 5)
        assert time.monotonic() - t0 > 0.5  # closed by the deadline, not at once


def test_idle_connections_are_closed_at_the_deadline_and_legitimate_requests_still_served(served: dict[str, Any]) -> None:
    port, key = served["port"], served["key"]
    idle = [connect(port) for _ in range(300)]
    slow: list[tuple[float, bytes]] = []
    slow_thread = threading.Thread(target=lambda: slow.append(trickle_until_closed(connect(port), b"GET / HTTP/1.1\r\n", 0.2, 10)))
    slow_thread.start()
    try:
        time.sleep(0.3)
        assert legit_verify(port, key) == 200  # served while 300 idle + one slow-header connection are open
        assert wait_until(lambda: all(is_closed(s) for s in idle), TIMEOUT_HEADERS + 5)  # the rest at the deadline
        assert legit_verify(port, key) == 200
    finally:
        for s in idle:
            s.close()
        slow_thread.join()
    assert slow and slow[0][0] < TIMEOUT_HEADERS + 3


def test_connections_are_capped_by_closing_the_longest_waiting(tmp_path: Path) -> None:
    server, key = start(tmp_path, "--timeout-headers", "60", "--max-connections", str(MAX_CONNECTIONS))
    try:
        busy = connect(server.port)  # a request in flight (its body still coming) is never the one closed
        busy.sendall(b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"X-API-Key: " + key.encode() + b"\r\nContent-Length: 100\r\n\r\n--b")
        time.sleep(0.3)
        idle = [connect(server.port) for _ in range(300)]
        assert wait_until(lambda: sum(not is_closed(s) for s in idle) <= MAX_CONNECTIONS, 10)
        assert legit_verify(server.port, key) == 200  # a new connection still gets served
        assert not is_closed(idle[-1])  # the newest idle ones stay, the oldest went
        assert not is_closed(busy)
        for s in idle + [busy]:
            s.close()
    finally:
        server.stop()


@pytest.mark.parametrize("option,value", [("--timeout-headers", "0"), ("--timeout-body", "nan"), ("--timeout-body", "-1"),
                                          ("--max-connections", "0"), ("--auth-rate", "-1")])
def test_bad_connection_options_exit_2_with_one_line(option: str, value: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from siamkit.cli import app as cli

    r = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path), "--keys", str(tmp_path / "k.json"), option, value])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0]
