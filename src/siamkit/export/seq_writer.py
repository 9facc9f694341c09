"""Export a from-scratch text twin (word tokenizer + ``rnn`` / ``transformer_seq``) to ONNX.

The graph maps ``input_ids`` (B, L) -- both axes dynamic, right-padded with id 0, the
padding mask derived inside the graph as ``ids != 0`` -- to the FINAL embedding (B, D)
(:meth:`SiameseNetwork.embed`, L2-normalisation included). The export folder has the
same layout as a pretrained text model's (:mod:`siamkit.export.text_writer`), so
:class:`siamkit.export.text_runtime.OnnxTextEncoder` runs it unchanged (numpy,
onnxruntime and ``tokenizers``, no torch): the word vocabulary is written as a
``tokenizers`` ``tokenizer.json`` (lower-casing normaliser, whitespace split then the
word tokenizer's ``\\w+|[^\\w\\s]`` pattern, a word-level model with ``[UNK]``, ``[CLS]``
prepended) whose ids equal :class:`siamkit.text.tokenizer.WordTokenizer`'s. The word
tokenizer's own file goes beside it as ``word_vocab.json``, read by
:class:`siamkit.export.seq_runtime.OnnxWordEncoder` (numpy + onnxruntime only); a tokenizer
with hash buckets for unknown words gets only that file (``tokenizers`` cannot hash).

How the graphs are written: the GRU / LSTM runs on packed sequences in torch, which the
TorchScript exporter writes as ONNX ``GRU`` / ``LSTM`` nodes with ``sequence_lens`` (the
lengths come from the mask, so padding never reaches a state). The Transformer's
``nn.TransformerEncoder`` is swapped, in a copy of the network, for :class:`_ExplicitEncoder`:
the same layers' weights applied op by op (the fused attention kernel has no ONNX form, and
tracing ``nn.MultiheadAttention`` bakes the example's token count into a reshape, so
another length fails in onnxruntime). The test checks both against torch at other batch
sizes and lengths. ``quantize="int8"`` adds onnxruntime's
dynamic quantization of the MatMul / Gemm weights (:func:`siamkit.export.writer.quantize_int8`).
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._atomic import write_bytes_atomic, write_json_atomic
from ..calibration import Calibrator
from ..errors import ExportError
from ..text.model import TextTwin
from ..text.tokenizer import CLS, PAD, UNK, WordTokenizer
from .runtime import MANIFEST, OUTPUT_NAME
from .seq_runtime import WORD_VOCAB_FILE
from .writer import OPSET, EmbedderModule, onnx_manifest, write_graphs

__all__ = ["export_sequence_onnx", "word_tokenizer_json", "SEQ_INPUT_NAME", "SEQ_TOKENIZER_FILE"]

#: the same names as the pretrained text export's, so one runtime reads both
SEQ_INPUT_NAME = "input_ids"
SEQ_TOKENIZER_FILE = "tokenizer.json"
_PATTERN = r"\w+|[^\w\s]"


def word_tokenizer_json(tokenizer: WordTokenizer) -> str:
    """The word vocabulary as a ``tokenizers`` JSON file with the same ids.

    Args:
        tokenizer: a fitted word tokenizer.

    Returns:
        The ``tokenizer.json`` text.

    Raises:
        ImportError: ``tokenizers`` is not installed (``pip install 'siamkit[text-onnx]'``).
    """
    try:
        from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("exporting a word-tokenizer twin needs tokenizers: pip install 'siamkit[text-onnx]'") from e
    tok = Tokenizer(models.WordLevel(vocab=dict(tokenizer.vocab_), unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(_PATTERN), behavior="isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(single=f"{CLS} $A", special_tokens=[(CLS, tokenizer.vocab_[CLS])])
    tok.add_special_tokens([PAD, UNK, CLS])
    return tok.to_str()


class _ExplicitEncoder(nn.Module):
    """``nn.TransformerEncoder``'s forward written out with its own layers' weights
    (self-attention as matmuls and a softmax over the unpadded keys)."""

    def __init__(self, encoder: nn.TransformerEncoder) -> None:
        super().__init__()
        self.layers, self.norm = encoder.layers, encoder.norm

    @staticmethod
    def _attention(layer: nn.TransformerEncoderLayer, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        attn = layer.self_attn
        heads = attn.num_heads
        head_dim = attn.embed_dim // heads
        b = x.shape[0]
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, -1, attn.embed_dim)
        return attn.out_proj(out)

    @staticmethod
    def _feed_forward(layer: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
        return layer.linear2(layer.activation(layer.linear1(x)))

    def forward(self, src: torch.Tensor, src_key_padding_mask: torch.Tensor) -> torch.Tensor:
        x = src
        for layer in self.layers:
            if layer.norm_first:
                x = x + self._attention(layer, layer.norm1(x), src_key_padding_mask)
                x = x + self._feed_forward(layer, layer.norm2(x))
            else:
                x = layer.norm1(x + self._attention(layer, x, src_key_padding_mask))
                x = layer.norm2(x + self._feed_forward(layer, x))
        return x if self.norm is None else self.norm(x)


def _exportable(network: nn.Module) -> nn.Module:
    """``network``, or a copy whose Transformer encoder is the explicit one."""
    if not isinstance(getattr(network.encoder, "encoder", None), nn.TransformerEncoder):
        return network
    net = copy.deepcopy(network)
    net.encoder.encoder = _ExplicitEncoder(net.encoder.encoder)
    return net


def _seq_onnx_bytes(twin: TextTwin) -> bytes:
    buf = io.BytesIO()
    dummy = twin.tokenize(["an example sentence to trace the graph with", "a short one"])
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the encoders' Python shape checks
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(
                EmbedderModule(_exportable(twin.network)).eval(), (dummy,), buf, input_names=[SEQ_INPUT_NAME],
                output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                dynamic_axes={SEQ_INPUT_NAME: {0: "batch", 1: "tokens"}, OUTPUT_NAME: {0: "batch"}},
            )
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as e:
        raise ExportError(f"this sequence network cannot be exported to ONNX: {str(e).splitlines()[0] if str(e) else e}") from None
    return buf.getvalue()


def _seq_manifest(twin: TextTwin, cal: Calibrator | None, files: dict[str, str], quantize: str | None) -> dict[str, Any]:
    enc, tok = twin.network.encoder, twin.tokenizer
    hashed = isinstance(tok, WordTokenizer) and tok.hash_buckets > 0
    return {
        **onnx_manifest(twin.network, cal, files, quantize),
        "kind": "text",
        "input": {"name": SEQ_INPUT_NAME, "dtype": "int64", "axes": ["batch", "tokens"], "padding": "right, id 0"},
        "text": {"tokenizer": WORD_VOCAB_FILE if hashed else SEQ_TOKENIZER_FILE, "word_vocab": WORD_VOCAB_FILE,
                 "hash_buckets": tok.hash_buckets, "max_length": twin.max_length, "pad_token_id": 0, "pretrained": None,
                 "tokenizer_kind": "word", "encoder": getattr(enc, "encoder_name", type(enc).__name__)},
    }


def export_sequence_onnx(model_dir: str | Path, out: str | Path, *, quantize: str | None = None) -> Path:
    """Export a from-scratch text model folder to ``out`` (``model.onnx`` [+
    ``model.int8.onnx``], ``tokenizer.json``, ``siamkit-onnx.json`` written last).

    Args:
        model_dir: a text model folder on the word tokenizer (``rnn`` / ``transformer_seq``).
        out: the export folder (created if needed; files in it are replaced).
        quantize: None, or ``"int8"``.

    Returns:
        The export folder.

    Raises:
        ExportError: not a word-tokenizer model, or a network the exporter cannot write.
        ModelFileError: the folder cannot be loaded.
    """
    twin = TextTwin.load(model_dir)
    if not isinstance(twin.tokenizer, WordTokenizer):
        raise ExportError(f"{model_dir} is not a from-scratch (word tokenizer) text model")
    cal = Calibrator.load(model_dir, expected_fingerprint=getattr(twin.network, "fingerprint", None))
    hashed = twin.tokenizer.hash_buckets > 0
    tokenizer_json = None if hashed else word_tokenizer_json(twin.tokenizer)  # tokenizers cannot hash
    fp32 = _seq_onnx_bytes(twin)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = write_graphs(out, fp32, quantize)
    twin.tokenizer.save(out)  # the model folder's tokenizer.json ...
    (out / "tokenizer.json").replace(out / WORD_VOCAB_FILE)  # ... as word_vocab.json (OnnxWordEncoder)
    if tokenizer_json is not None:
        write_bytes_atomic(out / SEQ_TOKENIZER_FILE, tokenizer_json.encode("utf-8"))
    elif (out / SEQ_TOKENIZER_FILE).exists():
        (out / SEQ_TOKENIZER_FILE).unlink()
    write_json_atomic(out / MANIFEST, _seq_manifest(twin, cal, files, quantize))
    return out
