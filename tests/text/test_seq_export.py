"""ONNX export of from-scratch text twins (word tokenizer + rnn / transformer_seq): the
tokenizer.json gives the torch tokenizer's ids, fp32 embeddings match torch within 1e-4 at
other batch sizes and lengths than the traced example, calibrated decisions are identical,
int8 stays close."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")

from siamkit.calibration import Calibrator  # noqa: E402
from siamkit.encoders import create_encoder  # noqa: E402
from siamkit.errors import ExportError  # noqa: E402
from siamkit.errors import ModelFileError  # noqa: E402
from siamkit.export.seq_runtime import OnnxWordEncoder  # noqa: E402
from siamkit.export.seq_writer import export_sequence_onnx  # noqa: E402
from siamkit.export.text_runtime import OnnxTextEncoder  # noqa: E402
from siamkit.export.writer import export_onnx  # noqa: E402
from siamkit.network import SiameseNetwork  # noqa: E402
from siamkit.text import TextTwin, scratch_twin  # noqa: E402
from siamkit.text.tokenizer import WordTokenizer  # noqa: E402

TRAIN = ["A man is playing a guitar.", "The cat sat on the mat!", "Émile's café, naïve — résumé 42",
         "a dog runs in the park", "don't stop_me now?", "two men play chess", "the cat is on the red mat"]
QUERIES = TRAIN + ["", "x", "hello   world\tagain", "UNSEEN words, Here: a man!", "the " * 30,
                   "Ça va? Über-cool 3.14 $5", "a man plays the guitar"]


def _twin(kind: str) -> TextTwin:
    torch.manual_seed(0)
    if kind in ("gru", "gru_hashed"):
        return scratch_twin(TRAIN, encoder="rnn", embedding_dim=16, input_dim=12, bag=True, embedding_init="idf",
                            max_length=10, hash_buckets=64 if kind == "gru_hashed" else 0)
    if kind == "lstm_last":
        tok = WordTokenizer().fit(TRAIN)
        enc = create_encoder("rnn", vocab_size=tok.vocab_size, input_dim=8, hidden=6, cell="lstm", pooling="last",
                             layers=2, embedding_dim=7)
        return TextTwin(SiameseNetwork(enc, distance="cosine", normalize=True), tok, max_length=10)
    if kind == "transformer_cls":
        tok = WordTokenizer().fit(TRAIN)
        enc = create_encoder("transformer_seq", vocab_size=tok.vocab_size, width=16, heads=4, layers=2, ff=24,
                             positions="sinusoidal", pooling="cls", max_len=12)
        return TextTwin(SiameseNetwork(enc, distance="cosine", normalize=True), tok, max_length=10)
    return scratch_twin(TRAIN, encoder="transformer_seq", embedding_dim=16, layers=2, bag=True, embedding_init="idf",
                        max_length=10)


@pytest.mark.parametrize("kind", ["gru", "gru_hashed", "lstm_last", "transformer", "transformer_cls"])
def test_export_matches_torch(kind: str, tmp_path: Path) -> None:
    twin = _twin(kind)
    twin.save(tmp_path / "model")
    export_onnx(tmp_path / "model", tmp_path / "export", quantize="int8")
    manifest = json.loads((tmp_path / "export" / "siamkit-onnx.json").read_text())
    assert manifest["kind"] == "text" and manifest["text"]["tokenizer_kind"] == "word"
    assert manifest["text"]["max_length"] == 10 and manifest["input"]["name"] == "input_ids"
    want = twin.tokenize(QUERIES).numpy()
    ref = twin.encode(QUERIES).numpy()
    runtimes = [OnnxWordEncoder]
    if kind == "gru_hashed":  # unseen words get hashed ids, which a tokenizers file cannot give
        assert (want >= len(twin.tokenizer.vocab_)).any()
        with pytest.raises(ModelFileError, match="cannot read the tokenizer"):
            OnnxTextEncoder.from_dir(tmp_path / "export")
    else:
        runtimes.append(OnnxTextEncoder)
    for runtime in runtimes:
        fp32 = runtime.from_dir(tmp_path / "export", precision="fp32", threads=1)
        assert np.array_equal(fp32.token_ids(QUERIES), want)  # truncated at 10 with [CLS], padded with 0
        for batch in (1, 3, 14):  # batch sizes and padded lengths unlike the traced example's
            np.testing.assert_allclose(fp32.encode(QUERIES, batch_size=batch), ref, atol=1e-4)
    int8 = OnnxWordEncoder.from_dir(tmp_path / "export", threads=1)
    assert int8.precision == "int8"
    got = int8.encode(QUERIES)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.95


def test_calibrated_decisions_are_identical(tmp_path: Path) -> None:
    twin = _twin("gru")
    a, b = QUERIES[:7], QUERIES[7:]
    dist = 1.0 - twin.similarity(a, b)
    cal = Calibrator(threshold_method="accuracy").fit(dist, np.arange(7) % 2 == 0, "validation",
                                                     model_fingerprint=twin.network.fingerprint)
    twin.save(tmp_path / "model")
    cal.save(tmp_path / "model")
    export_onnx(tmp_path / "model", tmp_path / "export")
    manifest = json.loads((tmp_path / "export" / "siamkit-onnx.json").read_text())
    threshold = manifest["calibration"]["threshold"]
    assert threshold == pytest.approx(cal.threshold_)
    onnx_dist = 1.0 - OnnxTextEncoder.from_dir(tmp_path / "export", threads=1).similarity(a, b)
    np.testing.assert_allclose(onnx_dist, dist, atol=1e-5)
    assert np.array_equal(onnx_dist <= threshold, cal.decide(dist))


def test_only_word_tokenizer_models(tmp_path: Path) -> None:
    from siamkit.export.text_writer import export_text_onnx

    _twin("gru").save(tmp_path / "model")
    with pytest.raises(ExportError, match="pretrained tokenizer"):  # the hf_text writer still refuses them
        export_text_onnx(tmp_path / "model", tmp_path / "other")
    with pytest.raises(ModelFileError):
        export_sequence_onnx(tmp_path / "nothing", tmp_path / "x")
    assert not (tmp_path / "x" / "siamkit-onnx.json").exists()
    with pytest.raises(ModelFileError, match="no siamkit-onnx.json"):
        OnnxWordEncoder.from_dir(tmp_path / "x")


def test_word_runtime_refuses_a_pretrained_export(tmp_path: Path) -> None:
    _twin("gru").save(tmp_path / "model")
    export_onnx(tmp_path / "model", tmp_path / "export")
    manifest = json.loads((tmp_path / "export" / "siamkit-onnx.json").read_text())
    manifest["text"]["tokenizer_kind"] = None  # as a pretrained model's export
    (tmp_path / "export" / "siamkit-onnx.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="word tokenizer"):
        OnnxWordEncoder.from_dir(tmp_path / "export")
    with pytest.raises(Exception, match="list of texts"):
        OnnxTextEncoder.from_dir(tmp_path / "export").token_ids("one string")


def test_the_word_runtime_never_imports_torch() -> None:
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[2] / "src"
    code = "import siamkit.export.seq_runtime, sys; assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(src)}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
