"""Fuzzing the service: thousands of malformed images and requests, never a 5xx.

1. ``decode_image`` on mutated PNG / JPEG / GIF / BMP / WebP files (flipped, cut,
   inserted bytes) and random bytes: only :class:`UploadError` (a 4xx), or a tensor of
   the model's shape.
2. Hypothesis against the OpenAPI spec, in process: every operation of
   ``/openapi.json`` with generated path parameters, query strings, content types and
   bodies (multipart with mutated images, JSON of any shape, raw bytes), with and without
   keys: the answer is never 5xx, and every error is the uniform JSON error.
3. A real uvicorn process on 127.0.0.1: a few hundred malformed requests over the wire,
   then it still answers ``/healthz``.
"""

from __future__ import annotations

import io
import json
import random
from urllib.parse import quote
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
hypothesis = pytest.importorskip("hypothesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from siamkit.service import KeyStore, Limits, ServiceSettings, UploadError, create_app, decode_image  # noqa: E402
from siamkit.network import InputSpec  # noqa: E402

from .test_service import build_model, png_header_only  # noqa: E402

LIMITS = Limits(max_request_bytes=400_000, max_json_bytes=100_000, max_image_bytes=100_000, max_pixels=250_000, max_batch=4, max_k=10)
SPEC = InputSpec.for_sample((1, 28, 28))
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for fmt, mode in [("PNG", "L"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "L"), ("BMP", "RGB"), ("WEBP", "RGB"), ("PNG", "P")]:
        arr = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
        img = Image.fromarray(arr, "RGB").convert(mode)
        buf = io.BytesIO()
        img.save(buf, fmt)
        out.append(buf.getvalue())
    out.append(png_header_only(20000, 20000))
    out.append(png_header_only(600, 600))  # within the byte limit, over the pixel limit
    return out


SEEDS = _seed_images()


@st.composite
def mutated_image(draw: Any) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "zero", "dup"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif op == "zero":
            data[i : i + draw(st.integers(1, 64))] = b"\x00" * 8
        else:
            data[i:i] = data[i : i + 512]
    return bytes(data)


any_image = st.one_of(mutated_image(), st.binary(max_size=300), st.sampled_from([b"", b"%PDF-1.4\n", b"GIF89a", b"BM", b"\x89PNG\r\n\x1a\n"]))


@settings(FUZZ, max_examples=2000)
@given(any_image)
def test_decode_image_never_raises_anything_but_upload_errors(data: bytes) -> None:
    try:
        t = decode_image(data, SPEC, LIMITS)
    except UploadError as e:
        assert 400 <= e.status < 500 and e.code and e.message
    else:
        assert t.dtype == torch.uint8 and tuple(t.shape) == (1, 28, 28)


# --------------------------------------------------------------------------- OpenAPI-driven, in process


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, str]]:
    root = tmp_path_factory.mktemp("fuzz")
    ks = KeyStore()
    read_key, admin_key = ks.add("r", "read"), ks.add("a", "admin")
    app = create_app(ServiceSettings(model=build_model(root / "model"), keys=ks, gallery=root / "g.db", limits=LIMITS, max_inference=2))
    with TestClient(app, raise_server_exceptions=False) as c:
        # something to find, delete, verify against
        files = [("images", ("a.png", SEEDS[0])), ("images", ("b.png", SEEDS[2]))]
        assert c.post("/v1/identities", data={"identity": "alice"}, files=files, headers={"X-API-Key": admin_key}).status_code == 201
        yield c, read_key, admin_key


def _operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    spec = client.get("/openapi.json").json()
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
identity_text = st.one_of(st.sampled_from(["alice", "bob", "unknown", " x", "a" * 300, "%2F", "..", "../../etc/passwd"]), st.text(max_size=20))


@st.composite
def feedback_json(draw: Any) -> Any:
    import base64

    body: dict[str, Any] = {
        "kind": draw(st.sampled_from(["verify", "identify", "identity_verify", "other"])),
        "image_a": base64.b64encode(draw(any_image)).decode() if draw(st.booleans()) else draw(st.text(max_size=20)),
    }
    for key, strat in [("image_b", any_image), ("identity", identity_text), ("true_same", st.booleans()),
                       ("true_identity", identity_text), ("predicted_distance", st.floats()), ("note", st.text(max_size=50))]:
        if draw(st.booleans()):
            v = draw(strat)
            body[key] = base64.b64encode(v).decode() if isinstance(v, bytes) else v
    return body


