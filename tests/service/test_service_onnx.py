"""``siamkit serve --runtime onnx``: POST /v1/verify through onnxruntime gives the torch
runtime's answers; a model folder is exported at start-up (and the temporary export
removed on close); the gallery routes are refused clearly; bad settings are one error."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from siamkit.cli import app as cli_app  # noqa: E402
from siamkit.errors import SiamkitError  # noqa: E402
from siamkit.export.writer import export_onnx  # noqa: E402
from siamkit.service import KeyStore, ServiceSettings, create_app  # noqa: E402
from siamkit.service.onnx_runtime import OnnxServiceVerifier  # noqa: E402

from .test_service import assert_error, build_model, image_bytes, pair  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("onnx-svc") / "model")


@pytest.fixture(scope="module")
def keys() -> tuple[KeyStore, str]:
    ks = KeyStore()
    return ks, ks.add("reader", "read")


def _answers(settings: ServiceSettings, key: str, pairs: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        out = []
        for a, b in pairs:
            r = c.post("/v1/verify", files=pair(a, b), headers={"X-API-Key": key})
            assert r.status_code == 200, r.text
            out.append(r.json())
        return out


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, "PNG")
    return buf.getvalue()


BLACK, WHITE = _png(np.zeros((28, 28), np.uint8)), _png(np.full((28, 28), 255, np.uint8))
#: same image, noise pairs (close under the random conv4) and black / white / noise (far)
PAIRS = [(image_bytes(0), image_bytes(0)), (image_bytes(1), image_bytes(101)), (BLACK, WHITE),
         (BLACK, image_bytes(2)), (image_bytes(3), image_bytes(3)), (WHITE, BLACK)]


def test_export_folder_answers_like_the_torch_runtime(model: Path, keys: tuple[KeyStore, str], tmp_path: Path) -> None:
    export = export_onnx(model, tmp_path / "export", quantize="int8")
    torch_r = _answers(ServiceSettings(model=model, keys=keys[0]), keys[1], PAIRS)
    onnx_r = _answers(ServiceSettings(model=export, keys=keys[0], runtime="onnx"), keys[1], PAIRS)
    assert any(r["decision"] == "same" for r in torch_r) and any(r["decision"] == "different" for r in torch_r)
    for t, o in zip(torch_r, onnx_r):
        assert o["decision"] == t["decision"] and o["threshold"] == t["threshold"]
        assert o["distance"] == pytest.approx(t["distance"], abs=1e-4)
        assert o["confidence"] == pytest.approx(t["confidence"], abs=1e-3)
        assert o["model"] == t["model"] is not None  # the fingerprint comes from the manifest
    int8 = _answers(ServiceSettings(model=export, keys=keys[0], runtime="onnx", onnx_precision="int8"), keys[1], PAIRS)
    assert max(abs(a["distance"] - t["distance"]) for a, t in zip(int8, torch_r)) < 0.05


def test_model_folder_is_exported_at_start_and_removed_on_close(model: Path, keys: tuple[KeyStore, str]) -> None:
    app = create_app(ServiceSettings(model=model, keys=keys[0], runtime="onnx"))
    v = app.state.siamkit.verifier
    assert isinstance(v, OnnxServiceVerifier) and v.onnx.precision == "fp32"
    tmp = v.exported_to
    assert tmp is not None and (tmp / "model.onnx").is_file()
    with TestClient(app, raise_server_exceptions=False) as c:
        h = c.get("/healthz")
        assert h.status_code == 200 and h.json()["calibrated"] is True and h.json()["gallery"] is None
        r = c.post("/v1/verify", files=pair(*PAIRS[0]), headers={"X-API-Key": keys[1]})
        assert r.status_code == 200 and r.json()["decision"] == "same"
        bad = c.post("/v1/verify", files=pair(b"not an image at all", PAIRS[0][1]), headers={"X-API-Key": keys[1]})
        assert_error(bad, 415)
        err = assert_error(c.post("/v1/identify", files={"image": ("a.png", PAIRS[0][0], "image/png")},
                                  headers={"X-API-Key": keys[1]}), 503, "no_gallery")
        assert "--runtime torch" in err["message"]
    assert not tmp.exists()  # the lifespan closed the state


def test_gallery_is_refused_at_start(model: Path, keys: tuple[KeyStore, str], tmp_path: Path) -> None:
    with pytest.raises(SiamkitError, match="gallery routes .* --runtime torch"):
        create_app(ServiceSettings(model=model, keys=keys[0], gallery=tmp_path / "g.db", runtime="onnx"))
    assert not (tmp_path / "g.db").exists()


@pytest.mark.parametrize(
    "change, message",
    [({"runtime": "tensorrt"}, "torch or onnx"), ({"onnx_precision": "fp16"}, "precision"), ({"model": None}, "neither")],
)
def test_bad_settings_are_one_error(model: Path, keys: tuple[KeyStore, str], tmp_path: Path, change: dict, message: str) -> None:
    opts: dict[str, Any] = {"model": model, "keys": keys[0], "runtime": "onnx", **change}
    if opts["model"] is None:
        opts["model"] = tmp_path  # an empty folder
    with pytest.raises(SiamkitError, match=message):
        create_app(ServiceSettings(**opts))


def test_cli_refuses_onnx_with_a_gallery(model: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli_app, ["serve", "--model", str(model), "--keys", str(tmp_path / "k.json"),
                                     "--gallery", str(tmp_path / "g.db"), "--runtime", "onnx"])
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and "--runtime torch" in r.output and "Traceback" not in r.output
