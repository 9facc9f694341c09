"""The HTTP service in process (FastAPI TestClient): every endpoint and error path,
security (keys, roles), limits, strict validation, uniform JSON errors, gallery
consistency under concurrent enrol + delete, the feedback store, metrics, CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import struct
import threading
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import siamkit  # noqa: E402
from siamkit.calibration import Calibrator  # noqa: E402
from siamkit.service import (  # noqa: E402
    FeedbackError,
    FeedbackStore,
    KeyFileError,
    KeyStore,
    Limits,
    ServiceSettings,
    UploadError,
    create_app,
    decode_image,
)
from siamkit.cli import app as service_cli  # noqa: E402
from siamkit.network import InputSpec  # noqa: E402
from siamkit.service.images import sniff_image_format  # noqa: E402
from siamkit.verify import Verifier  # noqa: E402
from tests.square_classes import square_classes  # noqa: E402

SPEC = {"shape": [1, 28, 28], "channels": 1, "height": 28, "width": 28}


# --------------------------------------------------------------------------- helpers (shared by the e2e / fuzz tests)


def build_model(model_dir: Path, *, calibrated: bool = True, seed: int = 0) -> Path:
    """A tiny conv4 model folder (28x28 grey) with a calibration fitted on synthetic distances."""
    torch.manual_seed(seed)
    net = siamkit.SiameseNetwork(siamkit.create_encoder("conv4", in_channels=1, embedding_dim=16, width=8), input_spec=dict(SPEC))
    siamkit.save_model(net, model_dir)
    if calibrated:
        rng = np.random.default_rng(seed)
        d = np.r_[rng.uniform(0.0, 0.05, 60), rng.uniform(0.03, 0.5, 60)]
        same = np.r_[np.ones(60, bool), np.zeros(60, bool)]
        Calibrator().fit(d, same, split_name="synthetic", model_fingerprint=net.fingerprint).save(model_dir)
    return model_dir


def image_bytes(seed: int, *, size: tuple[int, int] = (28, 28), mode: str = "L", fmt: str = "PNG") -> bytes:
    """A random image file in memory. Seeds give distinct images."""
    rng = np.random.default_rng(seed)
    base = mode if mode in ("L", "RGB", "RGBA", "LA") else "RGB"
    arr = rng.integers(0, 256, size[::-1] + {"L": (), "RGB": (3,), "RGBA": (4,), "LA": (2,)}[base], dtype=np.uint8)
    img = Image.fromarray(arr, base)
    if mode != base:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression-bomb header) with a tiny IDAT."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("svc") / "model")


@pytest.fixture(scope="module")
def keys() -> tuple[KeyStore, str, str]:
    ks = KeyStore()
    read_key = ks.add("reader", "read")
    admin_key = ks.add("boss", "admin")
    return ks, read_key, admin_key


SMALL = Limits(max_request_bytes=1_000_000, max_json_bytes=200_000, max_image_bytes=150_000, max_pixels=1_000_000, max_batch=4, max_k=10)


@pytest.fixture
def client(model_dir: Path, keys: tuple[KeyStore, str, str], tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ServiceSettings(model=model_dir, keys=keys[0], gallery=tmp_path / "g.db", limits=SMALL, max_inference=2))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def R(keys: tuple[KeyStore, str, str]) -> dict[str, str]:
    return {"X-API-Key": keys[1]}


@pytest.fixture
def A(keys: tuple[KeyStore, str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[2]}"}


def pair(a: bytes, b: bytes) -> dict[str, Any]:
    return {"image_a": ("a.png", a, "image/png"), "image_b": ("b.png", b, "image/png")}


def many(images: list[bytes]) -> list[tuple[str, Any]]:
    return [("images", (f"{i}.png", d, "image/png")) for i, d in enumerate(images)]


def assert_error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in r.text
    if code is not None:
        assert err["code"] == code, err
    return err


# --------------------------------------------------------------------------- verify


def test_verify_matches_the_library(client: TestClient, R: dict[str, str], model_dir: Path, tmp_path: Path) -> None:
    a, b = image_bytes(1, size=(40, 30)), image_bytes(2, mode="RGB")
    r = client.post("/v1/verify", files=pair(a, b), headers=R)
    assert r.status_code == 200, r.text
    body = r.json()
    (tmp_path / "a.png").write_bytes(a)
    (tmp_path / "b.png").write_bytes(b)
    ref = Verifier.from_dir(model_dir).verify_files(tmp_path / "a.png", tmp_path / "b.png")
    assert body["distance"] == pytest.approx(ref.distance, abs=1e-6)
    assert body["score"] == pytest.approx(ref.score, abs=1e-6)
    assert body["same"] == ref.same and body["decision"] == ("same" if ref.same else "different")
    assert body["confidence"] == pytest.approx(ref.confidence) and body["threshold"] == pytest.approx(ref.threshold)
    assert body["model"].startswith("sha256:")
    assert r.headers["x-request-id"] and r.headers["x-content-type-options"] == "nosniff"
    same = client.post("/v1/verify", files=pair(a, a), headers=R).json()
    assert same["distance"] == pytest.approx(0.0, abs=1e-5) and same["decision"] == "same"


@pytest.mark.parametrize(
    "fmt,mode", [("PNG", "L"), ("PNG", "RGBA"), ("PNG", "LA"), ("PNG", "P"), ("PNG", "I;16"), ("JPEG", "RGB"), ("JPEG", "CMYK"), ("GIF", "L"), ("BMP", "RGB"), ("WEBP", "RGB")]
)
def test_verify_accepts_formats_and_channel_counts(client: TestClient, R: dict[str, str], fmt: str, mode: str) -> None:
    if mode == "I;16":
        buf = io.BytesIO()
        Image.fromarray((np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 50)).save(buf, "PNG")
        data = buf.getvalue()
    else:
        data = image_bytes(3, mode=mode, fmt=fmt)
    r = client.post("/v1/verify", files=pair(data, image_bytes(4)), headers=R)
    assert r.status_code == 200, r.text


def test_uncalibrated_model_has_no_decision(keys: tuple[KeyStore, str, str], tmp_path: Path, R: dict[str, str]) -> None:
    app = create_app(ServiceSettings(model=build_model(tmp_path / "m", calibrated=False), keys=keys[0]))
    with TestClient(app, raise_server_exceptions=False) as c:
        body = c.post("/v1/verify", files=pair(image_bytes(1), image_bytes(2)), headers=R).json()
        assert body["same"] is None and body["decision"] is None and body["confidence"] is None
        # no gallery configured: gallery and feedback endpoints answer 503
        assert_error(c.post("/v1/identify", files={"image": ("p.png", image_bytes(1))}, headers=R), 503, "no_gallery")
        assert_error(c.delete("/v1/identities/x", headers={"X-API-Key": keys[2]}), 503, "no_gallery")
        fb = {"kind": "identify", "image_a": base64.b64encode(image_bytes(1)).decode(), "true_identity": "x"}
        assert_error(c.post("/v1/feedback", json=fb, headers={"X-API-Key": keys[2]}), 503, "no_feedback_store")
        assert c.get("/healthz").json()["calibrated"] is False


# --------------------------------------------------------------------------- security


def test_auth_missing_invalid_and_roles(client: TestClient, keys: tuple[KeyStore, str, str], R: dict[str, str]) -> None:
    files = pair(image_bytes(1), image_bytes(2))
    r = client.post("/v1/verify", files=files)
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    read_key = keys[1]
    bad = read_key[:-4] + ("AAAA" if not read_key.endswith("AAAA") else "BBBB")
    for h in ({"X-API-Key": bad}, {"X-API-Key": "sk_00000000_" + "x" * 43}, {"X-API-Key": "nonsense"},
              {"Authorization": "Basic " + base64.b64encode(read_key.encode()).decode()}, {"X-API-Key": "x" * 5000}):
        assert_error(client.post("/v1/verify", files=files, headers=h), 401, "unauthorized")
    assert client.post("/v1/verify", files=files, headers={"Authorization": f"Bearer {read_key}"}).status_code == 200
    # read keys cannot mutate
    assert_error(client.post("/v1/identities", data={"identity": "a"}, files=many([image_bytes(1)]), headers=R), 403, "forbidden")
    assert_error(client.delete("/v1/identities/a", headers=R), 403, "forbidden")
    assert_error(client.post("/v1/identities/a/samples", files=many([image_bytes(1)]), headers=R), 403, "forbidden")
    fb = {"kind": "identify", "image_a": base64.b64encode(image_bytes(1)).decode(), "true_identity": "x"}
    assert_error(client.post("/v1/feedback", json=fb, headers=R), 403, "forbidden")
    assert_error(client.get("/v1/feedback", headers=R), 403, "forbidden")


def test_keys_file_stores_only_hashes(tmp_path: Path) -> None:
    ks = KeyStore()
    key = ks.add("svc-a", "admin")
    path = ks.save(tmp_path / "keys.json")
    text = path.read_text()
    secret = key.split("_", 2)[2]
    assert secret not in text and key not in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    rec = json.loads(text)["keys"][0]
    assert rec["kdf"]["name"] == "scrypt" and len(bytes.fromhex(rec["salt"])) == 16
    loaded = KeyStore.load(path)
    p = loaded.authenticate(key)
    assert p is not None and p.role == "admin" and p.name == "svc-a" and p.has("read")
    assert loaded.authenticate(key) == p  # cached path
    assert loaded.authenticate(key + "x") is None and loaded.authenticate(None) is None
    # per-key salt: the same secret under two records hashes differently
    ks.add("svc-b", "read")
    recs = ks.records
    assert recs[0].salt != recs[1].salt
    with pytest.raises(KeyFileError, match="already exists"):
        ks.add("svc-a", "read")
    with pytest.raises(KeyFileError, match="role"):
        ks.add("svc-c", "root")
    with pytest.raises(KeyFileError, match="name"):
        ks.add("bad\nname", "read")
    assert ks.revoke("svc-a") and ks.authenticate(key) is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(KeyFileError):
        KeyStore.load(tmp_path / "bad.json")
    with pytest.raises(KeyFileError):
        KeyStore.load(tmp_path / "missing.json")


def test_start_up_refuses_bad_setups(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(siamkit.errors.SiamkitError, match="no key"):
        create_app(ServiceSettings(model=model_dir, keys=KeyStore()))
    with pytest.raises(KeyFileError):
        create_app(ServiceSettings(model=model_dir, keys=tmp_path / "nope.json"))
    vec = siamkit.SiameseNetwork(siamkit.create_encoder("mlp", in_features=8, embedding_dim=4), input_spec={"shape": [8]})
    siamkit.save_model(vec, tmp_path / "vec")
    ks = KeyStore()
    ks.add("a", "read")
    with pytest.raises(siamkit.errors.SiamkitError, match="not trained on images"):
        create_app(ServiceSettings(model=tmp_path / "vec", keys=ks))


# --------------------------------------------------------------------------- bad images and bodies


def test_bad_images_are_4xx(client: TestClient, R: dict[str, str]) -> None:
    good = image_bytes(1)
    cases = [
        (b"", 400, "empty_image"),
        (good[: len(good) // 2], 400, "invalid_image"),  # truncated PNG
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n" * 20, 415, "unsupported_image_type"),  # a PDF named .png
        (b'{"a": 1}', 415, "unsupported_image_type"),
        (png_header_only(20000, 20000), 413, "image_too_many_pixels"),  # refused from the header
        (png_header_only(0, 5), 400, "invalid_image"),
        (b"\x89PNG\r\n\x1a\n" + os.urandom(200), 400, "invalid_image"),
        (b"\xff\xd8\xff" + os.urandom(300), 400, "invalid_image"),
        (os.urandom(SMALL.max_image_bytes + 10), 413, "image_too_large"),
    ]
    for data, status, code in cases:
        assert_error(client.post("/v1/verify", files=pair(data, good), headers=R), status, code)
    # a corrupted IDAT with valid structure
    bad = bytearray(good)
    bad[60:80] = b"\x00" * 20
    r = client.post("/v1/verify", files=pair(bytes(bad), good), headers=R)
    assert r.status_code in (200, 400)


def test_decode_image_unit() -> None:
    spec = InputSpec.for_sample((1, 28, 28))
    t = decode_image(image_bytes(1, size=(50, 10), mode="RGB"), spec, Limits())
    assert t.dtype == torch.uint8 and tuple(t.shape) == (1, 28, 28)
    t3 = decode_image(image_bytes(1), InputSpec.for_sample((3, 12, 14)), Limits())
    assert tuple(t3.shape) == (3, 12, 14)
    with pytest.raises(UploadError) as e:
        decode_image(png_header_only(20000, 20000), spec, Limits())
    assert e.value.status == 413
    assert sniff_image_format(b"GIF89a....") == "gif" and sniff_image_format(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"
    assert sniff_image_format(b"%PDF") is None
    with pytest.raises(ValueError):
        Limits(max_pixels=10**12)
    with pytest.raises(ValueError):
        InputSpec.from_dict({"shape": [8]}).require_image()


def test_wrong_content_types_and_bodies(client: TestClient, R: dict[str, str], A: dict[str, str]) -> None:
    assert_error(client.post("/v1/verify", headers=R), 415, "unsupported_media_type")  # empty body
    assert_error(client.post("/v1/verify", json={"image_a": "x"}, headers=R), 415)
    assert_error(client.post("/v1/verify", content=b"garbage", headers={**R, "content-type": "image/png"}), 415)
    r = client.post("/v1/verify", content=b"--x\r\ngarbage", headers={**R, "content-type": "multipart/form-data"})
    assert 400 <= r.status_code < 500
    assert_error(client.post("/v1/verify", content=b"--zz\r\nnot really\r\n--zz--\r\n", headers={**R, "content-type": "multipart/form-data; boundary=zz"}), 400)
    # files sent as plain form fields
    assert_error(client.post("/v1/verify", data={"image_a": "abc", "image_b": "def"}, files={"x": ("x", b"1")}, headers=R), 422)
    assert_error(client.post("/v1/feedback", files={"image_a": ("a.png", image_bytes(1))}, headers=A), 415)
    assert_error(client.post("/v1/feedback", content=b"{not json", headers={**A, "content-type": "application/json"}), 422)
    assert_error(client.post("/v1/feedback", content=b"[" * 100_000 + b"]" * 100_000, headers={**A, "content-type": "application/json"}), 400)


def test_size_limits(client: TestClient, R: dict[str, str], A: dict[str, str]) -> None:
    # Content-Length over the limit: refused before the body is read
    r = client.post("/v1/verify", content=b"x" * (SMALL.max_request_bytes + 1), headers={**R, "content-type": "multipart/form-data; boundary=b"})
    assert_error(r, 413, "request_too_large")

    # a chunked body (no Content-Length) is capped while it streams
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"y" * 50_000

    r = client.post("/v1/verify", content=chunks(), headers={**R, "content-type": "multipart/form-data; boundary=b"})
    assert_error(r, 413, "request_too_large")
    # huge JSON: the JSON cap is smaller than the request cap
    big = {"kind": "identify", "image_a": "A" * (SMALL.max_json_bytes + 10), "true_identity": "x"}
    assert_error(client.post("/v1/feedback", json=big, headers=A), 413, "request_too_large")
    # batch cap
    r = client.post("/v1/identities", data={"identity": "bob"}, files=many([image_bytes(i) for i in range(SMALL.max_batch + 1)]), headers=A)
    assert_error(r, 413, "batch_too_large")
    assert_error(client.post("/v1/identify?k=11", files={"image": ("p.png", image_bytes(1))}, headers=R), 422, "invalid_request")
    assert_error(client.post("/v1/identify?k=0", files={"image": ("p.png", image_bytes(1))}, headers=R), 422)
    assert_error(client.post("/v1/identify?k=abc", files={"image": ("p.png", image_bytes(1))}, headers=R), 422)


def test_uniform_json_errors(client: TestClient, R: dict[str, str]) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/v1/verify", headers=R), 405, "method_not_allowed")
    err = assert_error(client.post("/v1/verify", files={"image_a": ("a.png", image_bytes(1))}, headers=R), 422, "invalid_request")
    assert err["details"][0]["loc"] == ["body", "image_b"] and "input" not in err["details"][0]
    assert err["request_id"]


def test_internal_errors_are_json_500(client: TestClient, R: dict[str, str]) -> None:
    state = client.app.state.siamkit  # type: ignore[attr-defined]

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("secret internal detail /etc/passwd")

    orig = state.verifier.verify
    state.verifier.verify = boom
    try:
        r = client.post("/v1/verify", files=pair(image_bytes(1), image_bytes(2)), headers=R)
    finally:
        state.verifier.verify = orig
    err = assert_error(r, 500, "internal_error")
    assert "secret" not in r.text and "passwd" not in r.text
    assert err["request_id"] == r.headers["x-request-id"]
    assert client.get("/healthz").status_code == 200


# --------------------------------------------------------------------------- gallery


def test_gallery_endpoints(client: TestClient, R: dict[str, str], A: dict[str, str]) -> None:
    alice = [image_bytes(10), image_bytes(11, mode="RGB")]
    r = client.post("/v1/identities", data={"identity": "alice", "metadata": '{"team": "R&D"}'}, files=many(alice), headers=A)
    assert r.status_code == 201, r.text
    assert r.json()["n_samples"] == 2 and r.json()["metadata"] == {"team": "R&D"}
    assert_error(client.post("/v1/identities", data={"identity": "alice"}, files=many(alice), headers=A), 409, "identity_exists")
    r = client.post("/v1/identities/alice/samples", files=many([image_bytes(12)]), headers=A)
    assert r.status_code == 200 and r.json()["n_samples"] == 3
    assert_error(client.post("/v1/identities/zed/samples", files=many([image_bytes(12)]), headers=A), 404, "unknown_identity")
    assert client.post("/v1/identities", data={"identity": "bob"}, files=many([image_bytes(20)]), headers=A).status_code == 201

    r = client.post("/v1/identify?k=2", files={"image": ("p.png", alice[0])}, headers=R)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] == "alice" and body["unknown"] is False and body["candidates"][0]["identity"] == "alice"
    assert len(body["candidates"]) == 2
    r = client.post("/v1/identities/alice/verify", files={"image": ("p.png", alice[0])}, headers=R)
    assert r.status_code == 200 and r.json()["same"] is True and r.json()["n_samples"] == 3
    assert_error(client.post("/v1/identities/zed/verify", files={"image": ("p.png", alice[0])}, headers=R), 404, "unknown_identity")

    lst = client.get("/v1/identities", headers=R).json()
    assert lst["total"] == 2 and [i["identity"] for i in lst["identities"]] == ["alice", "bob"]
    assert client.get("/v1/identities?limit=1&offset=1", headers=R).json()["identities"][0]["identity"] == "bob"
    got = client.get("/v1/identities/alice", headers=R).json()
    assert len(got["samples"]) == 3
    assert_error(client.get("/v1/identities/zed", headers=R), 404)

    r = client.delete("/v1/identities/alice", headers=A)
    assert r.status_code == 200 and r.json() == {"identity": "alice", "removed_samples": 3}
    assert_error(client.delete("/v1/identities/alice", headers=A), 404, "unknown_identity")
    assert client.get("/v1/identities", headers=R).json()["total"] == 1

    # bad names and metadata
    for name in ("unknown", " padded", "tab\tname", "x" * 300):
        r = client.post("/v1/identities", data={"identity": name}, files=many([image_bytes(1)]), headers=A)
        assert r.status_code == 422, (name, r.text)
    for meta in ("[1, 2]", "{bad", '"text"', "{" * 5000):
        r = client.post("/v1/identities", data={"identity": "carol", "metadata": meta}, files=many([image_bytes(1)]), headers=A)
        assert 400 <= r.status_code < 500, (meta[:10], r.text)
    bad = many([image_bytes(1), b"%PDF-1.4 not an image"])
    assert_error(client.post("/v1/identities", data={"identity": "carol"}, files=bad, headers=A), 415)
    assert "carol" not in [i["identity"] for i in client.get("/v1/identities", headers=R).json()["identities"]]
    assert_error(client.post("/v1/identities", data={"identity": "carol"}, headers=A), 415)  # urlencoded
    assert_error(client.post("/v1/identities", data={"identity": "carol"}, files={"other": ("o.txt", b"1")}, headers=A), 422)

    # the audit log records who did what
    store = client.app.state.siamkit.feedback  # type: ignore[attr-defined]
    actions = [(e["actor"], e["action"], e["target"]) for e in store.audit_log()]
    assert ("boss", "enroll", "alice") in actions and ("boss", "delete", "alice") in actions
    assert ("boss", "add_samples", "alice") in actions


def test_concurrent_enroll_and_delete_stay_consistent(client: TestClient, A: dict[str, str], R: dict[str, str]) -> None:
    imgs = many([image_bytes(30), image_bytes(31)])
    results: list[int] = []
    errors: list[BaseException] = []

    def enrol() -> None:
        try:
            for _ in range(8):
                results.append(client.post("/v1/identities", data={"identity": "eve"}, files=imgs, headers=A).status_code)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    def delete() -> None:
        try:
            for _ in range(8):
                results.append(client.delete("/v1/identities/eve", headers=A).status_code)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=f) for f in (enrol, delete, enrol, delete)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert set(results) <= {200, 201, 404, 409}, results
    g = client.app.state.siamkit.gallery  # type: ignore[attr-defined]
    assert g.store.integrity_check() == "ok"
    recs = {r.identity: r for r in g.list()}
    if "eve" in recs:
        assert recs["eve"].n_samples == 2
    n_id, n_samples = g.store.count()
    assert n_samples == 2 * n_id
    # the served view agrees with the file
    r = client.get("/v1/identities", headers=R).json()
    assert r["total"] == n_id


# --------------------------------------------------------------------------- feedback


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_feedback_endpoint(client: TestClient, A: dict[str, str]) -> None:
    a, b = image_bytes(1), image_bytes(2)
    ok = [
        {"kind": "verify", "image_a": b64(a), "image_b": b64(b), "predicted_same": True, "predicted_distance": 0.1, "true_same": False, "reporter": "desk 3", "note": "twins"},
        {"kind": "identity_verify", "image_a": b64(a), "identity": "alice", "predicted_same": False, "true_same": True},
        {"kind": "identify", "image_a": b64(a), "predicted_identity": "bob", "true_identity": "unknown"},
    ]
    ids = []
    for body in ok:
        r = client.post("/v1/feedback", json=body, headers=A)
        assert r.status_code == 201, r.text
        assert r.json()["actor"] == "boss" and r.json()["status"] == "new"
        ids.append(r.json()["id"])
    bad = [
        ({"kind": "verify", "image_a": b64(a), "true_same": True}, 422),  # no image_b
        ({"kind": "identify", "image_a": b64(a)}, 422),  # no truth
        ({"kind": "identify", "image_a": b64(a), "true_identity": "x", "extra": 1}, 422),
        ({"kind": "nope", "image_a": b64(a), "true_identity": "x"}, 422),
        ({"kind": "identify", "image_a": "!!!not base64!!!", "true_identity": "x"}, 400),
        ({"kind": "identify", "image_a": b64(b"%PDF-1.5 nope"), "true_identity": "x"}, 415),
        ({"kind": "identify", "image_a": b64(a[:40]), "true_identity": "x"}, 400),
        ({"kind": "identity_verify", "image_a": b64(a), "identity": "unknown", "true_same": True}, 422),
        ({"kind": "verify", "image_a": b64(a), "image_b": b64(b), "true_same": True, "predicted_distance": "NaN"}, 422),
        ([1, 2, 3], 422),
        ("text", 422),
    ]
    for body, status in bad:
        r = client.post("/v1/feedback", json=body, headers=A)
        assert_error(r, status)
    listed = client.get("/v1/feedback", headers=A).json()
    assert listed["total"] == 3
    first = listed["feedback"][0]
    assert first["truth"] == {"same": False} and first["predicted"] == {"same": True, "distance": 0.1}
    assert first["reporter"] == "desk 3" and first["has_image_b"] is True
    assert client.get("/v1/feedback?status=used", headers=A).json()["total"] == 0
    store: FeedbackStore = client.app.state.siamkit.feedback  # type: ignore[attr-defined]
    rec = store.get(ids[0])
    assert rec.image_a == a and rec.image_b == b and rec.image_a_format == "png"
    assert [e["action"] for e in store.audit_log(3)] == ["feedback"] * 3


def test_feedback_store_unit(tmp_path: Path) -> None:
    img = (image_bytes(1), "png")
    with FeedbackStore.open(tmp_path / "fb.sqlite") as s:
        fid = s.add(actor="me", kind="identify", image_a=img, truth={"identity": "x"})
        with pytest.raises(FeedbackError):
            s.add(actor="me", kind="verify", image_a=img, truth={"same": True})
        with pytest.raises(FeedbackError):
            s.add(actor="me", kind="identify", image_a=img, truth={"identity": "x"}, predicted={"d": float("nan")})
        assert s.set_status([fid], "used", actor="finetune") == 1
        assert s.count("used") == 1 and s.count("new") == 0
    # it can live in the gallery file: no table clashes
    from siamkit.gallery import Gallery

    net = siamkit.SiameseNetwork(siamkit.create_encoder("conv4", in_channels=1, embedding_dim=8, width=4), input_spec=dict(SPEC))
    with Gallery.open(tmp_path / "g.db", net) as g:
        g.enroll("a", torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    with FeedbackStore.open(tmp_path / "g.db") as s:
        s.add(actor="me", kind="identify", image_a=img, truth={"identity": "a"})
    with Gallery.open(tmp_path / "g.db", net) as g:
        assert len(g) == 1 and g.store.integrity_check() == "ok"
    (tmp_path / "junk").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(FeedbackError):
        FeedbackStore.open(tmp_path / "junk")


# --------------------------------------------------------------------------- health, metrics, OpenAPI


def test_health_metrics_openapi(client: TestClient, R: dict[str, str]) -> None:
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["gallery"] == {"identities": 0, "samples": 0}
    client.post("/v1/verify", files=pair(image_bytes(1), image_bytes(1)), headers=R)
    client.post("/v1/verify", files=pair(b"", image_bytes(1)), headers=R)
    m = client.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert 'siamkit_http_requests_total{method="POST",route="/v1/verify",status="200"} 1.0' in text
    assert 'route="/v1/verify",status="400"' in text
    assert 'siamkit_decisions_total{decision="same",endpoint="verify"} 1.0' in text
    assert "siamkit_http_request_duration_seconds_bucket" in text
    assert 'siamkit_http_errors_total{code="empty_image"}' in text
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p, method in [
        ("/v1/verify", "post"), ("/v1/identities/{identity}/verify", "post"), ("/v1/identify", "post"),
        ("/v1/identities", "post"), ("/v1/identities/{identity}/samples", "post"), ("/v1/identities/{identity}", "delete"),
        ("/v1/feedback", "post"), ("/healthz", "get"), ("/metrics", "get"),
    ]:
        assert method in paths[p], (p, method)
    assert paths["/v1/verify"]["post"]["security"]
    assert set(spec["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    assert "ErrorResponse" in spec["components"]["schemas"]
    assert "413" in paths["/v1/verify"]["post"]["responses"]


def test_private_metrics(model_dir: Path, keys: tuple[KeyStore, str, str]) -> None:
    app = create_app(ServiceSettings(model=model_dir, keys=keys[0], public_metrics=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert_error(c.get("/metrics"), 401)
        assert c.get("/metrics", headers={"X-API-Key": keys[1]}).status_code == 200


# --------------------------------------------------------------------------- CLI


def test_cli_keys_and_feedback(tmp_path: Path, model_dir: Path) -> None:
    runner = CliRunner()
    keys_file = tmp_path / "keys.json"
    r = runner.invoke(service_cli, ["keys", "add", "--name", "ops", "--role", "admin", "--keys", str(keys_file)])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    assert key.startswith("sk_") and key not in keys_file.read_text()
    assert KeyStore.load(keys_file).authenticate(key).role == "admin"  # type: ignore[union-attr]
    r = runner.invoke(service_cli, ["keys", "add", "--name", "ops", "--role", "read", "--keys", str(keys_file)])
    assert r.exit_code == 2 and "already exists" in r.output
    r = runner.invoke(service_cli, ["keys", "list", "--keys", str(keys_file)])
    assert "ops" in r.stdout and key not in r.stdout

    (tmp_path / "a.png").write_bytes(image_bytes(1))
    (tmp_path / "b.png").write_bytes(image_bytes(2))
    (tmp_path / "x.png").write_bytes(b"%PDF-1.4")
    fb = tmp_path / "fb.sqlite"
    r = runner.invoke(service_cli, [
        "feedback", "add", "--feedback", str(fb), "--kind", "verify", "--image-a", str(tmp_path / "a.png"),
        "--image-b", str(tmp_path / "b.png"), "--different", "--predicted", '{"same": true}', "--reporter", "ana",
        "--model", str(model_dir),
    ])
    assert r.exit_code == 0, r.output
    r = runner.invoke(service_cli, ["feedback", "add", "--feedback", str(fb), "--kind", "identify", "--probe", str(tmp_path / "x.png"), "--true-identity", "x", "--reporter", "ana"])
    assert r.exit_code == 2 and "error:" in r.output
    r = runner.invoke(service_cli, ["feedback", "add", "--feedback", str(fb), "--kind", "verify", "--probe", str(tmp_path / "a.png"), "--same", "--reporter", "ana"])
    assert r.exit_code == 2 and "two images" in r.output
    r = runner.invoke(service_cli, ["feedback", "list", "--feedback", str(fb), "--json"])
    rows = json.loads(r.stdout)
    assert len(rows) == 1 and rows[0]["truth"] == {"same": False} and rows[0]["actor"] == "cli:ana"
    assert rows[0]["model_fingerprint"].startswith("sha256:")


# --------------------------------------------------------------------------- fine-tuning on feedback


_replay = square_classes


def test_finetune_writes_or_refuses(tmp_path: Path, model_dir: Path) -> None:
    from siamkit.training.finetune import FinetuneConfig, FinetuneRefused, finetune
    from siamkit.gallery import Gallery

    x, y = _replay()
    fb = tmp_path / "fb.sqlite"

    def png_of(t: torch.Tensor) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(t[0].numpy(), "L").save(buf, "PNG")
        return buf.getvalue()

    g_path = tmp_path / "g.db"
    with Gallery.open(g_path, Verifier.from_dir(model_dir)) as g:
        g.enroll("c0", x[:2])
        g.enroll("c1", x[6:8])
    with FeedbackStore.open(fb) as s:
        for i in range(4):
            s.add(actor="t", kind="verify", image_a=(png_of(x[i]), "png"), image_b=(png_of(x[6 + i]), "png"), truth={"same": False})
        s.add(actor="t", kind="identity_verify", identity="c0", image_a=(png_of(x[3]), "png"), truth={"same": True})
        s.add(actor="t", kind="identify", image_a=(png_of(x[4]), "png"), predicted={"identity": "c1"}, truth={"identity": "c0"})
        s.add(actor="t", kind="identify", image_a=(png_of(x[5]), "png"), truth={"identity": "gone"})
    # one reporter ("t") made every report: let single reports teach (the default asks for 2)
    cfg = FinetuneConfig(steps=6, feedback_per_batch=4, replay_per_batch=12, eval_pairs=100, max_regression=-1.0, min_reporters=1)
    with pytest.raises(FinetuneRefused) as e:  # max_regression < 0: "must improve by 1.0", never met
        finetune(model_dir, fb, tmp_path / "refused", replay_images=x, replay_labels=y, gallery=g_path, config=cfg)
    assert not (tmp_path / "refused").exists()
    rep = e.value.report
    assert rep["feedback_pairs"] == 4 + 2 + 4 and rep["accepted"] is False
    assert set(rep["feedback_skipped"]) == {"7"}
    cfg.max_regression = 1.0
    rep = finetune(model_dir, fb, tmp_path / "new", replay_images=x, replay_labels=y, gallery=g_path, reembed_gallery=True, config=cfg)
    assert rep["accepted"] and (tmp_path / "new" / "calibration.json").is_file() and (tmp_path / "new" / "finetune_report.json").is_file()
    assert rep["gallery_reembedded"] == 4
    v = Verifier.from_dir(tmp_path / "new")  # fingerprint of the new calibration matches the new weights
    assert v.calibrator is not None and v.network.fingerprint == rep["to_model"]
    with Gallery.open(g_path, v, create=False) as g:  # the gallery now belongs to the new model
        assert len(g) == 2
    with FeedbackStore.open(fb) as s:
        assert s.count("used") == 6 and s.count("new") == 1
        assert s.audit_log(1)[0]["action"] == "finetune"
    with pytest.raises(siamkit.errors.SiamkitError, match="not empty"):
        finetune(model_dir, fb, tmp_path / "new", replay_images=x, replay_labels=y, config=cfg)
