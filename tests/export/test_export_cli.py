"""`siamkit export` and `siamkit compare --runtime onnx` end to end (typer's CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from siamkit.export.runtime import MANIFEST  # noqa: E402

from ..cli.test_cli import FAST, assert_clean_error, run  # noqa: E402
from ..conftest import make_image_folder  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("export-cli")
    data = make_image_folder(tmp / "data", classes=4, per_class=6)
    r = run("train", "--data", data, "--out", tmp / "run", *FAST)
    assert r.exit_code == 0, r.output
    r = run("calibrate", tmp / "run" / "model", "--data", data)
    assert r.exit_code == 0, r.output
    return tmp / "run" / "model", data


def test_export_then_compare_onnx_matches_torch(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = trained
    out = tmp_path / "export"
    r = run("export", model, "--format", "onnx", "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "model.onnx").is_file() and (out / MANIFEST).is_file()
    assert json.loads((out / MANIFEST).read_text())["calibration"] is not None
    for b in (data / "class0" / "1.png", data / "class3" / "0.png"):
        a = data / "class0" / "0.png"
        want = json.loads(run("compare", model, a, b, "--json").stdout)
        r = run("compare", out, a, b, "--json", "--runtime", "onnx")
        assert r.exit_code == 0, r.output
        got = json.loads(r.stdout)
        assert list(got) == list(want)
        assert got["same"] == want["same"] and got["threshold"] == want["threshold"]
        assert got["distance_kind"] == want["distance_kind"]
        assert got["distance"] == pytest.approx(want["distance"], abs=1e-4)
        assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-4)
    r = run("compare", out, a, b, "--runtime", "onnx")
    assert r.exit_code == 0 and "decision:" in r.stdout


def test_export_int8(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = trained
    out = tmp_path / "e8"
    r = run("export", model, "--out", out, "--quantize", "int8")
    assert r.exit_code == 0, r.output
    assert json.loads((out / MANIFEST).read_text())["models"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    r = run("compare", out, data / "class0" / "0.png", data / "class0" / "1.png", "--json", "--runtime", "onnx")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["same"] in (True, False)


def test_export_cli_bad_input_exits_2(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = trained
    a, b = data / "class0" / "0.png", data / "class0" / "1.png"
    r = run("export", tmp_path / "missing", "--out", tmp_path / "e")
    assert r.exit_code == 2
    assert_clean_error(r, "does not exist")
    r = run("export", model, "--format", "tflite", "--out", tmp_path / "e")
    assert r.exit_code == 2
    assert_clean_error(r, "--format")
    r = run("export", model, "--out", tmp_path / "e", "--quantize", "int4")
    assert r.exit_code == 2
    assert_clean_error(r, "--quantize")
    r = run("compare", model, a, b, "--runtime", "onnx")  # a model folder, not an export
    assert r.exit_code == 2
    assert_clean_error(r, "siamkit export")
    r = run("compare", model, a, b, "--runtime", "tensorrt")
    assert r.exit_code == 2
    assert_clean_error(r, "--runtime")
    out = tmp_path / "e"
    assert run("export", model, "--out", out).exit_code == 0
    m = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**m, "format_version": 2}))
    r = run("compare", out, a, b, "--runtime", "onnx")
    assert r.exit_code == 2
    assert_clean_error(r, "format version 2")
