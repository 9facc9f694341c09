"""Write a model folder as an ONNX export: the encoder graph + ``siamkit-onnx.json``.

The graph maps a float32 batch ``input`` (B, *input_shape) in [0, 1] to the FINAL
``embedding`` (B, D): :meth:`SiameseNetwork.embed`, L2-normalisation included when the
network normalises (unlike sentence-transformers' exports, nothing is left to do outside
but the distance). The batch axis is dynamic. The distance, the pair head's weights and
the calibration go into the manifest, which :mod:`siamkit.export.runtime` reads.

``quantize="int8"`` with ``calibration=`` (a folder of images or an array) adds
``model.int8.onnx`` by onnxruntime's STATIC quantization (:mod:`siamkit.export.quantize`:
``quant_pre_process``, then ``quantize_static`` with QDQ, per-channel QInt8 weights, QUInt8
activations, MinMax ranges over up to 200 calibration images). That is the fast int8 for
convnets (QLinearConv): see docs/benchmarks.md ("int8 export, trained models") for the
measured images/s and ROC AUC. An earlier note here said static QDQ was "no faster"
(2850 images/s): that run did not use these settings.

``quantize="int8"`` without calibration data, or ``quantize="int8-dynamic"``, is onnxruntime's
DYNAMIC quantization (``quantize_dynamic``: uint8 weights, activations quantized per batch
at run time; Conv -> ConvInteger, MatMul/Gemm -> MatMulInteger). For convnets it is SLOWER
than the fp32 graph (docs/benchmarks.md; with int8 weights ConvInteger ran conv4 3x slower
still), so plain ``"int8"`` without data warns. Text and
sequence exports always use dynamic quantization (MatMul-heavy, where it helps).
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from .._atomic import write_bytes_atomic, write_json_atomic
from ..calibration import Calibrator
from ..errors import ExportError, ModelFileError
from ..io import load_model
from ..network import SiameseNetwork
from .runtime import FORMAT, FORMAT_VERSION, INPUT_NAME, MANIFEST, MODEL_FILES, OUTPUT_NAME

__all__ = ["export_onnx", "QUANTIZE_CHOICES", "NO_CALIBRATION_WARNING", "OPSET"]

QUANTIZE_CHOICES = ("int8", "int8-dynamic")
#: the warning for ``quantize="int8"`` on an image model without calibration data
NO_CALIBRATION_WARNING = (
    "--quantize int8 without calibration data uses onnxruntime DYNAMIC quantization, which is "
    "SLOWER than fp32 for convnets; pass --calibration-data FOLDER (about 100-200 images of the "
    "kind the model sees; export_onnx(..., calibration=FOLDER_OR_ARRAY)) for static int8, or "
    "--quantize int8-dynamic to silence this warning")
OPSET = 17


class _Embedder(nn.Module):
    """The traced module: one input batch -> the network's final embedding."""

    def __init__(self, network: SiameseNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.embed(x)


def _onnx_bytes(network: SiameseNetwork, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    dummy = torch.rand(2, *shape)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the encoders' input checks are Python ifs: traced away (the runtime checks shapes)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
            torch.onnx.export(
                _Embedder(network).eval(), (dummy,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET,
                dynamo=False,
            )
    except torch.onnx.errors.OnnxExporterError as e:
        # e.g. Koch's adaptive pooling at a size whose last map is not a factor of 6x6
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExportError(f"this network cannot be exported to ONNX: {first}") from None
    return buf.getvalue()


#: the dynamic-quantization settings by scheme: ``uint8`` (per-tensor QUInt8 weights, the
#: image and sequence default) and ``int8-per-channel`` (QInt8 weights per output channel in
#: 7 bits, ``reduce_range``: the u8 x s8 MatMulInteger kernel, which cannot saturate on CPUs
#: without VNNI). For MiniLM the second ran 1.3-1.5x faster than the first at the same STS-B
#: Spearman (docs/benchmarks.md, "Text pairs: STS Benchmark").
DYNAMIC_SCHEMES: dict[str, dict[str, Any]] = {
    "uint8": {"weight_type": "QUInt8", "per_channel": False, "reduce_range": False},
    "int8-per-channel": {"weight_type": "QInt8", "per_channel": True, "reduce_range": True},
}


def _quantize_int8(fp32: bytes, *, scheme: str = "uint8") -> bytes:
    """Dynamic int8 quantization of a serialized fp32 graph (see the module docstring).

    Args:
        fp32: the serialized fp32 graph.
        scheme: a key of :data:`DYNAMIC_SCHEMES`.

    Returns:
        The serialized int8 graph.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("--quantize needs onnxruntime: pip install 'siamkit[onnx]'") from e
    opts = DYNAMIC_SCHEMES[scheme]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_dynamic(src, dst, weight_type=getattr(QuantType, opts["weight_type"]),
                         per_channel=opts["per_channel"], reduce_range=opts["reduce_range"])
        return dst.read_bytes()


def dynamic_quantization_entry(scheme: str = "uint8") -> dict[str, Any]:
    """The manifest's ``quantization`` entry of a dynamically quantized graph."""
    return {"kind": "int8", "method": "onnxruntime.quantize_dynamic", "scheme": scheme, **DYNAMIC_SCHEMES[scheme]}


def _manifest(network: SiameseNetwork, cal: Calibrator | None, files: dict[str, str], quantize: str | None,
              quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    head = None
    if network.pair_head is not None:
        head = {
            "kind": "l1",
            "weight": [float(v) for v in network.pair_head.weight.detach().reshape(-1).tolist()],
            "bias": float(network.pair_head.bias.detach().reshape(-1)[0]),
        }
    calibration = None
    if cal is not None:
        c = cal.to_dict()
        calibration = {k: c[k] for k in ("threshold", "method", "confidence", "fitted_on", "model_fingerprint")}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "siamkit_version": __version__,
        "fingerprint": getattr(network, "fingerprint", None),
        "input_spec": network.input_spec.to_dict(),
        "input": {"name": INPUT_NAME, "dtype": "float32", "range": "[0, 1] (uint8 / 255)", "batch_axis": 0},
        "output": {"name": OUTPUT_NAME, "final": True},
        "embedding_dim": network.embedding_dim,
        "distance": network.distance.name,
        "normalize": network.normalize,
        "head": head,
        "calibration": calibration,
        "models": files,
        "opset": OPSET,
        "quantization": quantization if quantization is not None else (
            None if quantize is None else dynamic_quantization_entry()),
    }


# public for export/text_writer.py (the text export's graph and manifest differ only in the input)
quantize_int8 = _quantize_int8
onnx_manifest = _manifest
#: the traced module (one input batch -> the final embedding), for export/seq_writer.py too
EmbedderModule = _Embedder


def write_graphs(out: Path, fp32: bytes, quantize: str | None, int8: bytes | None = None) -> dict[str, str]:
    """Write ``model.onnx`` (+ ``model.int8.onnx``, else remove a stale one) into ``out``.

    Args:
        out: the export folder.
        fp32: the serialized fp32 graph.
        quantize: None, ``"int8"`` or ``"int8-dynamic"``.
        int8: an already quantized graph (static); None quantizes ``fp32`` dynamically.

    Returns:
        The manifest's ``models`` entry (precision -> file name).
    """
    write_bytes_atomic(out / MODEL_FILES["fp32"], fp32)
    files = {"fp32": MODEL_FILES["fp32"]}
    if quantize in QUANTIZE_CHOICES:
        write_bytes_atomic(out / MODEL_FILES["int8"], int8 if int8 is not None else _quantize_int8(fp32))
        files["int8"] = MODEL_FILES["int8"]
    elif (out / MODEL_FILES["int8"]).exists():
        (out / MODEL_FILES["int8"]).unlink()  # a stale int8 graph of another export
    return files


def export_onnx(model_dir: str | Path, out: str | Path, *, quantize: str | None = None,
                calibration: Any = None) -> Path:
    """Export a model folder to ``out``: ``model.onnx`` (+ ``model.int8.onnx``) and
    ``siamkit-onnx.json`` (written last, so a folder with a manifest is complete).

    Args:
        model_dir: a model folder (its calibration.json, if any, is checked against the
            weights' fingerprint and copied into the manifest).
        out: the export folder (created if needed; files in it are replaced).
        quantize: None; ``"int8"`` to add an int8 graph (static with ``calibration``,
            else dynamic with a :class:`UserWarning` for image models); ``"int8-dynamic"``
            for dynamic quantization without the warning.
        calibration: image models with ``quantize="int8"``: a folder of images (read with
            the model's input recipe, up to 200 evenly spaced) or an array (N, *shape),
            uint8 or float in [0, 1]. Text and sequence exports take none.

    Returns:
        The export folder.

    Raises:
        ModelFileError: the model folder cannot be loaded, its calibration does not
            belong to it, or it records no input shape.
        ExportError: the network uses an operation the ONNX exporter cannot write (e.g.
            Koch's encoder at a size whose last feature map does not divide 6x6).
        DataError: a calibration folder that does not exist, has no images or an
            unreadable one; a calibration array of the wrong shape.
        ValueError: an unknown ``quantize``; ``calibration`` without ``quantize="int8"``
            or for a text / sequence model.
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {list(QUANTIZE_CHOICES)} or None, got {quantize!r}")
    if calibration is not None and quantize != "int8":
        raise ValueError(f"calibration data is for quantize='int8' (static), got quantize={quantize!r}")
    from ..text import is_text_model, text_settings

    if is_text_model(model_dir) and calibration is not None:
        raise ValueError("calibration data is for image models: text and sequence exports use dynamic int8")
    explicit_dynamic = quantize == "int8-dynamic"
    if explicit_dynamic:
        quantize = "int8"  # dynamic below; the text / sequence writers: always dynamic

    if is_text_model(model_dir) and (text_settings(model_dir) or {}).get("tokenizer") == "word":
        from .seq_writer import export_sequence_onnx  # a from-scratch twin: rnn / transformer_seq

        return export_sequence_onnx(model_dir, out, quantize=quantize)
    if is_text_model(model_dir):  # token ids in, the tokenizer beside the graph
        from .text_writer import export_text_onnx

        return export_text_onnx(model_dir, out, quantize=quantize)
    network = load_model(model_dir).eval()
    cal = Calibrator.load(model_dir, expected_fingerprint=getattr(network, "fingerprint", None))
    shape = tuple(network.input_spec.shape)
    if not shape:
        raise ModelFileError(f"{model_dir} records no input shape: it cannot be exported")
    fp32, int8, info = _onnx_bytes(network, shape), None, None
    if quantize == "int8" and calibration is not None:
        from .quantize import calibration_batch, quantize_static_int8

        int8, info = quantize_static_int8(fp32, calibration_batch(calibration, network.input_spec))
    elif quantize == "int8" and network.input_spec.is_image and not explicit_dynamic:
        warnings.warn(NO_CALIBRATION_WARNING, UserWarning, stacklevel=2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = write_graphs(out, fp32, quantize, int8)
    write_json_atomic(out / MANIFEST, _manifest(network, cal, files, quantize, info))
    return out