@st.composite
def request_for(draw: Any, ops: list[tuple[str, str, dict[str, Any]]], keys: tuple[str, str]) -> dict[str, Any]:
    path, method, op = draw(st.sampled_from(ops))
    url = path.replace("{identity}", quote(draw(identity_text), safe="") or "x")
    params: dict[str, Any] = {}
    for p in op.get("parameters", []):
        if p["in"] == "query" and draw(st.booleans()):
            params[p["name"]] = draw(st.one_of(st.integers(-5, 2000), st.text(max_size=8)))
    headers = draw(st.sampled_from([{}, {"X-API-Key": keys[0]}, {"X-API-Key": keys[1]}, {"Authorization": f"Bearer {keys[1]}"}, {"X-API-Key": "sk_0000_x"}]))
    kind = draw(st.sampled_from(["multipart", "json", "raw", "none"]))
    req: dict[str, Any] = {"method": method.upper(), "url": url, "params": params, "headers": dict(headers)}
    if kind == "multipart":
        names = draw(st.lists(st.sampled_from(["image_a", "image_b", "image", "images", "identity", "metadata", "junk"]), min_size=0, max_size=6))
        files = [(n, (draw(st.sampled_from(["a.png", "../../x.png", "/etc/passwd", "", "a\x00b"])) or "f", draw(any_image))) for n in names if n.startswith("image")]
        data = {n: draw(st.one_of(identity_text, st.just('{"a": 1}'), st.just("[" * 500))) for n in names if not n.startswith("image")}
        req["files"] = files or [("junk", ("j", b"1"))]
        req["data"] = data
    elif kind == "json":
        req["json"] = draw(st.one_of(feedback_json(), json_values))
    elif kind == "raw":
        req["content"] = draw(st.binary(max_size=200))
        req["headers"]["content-type"] = draw(st.sampled_from(["application/json", "multipart/form-data", "multipart/form-data; boundary=x", "text/plain", "image/png", "application/x-www-form-urlencoded"]))
    return req


def _check(r: Any) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
        assert "Traceback" not in r.text


def test_openapi_driven_fuzz_in_process(fuzz_client: tuple[TestClient, str, str]) -> None:
    client, read_key, admin_key = fuzz_client
    ops = [o for o in _operations(client) if o[0] not in ("/openapi.json",)]
    seen: set[int] = set()

    @settings(FUZZ, max_examples=500)
    @given(request_for(ops, (read_key, admin_key)))
    def run(req: dict[str, Any]) -> None:
        r = client.request(**req)
        seen.add(r.status_code)
        _check(r)

    run()
    assert client.get("/healthz").status_code == 200
    assert {200, 401, 415, 422} <= seen or len(seen) >= 4, seen
    g = client.app.state.siamkit.gallery  # type: ignore[attr-defined]
    assert g.store.integrity_check() == "ok"


# --------------------------------------------------------------------------- over the wire


def test_fuzz_real_server(tmp_path: Path) -> None:
    httpx = pytest.importorskip("httpx")
    from .test_service_e2e import free_port, start_uvicorn  # noqa: F401

    ks = KeyStore()
    read_key, admin_key = ks.add("r", "read"), ks.add("a", "admin")
    ks.save(tmp_path / "keys.json")
    setup = {"root": tmp_path, "model": build_model(tmp_path / "model"), "keys": tmp_path / "keys.json"}
    server = start_uvicorn(setup, tmp_path / "g.db")
    rng = random.Random(0)
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            keys = [{}, {"X-API-Key": read_key}, {"X-API-Key": admin_key}]
            for i in range(300):
                data = bytearray(rng.choice(SEEDS))
                for _ in range(rng.randint(0, 4)):
                    j = rng.randrange(len(data))
                    if rng.random() < 0.5:
                        data[j] ^= 0xFF
                    else:
                        del data[j:]
                        if not data:
                            break
                h = rng.choice(keys)
                choice = i % 6
                if choice == 0:
                    r = c.post("/v1/verify", files={"image_a": ("a.png", bytes(data)), "image_b": ("b.png", SEEDS[0])}, headers=h)
                elif choice == 1:
                    r = c.post("/v1/identify", params={"k": rng.randint(-1, 20)}, files={"image": ("p.png", bytes(data))}, headers=h)
                elif choice == 2:
                    r = c.post("/v1/identities", data={"identity": f"id{i}"}, files=[("images", ("x.png", bytes(data)))], headers=h)
                elif choice == 3:
                    r = c.post("/v1/feedback", content=json.dumps({"kind": "identify", "image_a": bytes(data[:50]).hex()}).encode(), headers={**h, "content-type": "application/json"})
                elif choice == 4:
                    r = c.request(rng.choice(["GET", "PUT", "PATCH", "DELETE", "POST"]), rng.choice(["/v1/identities/id1", "/v1/x", "/", "/v1/verify"]), content=bytes(data[:100]), headers=h)
                else:
                    r = c.post("/v1/verify", content=bytes(data), headers={**h, "content-type": rng.choice(["multipart/form-data; boundary=xx", "image/png", "application/json"])})
                _check(r)
        assert server.alive()
    finally:
        server.stop()
