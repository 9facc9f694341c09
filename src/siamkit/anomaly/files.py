"""The anomaly detector's folder: ``anomaly.json`` + ``references.npz``.

- ``anomaly.json``: format and version, the parameters, the distance, the threshold and
  where it came from, the number and dimension of the references, the fingerprint of the
  model whose embeddings they are, what they were fitted on, and the sha256 of the npz.
- ``references.npz``: ``references`` (float32 (M, D)) and, when there are more than k
  references, ``reference_scores`` (float64 (M,), the leave-one-out scores). Read with
  ``allow_pickle=False``: loading never unpickles.

Both files are written atomically (:mod:`siamkit._atomic`); the JSON is read with
:func:`siamkit.io.read_versioned_json` and the model is checked with
:func:`siamkit.io.check_fingerprint`.
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .. import __version__
from .._atomic import write_bytes_atomic, write_json_atomic
from ..errors import AnomalyError, ModelFileError
from ..io import check_fingerprint, read_versioned_json
from .knn import as_embeddings, distance_name

if TYPE_CHECKING:  # pragma: no cover
    from ..network import SiameseNetwork
    from .detector import AnomalyDetector

__all__ = [
    "DETECTOR_FILE",
    "FINGERPRINT_HINT",
    "FORMAT",
    "FORMAT_VERSION",
    "REFERENCES_FILE",
    "load_detector",
    "save_detector",
]

DETECTOR_FILE = "anomaly.json"
REFERENCES_FILE = "references.npz"
FORMAT = "siamkit-anomaly"
FORMAT_VERSION = 1
#: what to do when a detector meets another model (appended to the fingerprint mismatch)
FINGERPRINT_HINT = "; its references are another model's embeddings; refit the detector with this model"

D = TypeVar("D", bound="AnomalyDetector")


def _sha256(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


# --------------------------------------------------------------------------- write


def _record(det: AnomalyDetector, blob: bytes) -> dict[str, Any]:
    """The content of anomaly.json for a fitted detector whose npz is ``blob``."""
    dist = det.distance
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "siamkit_version": __version__,
        "params": {
            "k": int(det.k),
            "reduction": det.reduction,
            "distance": None if dist is None else distance_name(dist),
            "threshold_method": det.threshold_method,
            "quantile": float(det.quantile),
            "target_far": float(det.target_far),
            "criterion": det.criterion,
        },
        "distance": det.distance_,
        "threshold": det.threshold_,
        "threshold_source": det.threshold_source_,
        "num_references": int(det.references_.shape[0]),
        "dim": int(det.references_.shape[1]),
        "model_fingerprint": det.model_fingerprint_,
        "fitted_on": det.fitted_on_,
        "references_file": REFERENCES_FILE,
        "references_sha256": _sha256(blob),
    }


def save_detector(det: AnomalyDetector, path: str | Path) -> Path:
    """Write a fitted detector to the folder ``path`` (created if needed).

    Args:
        det: a fitted detector.
        path: the folder.

    Returns:
        The folder.

    Raises:
        AnomalyError: ``path`` exists and is not a folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AnomalyError(f"{path} exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"references": det.references_.astype(np.float32, copy=False)}
    if det.reference_scores_ is not None:
        arrays["reference_scores"] = det.reference_scores_.astype(np.float64, copy=False)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    blob = buf.getvalue()
    write_bytes_atomic(path / REFERENCES_FILE, blob)
    write_json_atomic(path / DETECTOR_FILE, _record(det, blob))
    return path


# --------------------------------------------------------------------------- read


def _read_files(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """anomaly.json (checked format) and the npz arrays (checked against its sha256)."""
    if not path.is_dir():
        raise ModelFileError(f"anomaly detector folder {path} does not exist" if not path.exists() else f"{path} is not a folder")
    jpath, npath = path / DETECTOR_FILE, path / REFERENCES_FILE
    if not jpath.is_file():
        raise ModelFileError(f"{path} is not a siamkit anomaly detector (no {DETECTOR_FILE})")
    data = read_versioned_json(jpath, fmt=FORMAT, version=FORMAT_VERSION, what="anomaly detector")
    if not npath.is_file():
        raise ModelFileError(f"{npath} is missing")
    blob = npath.read_bytes()
    want_sha = data.get("references_sha256")
    if want_sha is not None and _sha256(blob) != want_sha:
        raise ModelFileError(f"{npath} does not match {jpath} (checksum differs): the folder is damaged or mixed")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError) as e:
        raise ModelFileError(f"{npath} is not a readable npz file of float arrays ({e})") from None
    return data, arrays


def _restore(cls: type[D], data: dict[str, Any], arrays: dict[str, np.ndarray]) -> D:
    """A detector from the JSON record and the arrays; KeyError / TypeError / ValueError
    on a missing or invalid field."""
    p = data["params"]
    det = cls(
        k=int(p["k"]),
        reduction=p["reduction"],
        distance=p["distance"],
        threshold_method=p["threshold_method"],
        quantile=float(p["quantile"]),
        target_far=float(p["target_far"]),
        criterion=p.get("criterion", "far"),
    )
    det.check_params()
    refs = arrays["references"]
    if refs.dtype != np.float32 or refs.ndim != 2:
        raise ValueError(f"references must be float32 (M, D), got {refs.dtype} {refs.shape}")
    if refs.shape != (int(data["num_references"]), int(data["dim"])):
        raise ValueError(f"references have shape {refs.shape}, the JSON says ({data['num_references']}, {data['dim']})")
    det.references_ = as_embeddings(refs, name="references")
    det.distance_ = distance_name(data["distance"])
    scores = arrays.get("reference_scores")
    if scores is not None and (scores.dtype != np.float64 or scores.shape != (refs.shape[0],)):
        raise ValueError(f"reference_scores must be float64 ({refs.shape[0]},), got {scores.dtype} {scores.shape}")
    det.reference_scores_ = scores
    thr = data["threshold"]
    det.threshold_ = None if thr is None else float(thr)
    if det.threshold_ is not None and not math.isfinite(det.threshold_):
        raise ValueError(f"threshold must be finite, got {thr!r}")
    det.threshold_source_ = data.get("threshold_source")
    fp = data.get("model_fingerprint")
    det.model_fingerprint_ = None if fp is None else str(fp)
    fo = data.get("fitted_on")
    det.fitted_on_ = None if fo is None else str(fo)
    return det


def load_detector(
    cls: type[D],
    path: str | Path,
    *,
    network: SiameseNetwork | None = None,
    expected_fingerprint: str | None = None,
) -> D:
    """Read a detector folder written by :func:`save_detector` (never unpickles).

    Args:
        cls: the detector class to build (:class:`~siamkit.anomaly.AnomalyDetector`).
        path, network, expected_fingerprint: as :meth:`AnomalyDetector.load
            <siamkit.anomaly.AnomalyDetector.load>`.

    Returns:
        A ``cls``, fitted: its references, scores, threshold and model fingerprint.

    Raises:
        ModelFileError: the file or model checks of :meth:`AnomalyDetector.load
            <siamkit.anomaly.AnomalyDetector.load>` fail.
    """
    path = Path(path)
    data, arrays = _read_files(path)
    try:
        det = _restore(cls, data, arrays)
    except KeyError as e:
        raise ModelFileError(f"{path}: the detector is missing the field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: the detector has an invalid field: {e}") from None
    if network is not None:
        try:
            det.check_network(network)
        except ModelFileError as e:
            raise ModelFileError(f"{path}: {e}") from None
    elif expected_fingerprint is not None:
        check_fingerprint(det.model_fingerprint_, expected_fingerprint, where=str(path), hint=FINGERPRINT_HINT)
    return det
