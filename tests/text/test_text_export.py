"""ONNX export of a text model (tiny random BERT): token ids equal the torch tokenizer's,
embeddings equal the torch model's (fp32) or stay close (int8); scratch twins are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")

from siamkit.errors import ExportError, ModelFileError  # noqa: E402
from siamkit.export.text_runtime import OnnxTextEncoder  # noqa: E402
from siamkit.export.writer import export_onnx  # noqa: E402
from siamkit.text import TextTwin, pretrained_twin, scratch_twin  # noqa: E402

TEXTS = ["a man is playing guitar", "a dog", "the red car drives fast on the park table in the blue song",
         "unknownword and a cat", "a child reads a book"]


@pytest.fixture(scope="module")
def exported(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("text-export")
    pretrained_twin(str(tiny_bert), max_length=12).save(root / "model")
    export_onnx(root / "model", root / "export", quantize="int8")
    return root / "model", root / "export"


def test_export_matches_the_torch_model(exported: tuple[Path, Path]) -> None:
    model, export = exported
    twin = TextTwin.load(model)
    manifest = json.loads((export / "siamkit-onnx.json").read_text())
    assert manifest["kind"] == "text" and manifest["text"]["max_length"] == 12
    assert sorted(p.name for p in export.iterdir()) == ["model.int8.onnx", "model.onnx", "siamkit-onnx.json", "tokenizer.json"]
    fp32 = OnnxTextEncoder.from_dir(export, precision="fp32", threads=1)
    want = twin.tokenize(TEXTS).numpy()
    assert np.array_equal(fp32.token_ids(TEXTS), want)  # truncated at 12, padded alike
    ref = twin.encode(TEXTS).numpy()
    np.testing.assert_allclose(fp32.encode(TEXTS, batch_size=2), ref, atol=1e-5)
    np.testing.assert_allclose(fp32.similarity(TEXTS[:2], TEXTS[2:4]), twin.similarity(TEXTS[:2], TEXTS[2:4]), atol=1e-5)
    import siamkit.export.text_runtime as text_runtime

    alone = np.concatenate([fp32.encode([t]) for t in TEXTS])
    text_runtime.ENCODE_CHUNK = 2  # chunked, sorted by token count, padding cut: the same rows in input order
    try:
        np.testing.assert_allclose(fp32.encode(TEXTS, batch_size=2), alone, atol=1e-5)
    finally:
        text_runtime.ENCODE_CHUNK = 4096
    int8 = OnnxTextEncoder.from_dir(export, threads=1)
    assert int8.precision == "int8"
    got = int8.encode(TEXTS)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9  # quantized, not equal


def test_text_int8_uses_per_channel_signed_weights(exported: tuple[Path, Path]) -> None:
    """The text graph's weights are QInt8 with one scale per output channel (the faster
    u8 x s8 kernel), not the image path's per-tensor QUInt8, and the manifest says so."""
    import onnx
    from onnx import numpy_helper

    _, export = exported
    q = json.loads((export / "siamkit-onnx.json").read_text())["quantization"]
    assert q["method"] == "onnxruntime.quantize_dynamic" and q["scheme"] == "int8-per-channel"
    assert q["weight_type"] == "QInt8" and q["per_channel"] and q["reduce_range"]
    graph = onnx.load(str(export / "model.int8.onnx")).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    matmuls = [n for n in graph.node if n.op_type == "MatMulInteger"]
    assert matmuls  # the attention and feed-forward weights are quantized
    for node in matmuls:
        weight = inits[node.input[1]]
        assert weight.dtype == np.int8
        assert np.abs(weight.astype(np.int32)).max() <= 64  # 7-bit range (reduce_range)
    scales = [v for k, v in inits.items() if k.endswith("_scale") and v.ndim == 1 and v.size > 1]
    assert scales  # per-channel: a vector of scales, not one per tensor


def test_text_runtime_refuses_bad_folders(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, export = exported
    with pytest.raises(ModelFileError, match="no siamkit-onnx.json"):
        OnnxTextEncoder.from_dir(tmp_path)
    m = json.loads((export / "siamkit-onnx.json").read_text())
    (tmp_path / "siamkit-onnx.json").write_text(json.dumps({**m, "kind": None, "text": None}))
    with pytest.raises(ModelFileError, match="not a text model"):
        OnnxTextEncoder.from_dir(tmp_path)
    with pytest.raises(Exception, match="list of texts"):
        OnnxTextEncoder.from_dir(export, precision="fp32").token_ids("one string")


def test_scratch_text_twins_are_not_exported_by_the_pretrained_writer(tmp_path: Path) -> None:
    # export_onnx sends them to export/seq_writer.py (tests/text/test_seq_export.py)
    from siamkit.export.text_writer import export_text_onnx

    twin = scratch_twin(TEXTS, encoder="rnn", max_length=8, embedding_dim=16)
    twin.save(tmp_path / "model")
    with pytest.raises(ExportError, match="pretrained tokenizer"):
        export_text_onnx(tmp_path / "model", tmp_path / "export")
    assert not (tmp_path / "export" / "siamkit-onnx.json").exists()


def test_the_image_verifier_refuses_a_text_export(exported: tuple[Path, Path], tmp_path: Path) -> None:
    """OnnxVerifier (images: verify_files, serve --runtime onnx) checks the export's kind: a
    text export is refused with a clear error, not opened to fail later on a pixel tensor."""
    from typer.testing import CliRunner

    from siamkit.cli import app
    from siamkit.export.runtime import OnnxVerifier
    from tests.cli.test_cli import assert_clean_error

    _, export = exported
    with pytest.raises(ModelFileError, match="export of a text model.*OnnxTextEncoder"):
        OnnxVerifier.from_dir(export)
    m = json.loads((export / "siamkit-onnx.json").read_text())
    for f in export.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "siamkit-onnx.json").write_text(json.dumps({**m, "kind": "sequence"}))
    with pytest.raises(ModelFileError, match="export of a sequence model"):
        OnnxVerifier.from_dir(tmp_path)
    a = tmp_path / "a.png"
    a.write_bytes(b"not read")
    r = CliRunner().invoke(app, ["compare", str(export), str(a), str(a), "--runtime", "onnx"])
    assert_clean_error(r, "export of a text model")
