"""The console's endpoints in process (FastAPI TestClient): keys and roles on every one,
thumbnails drawn from what the gallery kept (pixel for pixel), the audit log, the model
card (thresholds and where they come from, plots by fixed name only), the domain-shift
check, the review queue and verdicts, the finetune command, and the static console files."""

from __future__ import annotations

import base64
import io
import json
import shlex
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from siamkit.gallery import Gallery  # noqa: E402
from siamkit.gallery.selfcal import calibrate_gallery  # noqa: E402
from siamkit.service import KeyStore, ServiceSettings, create_app  # noqa: E402
from siamkit.service.images import decode_image  # noqa: E402
from siamkit.service.routers.console import ASSETS  # noqa: E402
from siamkit.service.thumbnails import array_image, stored_sample_png, thumbnail_png  # noqa: E402
from siamkit.gallery.store_schema import StoredSample  # noqa: E402

from .test_service import SMALL, build_model, image_bytes  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder: RUN/model (calibrated), RUN/metrics.json, RUN/roc.png, RUN/report/distances.png."""
    run = tmp_path_factory.mktemp("console") / "run"
    build_model(run / "model")
    (run / "metrics.json").write_text(json.dumps({"title": "t", "verification": {"roc_auc": 0.91, "eer": 0.12, "roc": list(range(50))}}))
    Image.new("L", (20, 10), 200).save(run / "roc.png")
    (run / "report").mkdir()
    Image.new("L", (10, 10), 50).save(run / "report" / "distances.png")
    (run / "secret.png").write_bytes(b"not served")
    return run


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    ks = KeyStore()
    return {"store": ks, "read": ks.add("reader", "read"), "admin": ks.add("boss", "admin"), "admin2": ks.add("second", "admin")}


@pytest.fixture
def client(run_dir: Path, keys: dict[str, Any], tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ServiceSettings(model=run_dir / "model", keys=keys["store"], gallery=tmp_path / "g.db", limits=SMALL, max_inference=2))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def H(keys: dict[str, Any], who: str) -> dict[str, str]:
    return {"X-API-Key": keys[who]}


def enrol(c: TestClient, keys: dict[str, Any], name: str, seeds: list[int]) -> dict[str, Any]:
    files = [("images", (f"{s}.png", image_bytes(s), "image/png")) for s in seeds]
    r = c.post("/v1/identities", data={"identity": name}, files=files, headers=H(keys, "admin"))
    assert r.status_code == 201, r.text
    return r.json()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def report(c: TestClient, keys: dict[str, Any], who: str, a: int, b: int, same: bool) -> int:
    body = {"kind": "verify", "image_a": b64(image_bytes(a)), "image_b": b64(image_bytes(b)), "predicted_same": not same, "true_same": same}
    r = c.post("/v1/feedback", json=body, headers=H(keys, who))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


READ_PATHS = ["/v1/whoami", "/v1/identity-search?q=a", "/v1/identities/alice/samples/1/thumbnail", "/v1/model", "/v1/model/plots/roc.png", "/v1/model/shift"]
ADMIN_PATHS = ["/v1/audit", "/v1/feedback/queue", "/v1/feedback/1/thumbnail/a", "/v1/feedback/finetune-command"]


@pytest.mark.parametrize("path", READ_PATHS + ADMIN_PATHS)
def test_every_console_endpoint_needs_a_key(client: TestClient, keys: dict[str, Any], path: str) -> None:
    for headers in ({}, {"X-API-Key": "sk_00000000_" + "x" * 40}):
        r = client.get(path, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    r = client.post("/v1/feedback/1/review", json={"accept": True})
    assert r.status_code == 401


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_admin_endpoints_refuse_a_read_key(client: TestClient, keys: dict[str, Any], path: str) -> None:
    r = client.get(path, headers=H(keys, "read"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_review_refuses_a_read_key_and_changes_nothing(client: TestClient, keys: dict[str, Any]) -> None:
    fid = report(client, keys, "admin", 1, 2, False)
    r = client.post(f"/v1/feedback/{fid}/review", json={"accept": False}, headers=H(keys, "read"))
    assert r.status_code == 403
    q = client.get("/v1/feedback/queue", headers=H(keys, "admin")).json()
    assert [i["id"] for i in q["items"]] == [fid] and q["items"][0]["status"] == "new"


def test_whoami(client: TestClient, keys: dict[str, Any]) -> None:
    me = client.get("/v1/whoami", headers={"Authorization": f"Bearer {keys['read']}"}).json()
    assert me["name"] == "reader" and me["role"] == "read" and keys["read"].startswith(f"sk_{me['key_id']}_")
    assert client.get("/v1/whoami", headers=H(keys, "admin")).json()["role"] == "admin"


def test_identity_search(client: TestClient, keys: dict[str, Any]) -> None:
    for i, name in enumerate(["Alice", "malice", "bob", "ALIX"]):
        enrol(client, keys, name, [i])
    R = H(keys, "read")
    r = client.get("/v1/identity-search?q=ali", headers=R).json()
    assert [i["identity"] for i in r["identities"]] == ["Alice", "malice", "ALIX"] and r["total"] == 3
    r = client.get("/v1/identity-search?q=ALI&limit=1", headers=R).json()
    assert [i["identity"] for i in r["identities"]] == ["Alice"] and r["total"] == 3
    assert client.get("/v1/identity-search?q=zzz", headers=R).json() == {"identities": [], "total": 0}
    assert client.get("/v1/identity-search?q=", headers=R).status_code == 422
    assert client.get("/v1/identity-search", headers=R).status_code == 422


def test_sample_thumbnail_is_the_kept_input(client: TestClient, keys: dict[str, Any]) -> None:
    rec = enrol(client, keys, "alice", [11, 12])
    enrol(client, keys, "bob", [13])
    spec = client.app.state.siamkit.spec
    for s, seed in zip(rec["samples"], [11, 12]):
        r = client.get(f"/v1/identities/alice/samples/{s['id']}/thumbnail?size=56", headers=H(keys, "read"))
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = np.asarray(Image.open(io.BytesIO(r.content)))
        assert img.shape == (56, 56)  # 28 x 28 grey input, enlarged 2x (nearest)
        kept = decode_image(image_bytes(seed), spec, SMALL).numpy()[0]
        np.testing.assert_array_equal(img[::2, ::2], kept)
    small = client.get(f"/v1/identities/alice/samples/{rec['samples'][0]['id']}/thumbnail?size=16", headers=H(keys, "read"))
    assert Image.open(io.BytesIO(small.content)).size == (16, 16)


def test_sample_thumbnail_refusals(client: TestClient, keys: dict[str, Any]) -> None:
    a = enrol(client, keys, "alice", [11])
    b = enrol(client, keys, "bob", [13])
    R = H(keys, "read")
    wrong = client.get(f"/v1/identities/alice/samples/{b['samples'][0]['id']}/thumbnail", headers=R)  # bob's sample
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "unknown_sample"
    assert client.get("/v1/identities/alice/samples/99999/thumbnail", headers=R).status_code == 404
    sid = a["samples"][0]["id"]
    for size in (15, 257, "x"):
        assert client.get(f"/v1/identities/alice/samples/{sid}/thumbnail?size={size}", headers=R).status_code == 422
    assert client.get(f"/v1/identities/al%2Fice/samples/{sid}/thumbnail", headers=R).status_code in (404, 422)
    assert client.get(f"/v1/identities/alice/samples/-1/thumbnail", headers=R).status_code == 422


def test_thumbnail_rendering_units() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    assert array_image(grey).size == (4, 3) and array_image(grey).mode == "L"
    rgb = np.zeros((3, 5, 5), np.uint8)
    rgb[0] = 255
    img = array_image(rgb)
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 0, 0)
    f = array_image(np.array([[0.5, 1.5], [1.0, 1.5]], np.float32))
    assert np.asarray(f).tolist() == [[0, 255], [128, 255]]  # min..max -> 0..255
    assert array_image(np.zeros((4, 5, 5), np.uint8)) is None  # 4 channels: not an image
    assert array_image(np.zeros(7, np.float32)) is None  # a feature vector
    assert array_image(np.array([[np.nan, 1.0]], np.float32)) is None
    big = thumbnail_png(Image.new("RGB", (400, 200)), 100)
    assert Image.open(io.BytesIO(big)).size == (100, 50)
    with pytest.raises(ValueError):
        thumbnail_png(Image.new("L", (4, 4)), 4)
    png = image_bytes(3, size=(30, 60))
    out = stored_sample_png(StoredSample("file:.png", png), 60, max_pixels=10_000)
    assert Image.open(io.BytesIO(out)).size == (30, 60)
    assert stored_sample_png(StoredSample("file:.png", png), 60, max_pixels=100) is None  # over the pixel cap
    assert stored_sample_png(StoredSample("file:.pgm", b"P5 garbage"), 60, max_pixels=10_000) is None
    assert stored_sample_png(StoredSample("uint8", b"\x00" * 3, (3,)), 60, max_pixels=10_000) is None


def test_thumbnail_of_a_sample_enrolled_from_a_file(run_dir: Path, keys: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "p.png").write_bytes(image_bytes(5, size=(40, 20)))
    with Gallery.open(tmp_path / "g.db", run_dir / "model", create=True) as g:
        g.enroll("carol", [tmp_path / "p.png"])
    app = create_app(ServiceSettings(model=run_dir / "model", keys=keys["store"], gallery=tmp_path / "g.db", limits=SMALL))
    with TestClient(app) as c:
        sid = c.get("/v1/identities/carol", headers=H(keys, "read")).json()["samples"][0]
        assert sid["format"] == "file:.png"
        r = c.get(f"/v1/identities/carol/samples/{sid['id']}/thumbnail?size=80", headers=H(keys, "read"))
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (80, 40)  # the file's own aspect


def test_audit_log(client: TestClient, keys: dict[str, Any]) -> None:
    enrol(client, keys, "alice", [1, 2])
    client.post("/v1/identities/alice/samples", files=[("images", ("x.png", image_bytes(3), "image/png"))], headers=H(keys, "admin2"))
    assert client.delete("/v1/identities/alice", headers=H(keys, "admin")).status_code == 200
    log = client.get("/v1/audit", headers=H(keys, "admin")).json()
    assert log["source"] == "feedback_store"
    assert [(e["actor"], e["action"], e["target"]) for e in log["entries"]] == [
        ("boss", "delete", "alice"), ("second", "add_samples", "alice"), ("boss", "enroll", "alice")]
    assert log["entries"][2]["detail"]["n_samples"] == 2
    page = client.get("/v1/audit?limit=1&offset=1", headers=H(keys, "admin")).json()["entries"]
    assert [e["action"] for e in page] == ["add_samples"]
    assert client.get("/v1/audit?limit=0", headers=H(keys, "admin")).status_code == 422
    # without a feedback store: the gallery's own log (no actors)
    state = client.app.state.siamkit
    state.feedback.close()
    state.feedback = None
    log = client.get("/v1/audit", headers=H(keys, "admin")).json()
    assert log["source"] == "gallery" and log["entries"][0]["action"] == "remove" and log["entries"][0]["actor"] is None


def test_model_card(client: TestClient, keys: dict[str, Any], run_dir: Path) -> None:
    card = client.get("/v1/model", headers=H(keys, "read")).json()
    assert card["model"]["fingerprint"].startswith("sha256:") and card["model"]["network"]["encoder"]["name"] == "conv4"
    cal = card["calibration"]
    assert cal["fitted_on"] == "synthetic" and cal["scores"]["n_impostor"] == 60 and "confidence" not in cal
    for k in ("verify", "identity_verify", "identify"):
        assert card["thresholds"][k]["threshold"] == pytest.approx(cal["threshold"])
        assert "fitted on 'synthetic'" in card["thresholds"][k]["source"]
    dist = card["score_distribution"]
    cal_obj = client.app.state.siamkit.verifier.calibrator
    assert dist["impostor"] == list(cal_obj.scores_.impostor_quantiles) and dist["threshold"] == pytest.approx(cal["threshold"])
    assert len(dist["levels"]) == len(dist["genuine"]) == len(dist["impostor"]) and dist["data"] == "synthetic"
    assert card["metrics"]["file"] == "run/metrics.json"
    assert card["metrics"]["values"]["verification"] == {"roc_auc": 0.91, "eer": 0.12}  # the long curve left out
    assert card["plots"] == ["distances.png", "roc.png"]
    r = client.get("/v1/model/plots/roc.png", headers=H(keys, "read"))
    assert r.status_code == 200 and r.content == (run_dir / "roc.png").read_bytes()
    for bad in ("secret.png", "..%2Fconfig.json", "config.json", "det.png"):
        assert client.get(f"/v1/model/plots/{bad}", headers=H(keys, "read")).status_code == 404


def test_model_card_gallery_calibration_changes_the_sources(client: TestClient, keys: dict[str, Any]) -> None:
    for i, name in enumerate(["a", "b", "c", "d"]):
        enrol(client, keys, name, [10 * i + 1, 10 * i + 2, 10 * i + 3])
    g = client.app.state.siamkit.gallery
    rec = calibrate_gallery(g, 0.3)
    card = client.get("/v1/model", headers=H(keys, "read")).json()
    assert card["thresholds"]["identity_verify"]["threshold"] == pytest.approx(rec["threshold"])
    assert "gallery's own calibration at target FAR 0.3" in card["thresholds"]["identity_verify"]["source"]
    assert "synthetic" in card["thresholds"]["verify"]["source"]  # /v1/verify never uses the gallery's
    assert card["gallery_calibration"]["target_far"] == 0.3 and "confidence" not in card["gallery_calibration"]


def test_shift_check(client: TestClient, keys: dict[str, Any]) -> None:
    s = client.get("/v1/model/shift", headers=H(keys, "read")).json()
    assert s["available"] is False and "two identities" in s["note"]
    enrol(client, keys, "a", [1, 2])
    enrol(client, keys, "b", [3, 4])
    s = client.get("/v1/model/shift", headers=H(keys, "read")).json()
    rep = s["report"]
    assert s["available"] and rep["n_now"] == 4 and rep["n_calibration"] == 60 and isinstance(rep["shifted"], bool)
    assert rep["message"] and rep["threshold"] == pytest.approx(client.get("/v1/model", headers=H(keys, "read")).json()["calibration"]["threshold"])


def test_review_queue_screening_and_verdicts(client: TestClient, keys: dict[str, Any]) -> None:
    A = H(keys, "admin")
    x = report(client, keys, "admin", 1, 2, False)   # boss: 1 and 2 are different
    y = report(client, keys, "admin2", 2, 1, False)  # second: the same claim (either order) -> teaches
    z = report(client, keys, "admin", 5, 6, True)    # boss: 5 and 6 are the same
    w = report(client, keys, "admin2", 5, 6, False)  # second: contradicts z -> both held
    q = client.get("/v1/feedback/queue", headers=A).json()
    by = {i["id"]: i for i in q["items"]}
    assert q["total"] == 4 and q["min_reporters"] == 2
    assert (by[x]["screening"], by[x]["reporters"]) == ("teaches", 2) and by[y]["screening"] == "teaches"
    assert by[z]["screening"] == by[w]["screening"] == "held"
    one = client.get("/v1/feedback/queue?min_reporters=1", headers=A).json()
    assert {i["id"]: i["screening"] for i in one["items"]}[x] == "teaches"
    # accepting z rejects w (its contradiction); the queue says who accepted it
    r = client.post(f"/v1/feedback/{z}/review", json={"accept": True}, headers=A)
    assert r.status_code == 200 and r.json() == {"new": [z], "rejected": [w]}
    q = client.get("/v1/feedback/queue", headers=A).json()
    by = {i["id"]: i for i in q["items"]}
    assert w not in by and by[z]["accepted_by"] == "boss" and by[z]["screening"] == "waiting" and by[x]["accepted_by"] is None
    assert client.post(f"/v1/feedback/{x}/review", json={"accept": False}, headers=A).json() == {"new": [], "rejected": [x]}
    assert x not in {i["id"] for i in client.get("/v1/feedback/queue", headers=A).json()["items"]}
    audit = client.get("/v1/audit", headers=A).json()["entries"]
    assert (audit[0]["actor"], audit[0]["action"]) == ("boss", "feedback_rejected")
    # paging
    assert len(client.get("/v1/feedback/queue?limit=1", headers=A).json()["items"]) == 1


def test_review_refusals(client: TestClient, keys: dict[str, Any]) -> None:
    A = H(keys, "admin")
    fid = report(client, keys, "admin", 1, 2, False)
    assert client.post("/v1/feedback/999/review", json={"accept": True}, headers=A).status_code == 422
    assert client.post(f"/v1/feedback/{fid}/review", json={"accept": True, "x": 1}, headers=A).status_code == 422
    assert client.post(f"/v1/feedback/{fid}/review", json={"accept": "maybe"}, headers=A).status_code == 422
    assert client.post(f"/v1/feedback/{fid}/review", content=b"accept=1", headers={**A, "Content-Type": "text/plain"}).status_code == 415
    assert client.post("/v1/feedback/0/review", json={"accept": True}, headers=A).status_code == 422
    client.app.state.siamkit.feedback.set_status([fid], "used", actor="finetune")
    r = client.post(f"/v1/feedback/{fid}/review", json={"accept": False}, headers=A)
    assert r.status_code == 422 and "already used" in r.json()["error"]["message"]


def test_feedback_thumbnails(client: TestClient, keys: dict[str, Any]) -> None:
    A = H(keys, "admin")
    fid = report(client, keys, "admin", 7, 8, False)
    r = client.get(f"/v1/feedback/{fid}/thumbnail/b?size=28", headers=A)
    assert r.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), np.asarray(Image.open(io.BytesIO(image_bytes(8)))))
    body = {"kind": "identify", "image_a": b64(image_bytes(9)), "true_identity": "unknown", "predicted_identity": "alice"}
    one = client.post("/v1/feedback", json=body, headers=A).json()["id"]
    assert client.get(f"/v1/feedback/{one}/thumbnail/a", headers=A).status_code == 200
    assert client.get(f"/v1/feedback/{one}/thumbnail/b", headers=A).json()["error"]["code"] == "no_thumbnail"
    assert client.get(f"/v1/feedback/{one}/thumbnail/c", headers=A).status_code == 422
    assert client.get("/v1/feedback/999/thumbnail/a", headers=A).status_code == 422


def test_finetune_command(client: TestClient, keys: dict[str, Any], run_dir: Path, tmp_path: Path) -> None:
    A = H(keys, "admin")
    report(client, keys, "admin", 1, 2, False)
    report(client, keys, "admin2", 1, 2, False)
    r = client.get("/v1/feedback/finetune-command?min_reporters=3", headers=A).json()
    argv = shlex.split(r["command"])
    assert argv[:2] == ["siamkit", "finetune"]
    opts = dict(zip(argv[2::2], argv[3::2]))
    assert opts["--model"] == str(run_dir / "model") and opts["--feedback"] == str(tmp_path / "g.db.feedback.sqlite")
    assert opts["--gallery"] == str(tmp_path / "g.db") and opts["--min-reporters"] == "3" and opts["--replay"] == "TRAINING_DATA"
    assert (r["claims_teaching"], r["waiting_for_reporters"]) == (0, 2)  # 2 reporters < 3
    r = client.get("/v1/feedback/finetune-command", headers=A).json()
    assert (r["claims_teaching"], r["reports_teaching"], r["held_contradicted"]) == (1, 2, 0)


def test_console_files(client: TestClient) -> None:
    page = client.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    for name, ctype in ASSETS.items():
        r = client.get(f"/console/{name}")
        assert r.status_code == 200 and r.headers["content-type"].split(";")[0] == ctype.split(";")[0]
    for bad in ("secret", "..%2Fapp.py", "console.py", "index.htm"):
        assert client.get(f"/console/{bad}").status_code == 404
    html = page.text
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    js = client.get("/console/console.js").text
    assert "sessionStorage.setItem" in js and "localStorage." not in js and "innerHTML" not in js and "document.cookie" not in js
    assert "/console" not in client.get("/openapi.json").json()["paths"]
    assert "/v1/model" in client.get("/openapi.json").json()["paths"]


def test_console_endpoints_on_a_postgresql_gallery(postgres_server: Any, run_dir: Path, keys: dict[str, Any]) -> None:
    """Thumbnails (the PostgreSQL store's stored_sample), the gallery's own audit log (no
    feedback store), the shift check and the model card on a shared gallery."""
    from tests.postgres_cluster import drop_database

    url = postgres_server.new_database()
    try:
        app = create_app(ServiceSettings(model=run_dir / "model", keys=keys["store"], gallery=url, limits=SMALL))
        with TestClient(app) as c:
            a = enrol(c, keys, "alice", [1, 2])
            enrol(c, keys, "bob", [3])
            sid = a["samples"][1]["id"]
            r = c.get(f"/v1/identities/alice/samples/{sid}/thumbnail?size=28", headers=H(keys, "read"))
            kept = decode_image(image_bytes(2), c.app.state.siamkit.spec, SMALL).numpy()[0]
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), kept)
            assert c.get(f"/v1/identities/bob/samples/{sid}/thumbnail", headers=H(keys, "read")).status_code == 404
            log = c.get("/v1/audit", headers=H(keys, "admin")).json()
            # a PostgreSQL gallery keeps its feedback store and the service's audit log in its own database
            assert log["source"] == "feedback_store" and [e["target"] for e in log["entries"]][:2] == ["bob", "alice"]
            s = c.get("/v1/model/shift", headers=H(keys, "read")).json()
            assert s["available"] and s["report"]["n_now"] == 2
            card = c.get("/v1/model", headers=H(keys, "read")).json()
            assert set(card["thresholds"]) == {"verify", "identity_verify", "identify"}
            assert c.get("/v1/feedback/queue", headers=H(keys, "admin")).status_code == 200
    finally:
        drop_database(postgres_server.url, url)


def test_model_card_of_an_uncalibrated_model(keys: dict[str, Any], tmp_path: Path) -> None:
    model = build_model(tmp_path / "bare", calibrated=False)
    app = create_app(ServiceSettings(model=model, keys=keys["store"], gallery=tmp_path / "g.db", limits=SMALL))
    with TestClient(app) as c:
        card = c.get("/v1/model", headers=H(keys, "read")).json()
        assert card["calibration"] is None and card["score_distribution"] is None and card["plots"] == [] and card["metrics"] is None
        assert all(v["threshold"] is None and "not calibrated" in v["source"] for v in card["thresholds"].values())
        enrol(c, keys, "a", [1])
        enrol(c, keys, "b", [2])
        assert c.get("/v1/model/shift", headers=H(keys, "read")).json()["available"] is False
