"""Export a text model folder (``hf_text`` on a pretrained tokenizer) to ONNX: the
encoder graph on int64 token ids + the tokenizer's ``tokenizer.json`` + the manifest.

The graph maps ``input_ids`` (B, L) -- both axes dynamic, padded with the tokenizer's pad
id -- to the FINAL embedding (B, D) (:meth:`SiameseNetwork.embed`: masked pooling and
L2-normalisation inside). The manifest's ``text`` entry names the tokenizer file, the max
length and the pad id, which :mod:`siamkit.export.text_runtime` reads (numpy,
onnxruntime and ``tokenizers`` only). ``quantize="int8"`` adds the dynamically quantized
graph (:func:`siamkit.export.writer.quantize_int8`) with per-channel QInt8 weights in 7 bits
(``TEXT_INT8_SCHEME``): on MiniLM-L6 1.3-1.5x faster than the image path's per-tensor QUInt8
weights at the same STS-B Spearman (docs/benchmarks.md, "Text pairs: STS Benchmark").

From-scratch twins (the word tokenizer, ``rnn`` / ``transformer_seq``) are not exported:
their tokenizer has no torch-free runtime, and ``transformer_seq``'s fused attention layer
is refused by the exporter.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import write_bytes_atomic, write_json_atomic
from ..calibration import Calibrator
from ..errors import ExportError
from ..text.model import TextTwin
from .runtime import MANIFEST, MODEL_FILES, OUTPUT_NAME
from .writer import OPSET, dynamic_quantization_entry, onnx_manifest, quantize_int8

__all__ = ["export_text_onnx", "TEXT_INPUT_NAME", "TOKENIZER_FILE"]

TEXT_INPUT_NAME = "input_ids"
#: the tokenizer file in the export folder (the fast tokenizer's own JSON)
TOKENIZER_FILE = "tokenizer.json"
#: the dynamic-quantization scheme of text graphs (a key of writer.DYNAMIC_SCHEMES)
TEXT_INT8_SCHEME = "int8-per-channel"


class _TextEmbedder(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.network.embed(ids)


def _text_onnx_bytes(twin: TextTwin) -> bytes:
    buf = io.BytesIO()
    dummy = twin.tokenize(["an example sentence to trace the graph", "a short one"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            _TextEmbedder(twin.network).eval(), (dummy,), buf, input_names=[TEXT_INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={TEXT_INPUT_NAME: {0: "batch", 1: "tokens"}, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def _text_manifest(twin: TextTwin, cal: Calibrator | None, files: dict[str, str], quantize: str | None) -> dict[str, Any]:
    """The image manifest with the text input: token ids and the tokenizer beside them."""
    net = twin.network
    return {
        **onnx_manifest(net, cal, files, quantize,
                        None if quantize is None else dynamic_quantization_entry(TEXT_INT8_SCHEME)),
        "kind": "text",
        "input": {"name": TEXT_INPUT_NAME, "dtype": "int64", "axes": ["batch", "tokens"]},
        "text": {"tokenizer": TOKENIZER_FILE, "max_length": twin.max_length,
                 "pad_token_id": int(getattr(net.encoder, "pad_token_id", 0)), "pretrained": twin.pretrained},
    }


def export_text_onnx(model_dir: str | Path, out: str | Path, *, quantize: str | None = None) -> Path:
    """Export a text model folder to ``out`` (``model.onnx`` [+ ``model.int8.onnx``],
    ``tokenizer.json``, ``siamkit-onnx.json`` written last).

    Args:
        model_dir: a text model folder on a pretrained (fast) tokenizer.
        out: the export folder (created if needed; files in it are replaced).
        quantize: None, or ``"int8"``.

    Returns:
        The export folder.

    Raises:
        ExportError: a from-scratch twin (word tokenizer), a tokenizer without
            ``tokenizer.json``, or a network the exporter cannot write.
        ModelFileError: the folder cannot be loaded.
    """
    twin = TextTwin.load(model_dir)
    if twin.tokenizer.kind != "pretrained":
        raise ExportError("only text models on a pretrained tokenizer (hf_text) export to ONNX; "
                          "from-scratch word-tokenizer twins (rnn, transformer_seq) are not exported")
    tok_json = Path(model_dir) / "tokenizer" / TOKENIZER_FILE
    if not tok_json.is_file():
        raise ExportError(f"{tok_json} does not exist: the ONNX runtime needs a fast tokenizer's tokenizer.json")
    cal = Calibrator.load(model_dir, expected_fingerprint=getattr(twin.network, "fingerprint", None))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        fp32 = _text_onnx_bytes(twin)
    except torch.onnx.errors.OnnxExporterError as e:
        raise ExportError(f"this text network cannot be exported to ONNX: {str(e).splitlines()[0] if str(e) else e}") from None
    write_bytes_atomic(out / MODEL_FILES["fp32"], fp32)
    files = {"fp32": MODEL_FILES["fp32"]}
    if quantize == "int8":
        write_bytes_atomic(out / MODEL_FILES["int8"], quantize_int8(fp32, scheme=TEXT_INT8_SCHEME))
        files["int8"] = MODEL_FILES["int8"]
    elif (out / MODEL_FILES["int8"]).exists():
        (out / MODEL_FILES["int8"]).unlink()
    write_bytes_atomic(out / TOKENIZER_FILE, tok_json.read_bytes())
    write_json_atomic(out / MANIFEST, _text_manifest(twin, cal, files, quantize))
    return out
