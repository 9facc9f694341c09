"""Deployment-side verifier for an ONNX export: numpy + onnxruntime, no torch.

An export folder (written by :func:`siamkit.export.writer.export_onnx`) holds
``model.onnx`` (fp32), optionally ``model.int8.onnx``, and ``siamkit-onnx.json``: the
input spec, the distance, the pair head's weights and the calibration. The ONNX graph
gives the FINAL embedding (L2-normalised inside the graph when the network normalises);
distances, scores, decisions and confidences are computed here in numpy exactly as
:mod:`siamkit.distances`, :class:`siamkit.verify.Verifier` and
:class:`siamkit.calibration.Calibrator` compute them.

The manifest's ``input_spec`` is the model's whole input recipe: :meth:`OnnxVerifier.embed_files`
prepares files with the one prepare function (:func:`siamkit.data.prepare.prepare_array`:
channels, preprocessing steps, resize) and :meth:`OnnxVerifier.embed` applies the spec's
test-time augmentation, so an export embeds a raw file as the model folder does.

Importing this module does not import torch (tested): it uses only numpy, PIL, the
standard library and the torch-free :mod:`siamkit.versioned`, :mod:`siamkit.decision`,
:mod:`siamkit.errors`, :mod:`siamkit.input_spec` and :mod:`siamkit.data.prepare`;
onnxruntime is imported when a session is opened.

Example:
    >>> from siamkit.export.runtime import OnnxVerifier       # doctest: +SKIP
    >>> v = OnnxVerifier.from_dir("exports/faces")             # doctest: +SKIP
    >>> v.verify(img_a, img_b).same                            # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..data.prepare import prepare_array
from ..decision import PairDecision
from ..errors import DataError, ModelFileError
from ..input_spec import InputSpec
from ..versioned import read_versioned_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "MODEL_FILES",
    "DISTANCE_NAMES",
    "OnnxVerifier",
    "paired_distance",
    "distance_to_score",
    "tta_views",
]

FORMAT = "siamkit-onnx"
FORMAT_VERSION = 1
MANIFEST = "siamkit-onnx.json"
#: precision -> file name in the export folder
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
DISTANCE_NAMES = ("euclidean", "sqeuclidean", "cosine", "l1")
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"

_EPS = 1e-12  # siamkit.distances' eps (sqrt clamp, cosine normalisation)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.sqrt((x * x).sum(1, keepdims=True)), np.float32(_EPS))


def paired_distance(name: str, e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """Row-wise distance, lower = closer, as :meth:`siamkit.distances.BaseDistance.paired`.

    Args:
        name: ``euclidean``, ``sqeuclidean``, ``cosine`` or ``l1``.
        e1: embeddings, float32.
        e2: embeddings compared row by row with ``e1``.

    Shapes:
        e1 (N, D), e2 (N, D) -> (N,).

    Returns:
        float32 distances (computed in float32, as torch computes them).

    Raises:
        ValueError: an unknown distance, or shapes that differ.
    """
    e1 = np.asarray(e1, dtype=np.float32)
    e2 = np.asarray(e2, dtype=np.float32)
    if e1.ndim != 2 or e1.shape != e2.shape:
        raise ValueError(f"paired distance needs two (N, D) arrays of one shape, got {e1.shape} and {e2.shape}")
    if name in ("euclidean", "sqeuclidean"):
        d2 = ((e1 - e2) ** 2).sum(1)
        if name == "sqeuclidean":
            return d2
        return np.where(d2 <= _EPS, np.float32(0.0), np.sqrt(np.maximum(d2, np.float32(_EPS)))).astype(np.float32)
    if name == "cosine":
        return (np.float32(1.0) - (_unit(e1) * _unit(e2)).sum(1)).astype(np.float32)
    if name == "l1":
        return np.abs(e1 - e2).sum(1)
    raise ValueError(f"unknown distance {name!r}; choose one of {list(DISTANCE_NAMES)}")


def distance_to_score(name: str, distance: np.ndarray) -> np.ndarray:
    """Display score, higher = more similar, as :meth:`BaseDistance.to_score`.

    Args:
        name: the distance's name (``cosine``: ``1 - d/2``; the others ``1 / (1 + d)``).
        distance: distances, lower = closer.

    Shapes:
        distance (...) -> float64 (...).

    Returns:
        The scores.
    """
    d = np.asarray(distance, dtype=np.float64)
    return 1.0 - d / 2.0 if name == "cosine" else 1.0 / (1.0 + d)


def tta_views(x: np.ndarray, tta: str | None) -> list[np.ndarray]:
    """The views of :func:`siamkit.inference.embed_all`'s test-time augmentation, in numpy:
    the batch, its four 1-pixel shifts (edges replicated) for ``"shift"``, and the mirror
    image of each for ``"flip"``.

    Args:
        x: images.
        tta: None, ``"shift"``, ``"flip"`` or ``"shift+flip"``.

    Shapes:
        x (B, C, H, W) -> a list of (B, C, H, W).

    Returns:
        The views (the batch itself first).
    """
    views = [x]
    if tta is not None and "shift" in tta:
        h, w = x.shape[-2:]
        pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        views += [pad[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    if tta is not None and "flip" in tta:
        views += [v[..., ::-1] for v in views]
    return views


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ModelFileError(f"{MANIFEST}: {what} must be a finite number, got {value!r}")
    return float(value)


def _parse_head(head: Any, dim: int) -> tuple[np.ndarray, float] | None:
    if head is None:
        return None
    try:
        w = np.asarray(head["weight"], dtype=np.float32)
        b = _number(head["bias"], "head.bias")
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{MANIFEST}: the pair head is invalid ({e})") from None
    if w.shape != (dim,) or not np.isfinite(w).all():
        raise ModelFileError(f"{MANIFEST}: the pair head needs {dim} finite weights, got shape {w.shape}")
    return w, b


def _parse_calibration(cal: Any) -> dict[str, Any] | None:
    if cal is None:
        return None
    try:
        out: dict[str, Any] = {"threshold": _number(cal["threshold"], "calibration.threshold")}
        conf = cal["confidence"]
        out["kind"] = conf["kind"]
        if conf["kind"] == "platt":
            out["a"], out["b"] = _number(conf["a"], "confidence.a"), _number(conf["b"], "confidence.b")
        elif conf["kind"] == "isotonic":
            out["x"] = np.asarray(conf["x"], dtype=np.float64)
            out["y"] = np.asarray(conf["y"], dtype=np.float64)
            if out["x"].ndim != 1 or out["x"].shape != out["y"].shape or out["x"].size == 0:
                raise ValueError("isotonic x and y must be non-empty lists of equal length")
        else:
            raise ValueError(f"unknown confidence kind {conf['kind']!r}")
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{MANIFEST}: the calibration is invalid ({e})") from None
    return out


class OnnxVerifier:
    """An exported encoder plus its manifest: pairs in, :class:`PairDecision` out.

    Build it with :meth:`from_dir`. Inputs are numpy arrays shaped like the model's
    input spec, uint8 (scaled to [0, 1]) or float in [0, 1].

    Attributes:
        folder: the export folder.
        manifest: the parsed ``siamkit-onnx.json``.
        precision: ``"fp32"`` or ``"int8"``, the graph in use.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], session: Any, precision: str) -> None:
        self.folder = folder
        self.manifest = manifest
        self.precision = precision
        self.session = session
        try:
            self.input_shape = tuple(int(s) for s in manifest["input_spec"]["shape"])
            self.input_spec = InputSpec.from_dict(manifest["input_spec"])
            self.normalize = bool(manifest.get("normalize", False))
            self.distance_name = str(manifest["distance"])
            self.embedding_dim = int(manifest["embedding_dim"])
            self.head = _parse_head(manifest.get("head"), self.embedding_dim)
            self.calibration = _parse_calibration(manifest.get("calibration"))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"{folder / MANIFEST} is missing or has an invalid field ({e})") from None
        if self.distance_name not in DISTANCE_NAMES:
            raise ModelFileError(f"{folder / MANIFEST}: unknown distance {self.distance_name!r}")

    @classmethod
    def from_dir(cls, folder: str | Path, *, precision: str | None = "auto", threads: int | None = None) -> "OnnxVerifier":
        """Open an export folder.

        Args:
            folder: the folder written by ``siamkit export``.
            precision: ``"auto"`` (or None, the default) takes the int8 graph when the
                folder has one, else fp32; ``"fp32"`` always the fp32 graph (every export
                has it); ``"int8"`` the int8 graph (a ModelFileError when there is none).
            threads: onnxruntime's intra-op threads (None: its default).

        Returns:
            The verifier.

        Raises:
            ModelFileError: no such folder, no manifest, a manifest of another format or
                format version, the export of a text (or other non-image) model, a missing or
                unreadable ONNX file.
            ImportError: onnxruntime is not installed (``pip install siamkit[onnx]``).
            ValueError: an unknown ``precision``.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelFileError(f"export folder {folder} does not exist")
        if not (folder / MANIFEST).is_file():
            raise ModelFileError(f"{folder} is not a siamkit ONNX export (no {MANIFEST}): run `siamkit export` first")
        manifest = read_versioned_json(folder / MANIFEST, fmt=FORMAT, version=FORMAT_VERSION, what="ONNX export")
        kind = manifest.get("kind", "image")  # image exports record no kind
        if kind != "image":
            how = " (open it with siamkit.export.text_runtime.OnnxTextEncoder)" if kind == "text" else ""
            raise ModelFileError(f"{folder} is the export of a {kind} model, not an image model{how}: "
                                 "OnnxVerifier takes image exports only")
        files = manifest.get("models")
        if not isinstance(files, dict) or "fp32" not in files:
            raise ModelFileError(f"{folder / MANIFEST} lists no fp32 model")
        if precision not in (None, "auto", "fp32", "int8"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'int8', got {precision!r}")
        if precision in (None, "auto"):
            precision = "int8" if "int8" in files else "fp32"
        if precision not in files:
            raise ModelFileError(f"{folder} has no {precision} model (it has: {', '.join(sorted(files))})")
        path = folder / str(files[precision])
        if not path.is_file():
            raise ModelFileError(f"{path} does not exist")
        return cls(folder, manifest, _open_session(path, threads), precision)

    @property
    def distance_kind(self) -> str:
        """What :meth:`distances` returns, in words (as ``siamkit compare`` prints it)."""
        return "negative pair-head logit" if self.head is not None else f"{self.distance_name} distance"

    def embed_files(self, paths: list[Any]) -> np.ndarray:
        """Embeddings of raw image files (or bytes), each prepared by the model's input
        recipe (:func:`siamkit.data.prepare.prepare_array`) and embedded with its TTA.

        Args:
            paths: image files (or encoded bytes).

        Shapes:
            -> (N, D) float32.

        Returns:
            The embeddings, as the model folder gives them for the same files.

        Raises:
            DataError: the export is not of an image model, or a file cannot be read.
        """
        return self.embed(np.stack([prepare_array(p, self.input_spec) for p in paths]))

    def verify_files(self, path_a: Any, path_b: Any) -> PairDecision:
        """Two raw image files, prepared by the model's input recipe.

        Args:
            path_a: the first image file (or its bytes).
            path_b: the second.

        Returns:
            The :class:`PairDecision`.
        """
        e = self.embed_files([path_a, path_b])
        return self.decide(self.embedding_distance(e[:1], e[1:]))[0]

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Final embeddings of a batch (normalised when the network normalises), with the
        input spec's test-time augmentation (the mean over its views, re-normalised).

        Args:
            batch: inputs shaped like the input spec, uint8 or float in [0, 1].

        Shapes:
            batch (B, *input_shape) -> (B, D) float32.

        Returns:
            The embeddings.

        Raises:
            DataError: the batch does not have the model's input shape.
        """
        x = np.asarray(batch)
        if tuple(x.shape[1:]) != self.input_shape or x.ndim != len(self.input_shape) + 1:
            raise DataError(f"the model takes (B, {', '.join(map(str, self.input_shape))}) inputs, got {x.shape}")
        x = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32)
        tta = self.input_spec.tta if x.ndim == 4 else None
        if tta is None:
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x)})[0]
        views = tta_views(x, tta)
        e = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(np.concatenate(views))})[0]
        e = e.reshape(len(views), x.shape[0], -1).mean(0, dtype=np.float32)
        return _unit(e).astype(np.float32) if self.normalize else e

    def embedding_distance(self, e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
        """Distances of paired embeddings (a pair head: ``-(w . |e1 - e2| + b)``).

        Args:
            e1: the first embedding of each pair.
            e2: the second embedding of each pair.

        Shapes:
            e1 (B, D), e2 (B, D) -> (B,) float32.

        Returns:
            The distances, lower = closer.
        """
        if self.head is None:
            return paired_distance(self.distance_name, e1, e2)
        w, b = self.head
        diff = np.abs(np.asarray(e1, dtype=np.float32) - np.asarray(e2, dtype=np.float32))
        return -(diff @ w + np.float32(b)).astype(np.float32)

    def distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distances of paired batches (both embedded in one run).

        Args:
            a: the first input of each pair.
            b: the second input of each pair, shaped like ``a``.

        Shapes:
            a (B, ...), b (B, ...) -> (B,).

        Returns:
            float32 distances, lower = closer.

        Raises:
            DataError: the inputs differ in shape or do not fit the model.
        """
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise DataError(f"the two inputs differ in shape: {a.shape} and {b.shape}")
        e = self.embed(np.concatenate([a, b]))
        return self.embedding_distance(e[: len(a)], e[len(a) :])

    def decide(self, distances: np.ndarray) -> list[PairDecision]:
        """Scores, and decisions and confidences when the export is calibrated.

        Args:
            distances: distances from :meth:`distances`.

        Shapes:
            distances (B,) -> B decisions.

        Returns:
            One :class:`PairDecision` per distance.
        """
        d = np.asarray(distances, dtype=np.float64).reshape(-1)
        scores = _sigmoid(-d) if self.head is not None else distance_to_score(self.distance_name, d)
        cal = self.calibration
        out = []
        for i, dist in enumerate(d.tolist()):
            r = PairDecision(distance=dist, score=float(scores[i]))
            if cal is not None:
                r.same = bool(dist <= cal["threshold"])
                if cal["kind"] == "platt":
                    r.confidence = float(_sigmoid(cal["a"] * dist + cal["b"]))
                else:
                    r.confidence = float(np.interp(dist, cal["x"], cal["y"]))
                r.threshold = cal["threshold"]
            out.append(r)
        return out

    def verify(self, a: np.ndarray, b: np.ndarray) -> PairDecision:
        """One pair of inputs without a batch dimension.

        Args:
            a: the first input, shaped like the input spec.
            b: the second input, shaped like ``a``.

        Shapes:
            a (C, H, W) or (F,), b the same -> one decision.

        Returns:
            The :class:`PairDecision` (the fields of :class:`siamkit.verify.Verifier`'s).
        """
        return self.decide(self.distances(np.asarray(a)[None], np.asarray(b)[None]))[0]


def _open_session(path: Path, threads: int | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the ONNX runtime needs onnxruntime: pip install 'siamkit[onnx]'") from e
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own (non-public) exception types
        raise ModelFileError(f"{path} is not a loadable ONNX model ({type(e).__name__}: {e})") from None


open_session = _open_session  # public for export/text_runtime.py
