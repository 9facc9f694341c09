"""Static int8 export (onnxruntime quantize_static, QDQ, per-channel) with calibration
images: close to fp32, same decisions, recorded in the manifest; the dynamic fallback
warns; a bad calibration folder is a clean CLI error (exit code 2)."""

from __future__ import annotations

import json
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from siamkit.data.images import IMAGE_EXTENSIONS  # noqa: E402
from siamkit.errors import DataError  # noqa: E402
from siamkit.export.runtime import MANIFEST, OnnxVerifier  # noqa: E402
from siamkit.export.writer import NO_CALIBRATION_WARNING, export_onnx  # noqa: E402

from ..cli.test_cli import FAST, assert_clean_error, run  # noqa: E402
from ..conftest import make_image_folder  # noqa: E402

#: max |int8 - fp32| over the unit-norm embeddings' entries. Measured on this fixture
#: (the CLI's default model trained 4 epochs on the synthetic 20x20 folder, 48 calibration
#: images): 0.0040 static (0.0055 dynamic), decisions agreeing on 100% of the 1128 pairs;
#: a 5x margin.
EMBED_ATOL = 0.02


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("int8-static")
    data = make_image_folder(tmp / "data", classes=6, per_class=8)
    r = run("train", "--data", data, "--out", tmp / "run", *FAST[:1], "4", *FAST[2:])
    assert r.exit_code == 0, r.output
    r = run("calibrate", tmp / "run" / "model", "--data", data)
    assert r.exit_code == 0, r.output
    return tmp / "run" / "model", data


def _images(data: Path) -> list[Path]:
    return sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def test_static_int8_close_to_fp32_same_decisions(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = trained
    out = tmp_path / "e"
    r = run("export", model, "--out", out, "--quantize", "int8", "--calibration-data", data)
    assert r.exit_code == 0, r.output
    assert "warning" not in r.output.lower()
    m = json.loads((out / MANIFEST).read_text())
    assert m["models"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    q = m["quantization"]
    assert q["method"] == "onnxruntime.quantize_static" and q["format"] == "QDQ" and q["per_channel"] is True
    assert q["weight_type"] == "QInt8" and q["activation_type"] == "QUInt8"
    assert q["calibration_images"] == len(_images(data)) == 48
    v8 = OnnxVerifier.from_dir(out, threads=1)  # auto: int8 when present
    v32 = OnnxVerifier.from_dir(out, precision="fp32", threads=1)
    assert (v8.precision, v32.precision) == ("int8", "fp32")
    assert OnnxVerifier.from_dir(out, precision="auto").precision == "int8"
    paths = _images(data)
    e8, e32 = v8.embed_files(paths), v32.embed_files(paths)
    assert not np.array_equal(e8, e32)  # really the quantized graph
    err = float(np.abs(e8 - e32).max())
    assert err < EMBED_ATOL, err
    # decisions at the calibrated threshold over a fixed pair set (all 1128 pairs)
    i, j = np.array(list(combinations(range(len(paths)), 2))).T
    d8 = v8.decide(v8.embedding_distance(e8[i], e8[j]))
    d32 = v32.decide(v32.embedding_distance(e32[i], e32[j]))
    agree = np.mean([a.same == b.same for a, b in zip(d8, d32)])
    assert agree >= 0.90, agree


def test_static_int8_from_array_and_bad_arrays(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = trained
    shape = tuple(OnnxVerifier.from_dir(export_onnx(model, tmp_path / "f")).input_spec.shape)
    x = np.random.default_rng(0).integers(0, 256, (10, *shape), dtype=np.uint8)
    out = export_onnx(model, tmp_path / "a", quantize="int8", calibration=x)
    assert json.loads((out / MANIFEST).read_text())["quantization"]["calibration_images"] == 10
    with pytest.raises(DataError, match="calibration array"):
        export_onnx(model, tmp_path / "b", quantize="int8", calibration=x[:, :, :5])
    with pytest.raises(ValueError, match="calibration data is for quantize='int8'"):
        export_onnx(model, tmp_path / "b", quantize="int8-dynamic", calibration=x)
    with pytest.raises(ValueError, match="precision"):
        OnnxVerifier.from_dir(out, precision="int4")


def test_int8_without_calibration_warns_and_stays_dynamic(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = trained
    with pytest.warns(UserWarning, match="SLOWER than fp32 for convnets"):
        out = export_onnx(model, tmp_path / "w", quantize="int8")
    assert json.loads((out / MANIFEST).read_text())["quantization"]["method"] == "onnxruntime.quantize_dynamic"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicit int8-dynamic: no warning
        export_onnx(model, tmp_path / "d", quantize="int8-dynamic")
    r = run("export", model, "--out", tmp_path / "c", "--quantize", "int8")
    assert r.exit_code == 0, r.output
    err = r.stderr if hasattr(r, "stderr") else r.output
    assert "warning:" in err and "--calibration-data" in err and NO_CALIBRATION_WARNING in err
    r = run("export", model, "--out", tmp_path / "c2", "--quantize", "int8-dynamic")
    assert r.exit_code == 0 and "warning" not in r.output.lower(), r.output


def test_bad_calibration_folder_exits_2(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = trained
    missing = tmp_path / "no-such-folder"
    r = run("export", model, "--out", tmp_path / "e", "--quantize", "int8", "--calibration-data", missing)
    assert r.exit_code == 2
    assert_clean_error(r, "calibration data folder", str(missing))
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no images here")
    r = run("export", model, "--out", tmp_path / "e", "--quantize", "int8", "--calibration-data", empty)
    assert r.exit_code == 2
    assert_clean_error(r, "has no images", str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    r = run("export", model, "--out", tmp_path / "e", "--quantize", "int8", "--calibration-data", broken)
    assert r.exit_code == 2
    assert_clean_error(r, str(broken))
    r = run("export", model, "--out", tmp_path / "e", "--calibration-data", empty)  # no --quantize int8
    assert r.exit_code == 2
    assert_clean_error(r, "--calibration-data")
