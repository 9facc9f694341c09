"""Encode and compare texts with a text model's ONNX export: numpy, onnxruntime and
``tokenizers`` only (never torch nor transformers).

``OnnxTextEncoder.from_dir(EXPORT)`` reads the manifest that
:func:`siamkit.export.text_writer.export_text_onnx` wrote, tokenises with the export's
``tokenizer.json`` (truncated to the model's max length, padded with its pad id: the ids
the torch model sees) and runs the int8 graph when the folder has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError, ModelFileError
from ..versioned import read_versioned_json
from .runtime import FORMAT, FORMAT_VERSION, MANIFEST, open_session

__all__ = ["OnnxTextEncoder"]

#: texts tokenised (and sorted by token count) at a time by :meth:`OnnxTextEncoder.encode`
ENCODE_CHUNK = 4096


def _load_tokenizer(path: Path, max_length: int, pad_id: int) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the ONNX text runtime needs tokenizers: pip install 'siamkit[onnx]' tokenizers") from e
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own exception type
        raise ModelFileError(f"cannot read the tokenizer {path}: {e}") from None
    tok.enable_truncation(max_length=max_length)
    pad_token = tok.id_to_token(pad_id) or "[PAD]"
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tok


class OnnxTextEncoder:
    """A text model's ONNX export: texts in, final embeddings / cosine similarities out.

    Build it with :meth:`from_dir`.

    Attributes:
        folder: the export folder.
        manifest: the parsed ``siamkit-onnx.json``.
        precision: ``"fp32"`` or ``"int8"``, the graph in use.
        max_length: the most tokens per text.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], session: Any, tokenizer: Any, precision: str) -> None:
        self.folder, self.manifest, self.session, self.tokenizer, self.precision = folder, manifest, session, tokenizer, precision
        self.max_length = int(manifest["text"]["max_length"])
        self.input_name = str(manifest["input"]["name"])
        self.embedding_dim = int(manifest["embedding_dim"])
        self.pad_id = int(manifest["text"].get("pad_token_id", 0))

    @classmethod
    def from_dir(cls, folder: str | Path, *, precision: str | None = None, threads: int | None = None) -> OnnxTextEncoder:
        """Open a text model's export folder.

        Args:
            folder: written by ``siamkit export`` from a text model.
            precision: ``"fp32"`` or ``"int8"``; None takes int8 when there is one.
            threads: onnxruntime's intra-op threads (None: its default).

        Returns:
            The encoder.

        Raises:
            ModelFileError: not a text model's export, or a missing / damaged file.
        """
        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise ModelFileError(f"{folder} is not a siamkit ONNX export (no {MANIFEST}): run `siamkit export` first")
        manifest = read_versioned_json(folder / MANIFEST, fmt=FORMAT, version=FORMAT_VERSION, what="ONNX export")
        text = manifest.get("text")
        if manifest.get("kind") != "text" or not isinstance(text, dict):
            raise ModelFileError(f"{folder} is the export of an image model, not a text model")
        files = manifest.get("models") or {}
        precision = precision or ("int8" if "int8" in files else "fp32")
        if precision not in files or not (folder / str(files[precision])).is_file():
            raise ModelFileError(f"{folder} has no {precision} model")
        try:
            tokenizer = _load_tokenizer(folder / str(text["tokenizer"]), int(text["max_length"]), int(text["pad_token_id"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"{folder / MANIFEST} has an invalid text entry ({e})") from None
        return cls(folder, manifest, open_session(folder / str(files[precision]), threads), tokenizer, precision)

    def token_ids(self, texts: Sequence[str]) -> np.ndarray:
        """Padded int64 ids (B, L) of ``texts``, as the torch model's tokenizer gives them."""
        if isinstance(texts, str):
            raise DataError("pass a list of texts, not one string")
        return np.asarray([e.ids for e in self.tokenizer.encode_batch(list(texts))], dtype=np.int64)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Embed texts in batches of similar token count (less padding), in input order.

        Args:
            texts: the texts.
            batch_size: texts per run.

        Returns:
            float32 (N, D) embeddings.
        """
        texts = list(texts)
        out = np.zeros((len(texts), self.embedding_dim), np.float32)
        for c in range(0, len(texts), ENCODE_CHUNK):  # as TextTwin.encode: sorted by token count
            ids = self.token_ids(texts[c : c + ENCODE_CHUNK])
            real = ids != self.pad_id
            order = np.argsort(-real.sum(1), kind="stable")
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                used = real[idx].any(0)
                out[c + idx] = self.session.run(None, {self.input_name: ids[idx][:, used]})[0]
        return out

    def similarity(self, texts_a: Sequence[str], texts_b: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Cosine similarity of each pair.

        Args:
            texts_a: the first texts.
            texts_b: as many second texts.
            batch_size: texts per run.

        Returns:
            (N,) float64 cosine similarities.
        """
        if len(texts_a) != len(texts_b):
            raise DataError(f"{len(texts_a)} first texts but {len(texts_b)} second texts")
        a = self.encode(texts_a, batch_size=batch_size).astype(np.float64)
        b = self.encode(texts_b, batch_size=batch_size).astype(np.float64)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return (a * b).sum(axis=1) / np.maximum(den, 1e-12)
