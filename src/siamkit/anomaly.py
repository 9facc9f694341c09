"""Anomaly detection: the distance to the k nearest normal references.

An :class:`AnomalyDetector` is fitted on *normal* samples only (their embeddings are
the references). The anomaly score of a new sample is a reduction (mean, max / k-th,
median) of its distances to its k nearest references: **higher = more anomalous**
(a distance, so lower = closer = more normal).

The decision threshold comes from

- ``threshold_method="quantile"``: the ``quantile`` of the references' *leave-one-out*
  scores (each reference scored against the other references, never against itself),
  so that about ``1 - quantile`` of normal samples are flagged; or
- ``threshold_method="labelled"``: :meth:`AnomalyDetector.fit_threshold` on a labelled
  validation set (normal and anomalous samples), either the threshold that flags at
  most ``target_far`` of the normal samples while catching as many anomalies as
  possible (``criterion="far"``), or the equal-error-rate threshold (``criterion="eer"``),
  both via :mod:`siamkit.evaluation.verification`.

A sample is flagged as anomalous when ``score > threshold_``.

The k-NN search is exact. For euclidean, sqeuclidean and cosine distances FAISS
(``IndexFlatL2`` / ``IndexFlatIP``) finds a few more candidates than needed, whose
distances are then recomputed exactly in float64 (FAISS's float32 expansion
``|x|^2 + |y|^2 - 2 x.y`` loses precision for near-identical rows); the l1 distance uses
chunked ``torch.cdist`` in float64.

A fitted detector is saved as a folder: ``anomaly.json`` (parameters, threshold, the
fingerprint of the model whose embeddings it holds, versions) and ``references.npz``
(float32 reference embeddings and their float64 leave-one-out scores; read with
``allow_pickle=False``).

Example:
    >>> import numpy as np
    >>> from siamkit.anomaly import AnomalyDetector
    >>> rng = np.random.default_rng(0)
    >>> normal = rng.normal(size=(200, 8)).astype(np.float32)
    >>> det = AnomalyDetector(k=5, quantile=0.95).fit(normal)
    >>> bool(det.score(np.zeros((1, 8)))[0] < det.score(np.full((1, 8), 6.0))[0])
    True
    >>> det.predict(np.full((1, 8), 6.0)).tolist()
    [True]
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from . import __version__
from .distances import DISTANCES, BaseDistance, get_distance
from .errors import DataError, ModelFileError, SiamkitError
from .evaluation.verification import (
    _as_distances,
    equal_error_rate,
    min_negatives_for_far,
    tar_at_far,
)
from .io import write_json_atomic
from .errors import AnomalyError, NotFittedError

if TYPE_CHECKING:  # pragma: no cover
    from .network import SiameseNetwork

__all__ = [
    "DETECTOR_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "REFERENCES_FILE",
    "AnomalyDetector",
    "AnomalyError",
    "NotFittedError",
    "anomaly_metrics",
    "knn_distances",
]

logger = logging.getLogger(__name__)

DETECTOR_FILE = "anomaly.json"
REFERENCES_FILE = "references.npz"
FORMAT = "siamkit-anomaly"
FORMAT_VERSION = 1

REDUCTIONS = ("mean", "max", "kth", "median")
THRESHOLD_METHODS = ("quantile", "labelled")
CRITERIA = ("far", "eer")
_FAISS_METRICS = ("euclidean", "sqeuclidean", "cosine")
_EPS = 1e-12  # as siamkit.distances: cosine of a zero vector is 0
_CHUNK = 1 << 22  # float64 values per chunk in the exact k-NN (32 MB)


# --------------------------------------------------------------------------- input checks


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_embeddings(x: Any, *, name: str, dim: int | None = None, allow_empty: bool = False) -> np.ndarray:
    """C-contiguous float32 (N, D); DataError on a bad shape, dtype, emptiness or NaN/inf."""
    a = _to_numpy(x)
    if a.dtype == bool or a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DataError(f"{name} must be real numbers, got dtype {a.dtype}")
    if a.ndim != 2:
        raise DataError(f"{name} must be a 2-D (N, D) array of embeddings, got shape {tuple(a.shape)}")
    if a.shape[1] == 0:
        raise DataError(f"{name} have dimension 0 (shape {tuple(a.shape)})")
    if a.shape[0] == 0 and not allow_empty:
        raise DataError(f"{name} are empty (shape {tuple(a.shape)})")
    if dim is not None and a.shape[1] != dim:
        raise DataError(f"{name} have dimension {a.shape[1]}, but the detector's references have dimension {dim}")
    out = np.ascontiguousarray(a, dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        kind = "NaN" if np.isnan(out).any() else "infinite values"
        raise DataError(f"{name} contain {kind} in {rows.size} of {out.shape[0]} rows (first: row {int(rows[0])})")
    return out


def _as_is_anomaly(is_anomaly: Any, n: int) -> np.ndarray:
    y = _to_numpy(is_anomaly)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"is_anomaly must be 1-D with one flag per sample ({n}), got shape {tuple(y.shape)}")
    if y.dtype != bool:
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise DataError(f"is_anomaly must be boolean, got dtype {y.dtype}")
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            raise DataError(f"is_anomaly must be boolean (or 0/1), got {int(bad.sum())} other values, e.g. {y[bad][0]!r}")
        y = y.astype(bool)
    return y


def _as_scores_labels(scores: Any, is_anomaly: Any) -> tuple[np.ndarray, np.ndarray]:
    """float64 (N,) finite scores and bool (N,) flags; DataError otherwise."""
    s = _to_numpy(scores)
    if s.ndim != 1:
        raise DataError(f"scores must be 1-D, got shape {tuple(s.shape)}")
    if s.size == 0:
        raise DataError("no samples: the scores are empty")
    return _as_distances(s, name="scores"), _as_is_anomaly(is_anomaly, s.shape[0])


def _both_classes(y: np.ndarray, what: str) -> None:
    n_anom = int(y.sum())
    n_norm = int(y.size - n_anom)
    if n_anom == 0 or n_norm == 0:
        raise DataError(f"{what} needs both normal and anomalous samples, got {n_norm} normal and {n_anom} anomalous")


def _distance_name(distance: str | BaseDistance) -> str:
    try:
        name = get_distance(distance).name
    except ValueError as e:
        raise AnomalyError(str(e)) from None
    if name not in DISTANCES:
        raise AnomalyError(f"distance {name!r} is not supported by the anomaly detector; choose one of {sorted(DISTANCES)}")
    return name


# --------------------------------------------------------------------------- k-NN


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as torch's F.normalize."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def _knn_faiss(queries: np.ndarray, refs: np.ndarray, k: int, metric: str, loo: bool) -> np.ndarray:
    import faiss  # imported lazily: only this search needs it

    n, dim = refs.shape
    # FAISS ranks by float32 distances; the true k nearest can only be missing from the
    # candidates when more than `extra` others tie with them within float32 rounding, and
    # then the exact score differs by at most that rounding.
    extra = max(8, k)
    kk = min(n, k + extra + (1 if loo else 0))
    if metric == "cosine":
        index: Any = faiss.IndexFlatIP(dim)
        index.add(np.ascontiguousarray(_unit(refs.astype(np.float64)), dtype=np.float32))
        q_search = np.ascontiguousarray(_unit(queries.astype(np.float64)), dtype=np.float32)
        refs64 = _unit(refs.astype(np.float64))
    else:
        index = faiss.IndexFlatL2(dim)
        index.add(refs)
        q_search = queries
        refs64 = refs.astype(np.float64)
    _, cand_idx = index.search(q_search, kk)  # (N, kk) candidates: a few more than k
    cand_idx = np.where(cand_idx < 0, 0, cand_idx)  # never happens with kk <= n; keeps the gather safe
    out = np.empty((queries.shape[0], k), dtype=np.float64)
    rows_per_chunk = max(1, _CHUNK // (kk * dim))
    for s in _chunks(queries.shape[0], rows_per_chunk):  # exact float64 distances of the candidates
        idx = cand_idx[s]
        q64 = queries[s].astype(np.float64)
        cand = refs64[idx]  # (c, kk, D)
        if metric == "cosine":
            d = 1.0 - np.einsum("ckd,cd->ck", cand, _unit(q64))
        else:
            d = ((cand - q64[:, None, :]) ** 2).sum(-1)
            if metric == "euclidean":
                d = np.sqrt(d)
        if loo:  # a reference is never its own neighbour (other, identical rows still count)
            d[idx == np.arange(s.start, s.stop)[:, None]] = np.inf
        out[s] = np.sort(d, axis=1)[:, :k]
    return out


def _knn_l1(queries: np.ndarray, refs: np.ndarray, k: int, loo: bool) -> np.ndarray:
    r = torch.from_numpy(refs).double()
    out = np.empty((queries.shape[0], k), dtype=np.float64)
    rows_per_chunk = max(1, _CHUNK // max(1, refs.shape[0] * refs.shape[1]))
    for s in _chunks(queries.shape[0], rows_per_chunk):
        d = torch.cdist(torch.from_numpy(queries[s]).double(), r, p=1.0)
        if loo:
            rows = torch.arange(s.stop - s.start)
            d[rows, rows + s.start] = math.inf
        out[s] = d.topk(k, dim=1, largest=False, sorted=True).values.numpy()
    return out


def knn_distances(
    queries: Any, references: Any, k: int, *, distance: str | BaseDistance = "euclidean", leave_one_out: bool = False
) -> np.ndarray:
    """Exact distances (lower = closer) from each query to its k nearest references.

    Args:
        queries: query embeddings; with ``leave_one_out`` they must be the references.
        references: reference embeddings.
        k: neighbours per query (1 <= k <= number of references, minus one with
            ``leave_one_out``).
        distance: euclidean, sqeuclidean, cosine or l1.
        leave_one_out: query i is reference i and is not its own neighbour.

    Shapes:
        queries (N, D), references (M, D) -> (N, k) float64, each row increasing.

    Returns:
        The sorted neighbour distances.
    """
    metric = _distance_name(distance)
    refs = _as_embeddings(references, name="references")
    q = _as_embeddings(queries, name="queries", dim=refs.shape[1], allow_empty=True)
    k = _check_k(k, refs.shape[0], loo=leave_one_out)
    if leave_one_out and q.shape[0] != refs.shape[0]:
        raise DataError(f"leave_one_out scores the references themselves: got {q.shape[0]} queries for {refs.shape[0]} references")
    if q.shape[0] == 0:
        return np.zeros((0, k), dtype=np.float64)
    if metric in _FAISS_METRICS:
        return _knn_faiss(q, refs, k, metric, leave_one_out)
    return _knn_l1(q, refs, k, leave_one_out)


def _check_k(k: Any, n_refs: int, *, loo: bool) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise AnomalyError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    need = k + 1 if loo else k
    if n_refs < need:
        if loo:
            raise AnomalyError(
                f"k={k} needs at least {need} normal references for leave-one-out scores (each reference's "
                f"k nearest *other* references), got {n_refs}; lower k or add references"
            )
        raise AnomalyError(f"k={k} is larger than the number of normal references ({n_refs}); lower k or add references")
    return k


def _reduce(d: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "mean":
        return d.mean(axis=1)
    if reduction in ("max", "kth"):
        return d[:, -1].copy()
    return np.median(d, axis=1)


# --------------------------------------------------------------------------- metrics


def anomaly_metrics(scores: Any, is_anomaly: Any, threshold: float | None = None) -> dict[str, Any]:
    """AUROC, average precision and the confusion at a threshold, from anomaly scores.

    Positive = anomaly; a sample is flagged when ``score > threshold``.

    Args:
        scores: anomaly scores, higher = more anomalous.
        is_anomaly: True for anomalous samples.
        threshold: the decision threshold; None = no confusion.

    Shapes:
        scores (N,), is_anomaly (N,).

    Returns:
        ``{"auroc", "average_precision", "n_normal", "n_anomalous", "threshold",
        "confusion"}``; ``confusion`` is None without a threshold, else ``{"tp", "fp",
        "tn", "fn", "accuracy", "precision", "recall", "f1", "false_alarm_rate"}``
        (recall = anomalies caught; false_alarm_rate = normal samples flagged;
        precision is 0 when nothing is flagged).

    Raises:
        DataError: shapes differ, NaN / infinite scores, or only one class.
    """
    s, y = _as_scores_labels(scores, is_anomaly)
    _both_classes(y, "AUROC")
    n_anom = int(y.sum())
    n_norm = int(y.size - n_anom)
    out: dict[str, Any] = {
        "auroc": float(roc_auc_score(y, s)),
        "average_precision": float(average_precision_score(y, s)),
        "n_normal": n_norm,
        "n_anomalous": n_anom,
        "threshold": None if threshold is None else float(threshold),
        "confusion": None,
    }
    if threshold is not None:
        flag = s > float(threshold)
        tp = int((flag & y).sum())
        fp = int((flag & ~y).sum())
        fn = int((~flag & y).sum())
        tn = int((~flag & ~y).sum())
        out["confusion"] = {
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
            "accuracy": (tp + tn) / y.size,
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / n_anom,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "false_alarm_rate": fp / n_norm,
        }
    return out


# --------------------------------------------------------------------------- detector


class AnomalyDetector:
    """Anomaly score = distance to the k nearest normal references (higher = more anomalous).

    Follows scikit-learn: ``__init__`` only stores its arguments; :meth:`fit` learns the
    trailing-underscore attributes and returns ``self``.

    Args:
        k: neighbours per sample.
        reduction: how the k neighbour distances become one score: ``"mean"``,
            ``"median"``, or the largest of them, i.e. the distance to the k-th nearest
            reference (``"max"`` and ``"kth"`` are two names for the same score).
        distance: euclidean, sqeuclidean, cosine or l1; None = the network's own distance
            when fitted through :meth:`fit_inputs` or ``fit(..., network=...)``, else
            euclidean. (A pair-head network's head is not a metric: its embedding
            distance is used.)
        threshold_method: ``"quantile"``: :meth:`fit` sets ``threshold_`` to the
            ``quantile`` of the references' leave-one-out scores (numpy's linear
            interpolation), so about ``1 - quantile`` of normal samples score above it.
            ``"labelled"``: :meth:`fit` sets no threshold; call :meth:`fit_threshold`
            with a labelled validation set.
        quantile: in (0, 1), for ``"quantile"``.
        target_far: in (0, 1), the largest fraction of *normal* samples that may be
            flagged (the false alarm rate) for the labelled ``criterion="far"``.
        criterion: the labelled threshold: ``"far"`` (as many anomalies caught as
            possible with at most ``target_far`` of the normal validation samples
            flagged: :func:`~siamkit.evaluation.verification.tar_at_far` with anomalies
            as the positive class) or ``"eer"`` (false alarm rate = miss rate:
            :func:`~siamkit.evaluation.verification.equal_error_rate`).

    Attributes (after fit):
        references_ (ndarray): float32 (M, D), the normal references.
        distance_ (str): the distance used.
        reference_scores_ (ndarray | None): float64 (M,), leave-one-out score of each
            reference (None when there are only k references).
        threshold_ (float | None): flag when ``score > threshold_``.
        threshold_source_ (str | None): ``"quantile"``, ``"labelled-far"`` or ``"labelled-eer"``.
        model_fingerprint_ (str | None): the model whose embeddings the references are.
        fitted_on_ (str | None): a name of the normal data (e.g. its folder).

    Example:
        >>> det = AnomalyDetector(k=3, reduction="median", threshold_method="labelled", target_far=0.05)
    """

    def __init__(
        self,
        *,
        k: int = 5,
        reduction: str = "mean",
        distance: str | BaseDistance | None = None,
        threshold_method: str = "quantile",
        quantile: float = 0.99,
        target_far: float = 0.01,
        criterion: str = "far",
    ) -> None:
        self.k = k
        self.reduction = reduction
        self.distance = distance
        self.threshold_method = threshold_method
        self.quantile = quantile
        self.target_far = target_far
        self.criterion = criterion

    def __repr__(self) -> str:
        return (
            f"AnomalyDetector(k={self.k!r}, reduction={self.reduction!r}, distance={self.distance!r}, "
            f"threshold_method={self.threshold_method!r}, quantile={self.quantile!r}, "
            f"target_far={self.target_far!r}, criterion={self.criterion!r})"
        )

    # ----------------------------------------------------------------- params

    def _check_params(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise AnomalyError(f"reduction must be one of {list(REDUCTIONS)}, got {self.reduction!r}")
        if self.threshold_method not in THRESHOLD_METHODS:
            raise AnomalyError(f"threshold_method must be one of {list(THRESHOLD_METHODS)}, got {self.threshold_method!r}")
        if self.criterion not in CRITERIA:
            raise AnomalyError(f"criterion must be one of {list(CRITERIA)}, got {self.criterion!r}")
        for name in ("quantile", "target_far"):
            value = getattr(self, name)
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise AnomalyError(f"{name} must be a number in (0, 1), got {value!r}") from None
            if not 0.0 < v < 1.0:
                raise AnomalyError(f"{name} must be in (0, 1), got {v}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise AnomalyError(f"k must be a positive integer, got {self.k!r}")
        if self.distance is not None:
            _distance_name(self.distance)

    # ----------------------------------------------------------------- fit

    def fit(
        self,
        normal_embeddings: Any,
        *,
        network: SiameseNetwork | None = None,
        model_fingerprint: str | None = None,
        fitted_on: str | None = None,
    ) -> AnomalyDetector:
        """Keep the normal embeddings as references; with ``"quantile"``, set the threshold.

        Args:
            normal_embeddings: embeddings of normal samples only.
            network: the network that made the embeddings: gives the default distance
                and the model fingerprint (optional).
            model_fingerprint: identifies the model (default: ``network.fingerprint``);
                saved and checked when the detector is loaded or used with a network.
            fitted_on: a name of the normal data (e.g. its folder), saved with the detector.

        Shapes:
            normal_embeddings (M, D).

        Returns:
            self.

        Raises:
            DataError: not 2-D, empty, NaN / infinite values.
            AnomalyError: bad parameters; k >= M (quantile: leave-one-out needs k + 1
                references) or k > M (labelled).
        """
        self._check_params()
        refs = _as_embeddings(normal_embeddings, name="normal embeddings")
        loo_ok = refs.shape[0] > int(self.k)
        _check_k(self.k, refs.shape[0], loo=self.threshold_method == "quantile")
        if self.distance is not None:
            dist = _distance_name(self.distance)
        elif network is not None:
            dist = _distance_name(network.distance)
            if network.pair_head is not None:
                logger.warning(
                    "the network has a pair head, which is not a metric: the anomaly detector uses its "
                    "embedding distance (%s) for the k-NN search",
                    dist,
                )
        else:
            dist = "euclidean"
        if model_fingerprint is None and network is not None:
            model_fingerprint = getattr(network, "fingerprint", None)

        self.references_ = refs
        self.distance_ = dist
        self.reference_scores_ = (
            _reduce(knn_distances(refs, refs, int(self.k), distance=dist, leave_one_out=True), self.reduction)
            if loo_ok
            else None
        )
        self.model_fingerprint_ = model_fingerprint
        self.fitted_on_ = fitted_on
        self.threshold_: float | None = None
        self.threshold_source_: str | None = None
        if self.threshold_method == "quantile":
            assert self.reference_scores_ is not None
            self.threshold_ = float(np.quantile(self.reference_scores_, float(self.quantile)))
            self.threshold_source_ = "quantile"
        return self

    def fit_inputs(
        self, network: SiameseNetwork, normal_inputs: torch.Tensor, *, batch_size: int = 256, fitted_on: str | None = None
    ) -> AnomalyDetector:
        """Embed normal inputs with ``network`` (eval mode, batched) and :meth:`fit`.

        Args:
            network: a (trained) :class:`~siamkit.network.SiameseNetwork`.
            normal_inputs: uint8 images in [0, 255] (scaled to [0, 1]) or float inputs.

        Shapes:
            normal_inputs (M, C, H, W) or (M, F).

        Returns:
            self.
        """
        return self.fit(_embed(network, normal_inputs, batch_size), network=network, fitted_on=fitted_on)

    def fit_threshold(self, scores_or_embeddings: Any, is_anomaly: Any) -> AnomalyDetector:
        """Set ``threshold_`` from a labelled validation set (normal and anomalous samples).

        ``criterion="far"``: with anomalies as the positive class and ``-score`` as the
        "distance" of :func:`~siamkit.evaluation.verification.tar_at_far`, the lowest
        threshold whose rate of flagged normal samples is <= ``target_far`` (so the most
        anomalies caught). It is placed in the middle of the gap to the next lower score
        so that ``score > threshold_`` reproduces that operating point on the
        validation data. Refused with fewer than ``ceil(1 / target_far)`` normal samples
        (the rate could not be resolved).

        ``criterion="eer"``: the threshold where the false alarm rate equals the miss
        rate (:func:`~siamkit.evaluation.verification.equal_error_rate`).

        The validation samples must not be the references (their scores would include
        themselves); use held-out normal samples.

        Args:
            scores_or_embeddings: 1-D anomaly scores, or 2-D embeddings (scored first).
            is_anomaly: True for anomalous samples.

        Shapes:
            (N,) scores or (N, D) embeddings; is_anomaly (N,).

        Returns:
            self.

        Raises:
            DataError: bad shapes, NaN, or only one class.
            AnomalyError: too few normal samples for ``target_far``.
        """
        self._check_fitted()
        self._check_params()
        raw = _to_numpy(scores_or_embeddings)
        scores = self.score(raw) if raw.ndim == 2 else raw
        s, y = _as_scores_labels(scores, is_anomaly)
        _both_classes(y, "a labelled threshold")
        if self.criterion == "far":
            far = float(self.target_far)
            need, n_norm = min_negatives_for_far(far), int((~y).sum())
            if n_norm < need:
                raise AnomalyError(
                    f"cannot fit a threshold at target_far={far:g}: it needs at least {need} normal validation "
                    f"samples to be resolved, got {n_norm}; add normal samples or raise target_far"
                )
            res = tar_at_far(-s, y, far)
            if not math.isfinite(res.threshold):  # even the highest score flags too many normals
                thr = float(s.max())
            else:
                flag_from = -res.threshold  # flags score >= flag_from on the data
                below = s[s < flag_from]
                thr = float((below.max() + flag_from) / 2.0) if below.size else float(np.nextafter(flag_from, -np.inf))
            logger.info("labelled threshold %.6g: detection rate %.4f at false alarm rate <= %g", thr, res.tar, res.far)
        else:
            _, t = equal_error_rate(-s, y)
            thr = float(-t)
        self.threshold_ = thr
        self.threshold_source_ = f"labelled-{self.criterion}"
        return self

    # ----------------------------------------------------------------- use

    def _check_fitted(self) -> None:
        if not hasattr(self, "references_"):
            raise NotFittedError("this AnomalyDetector is not fitted yet: call fit() or AnomalyDetector.load() first")

    def _check_threshold(self) -> float:
        self._check_fitted()
        if self.threshold_ is None:
            raise NotFittedError(
                "the detector has no threshold yet: with threshold_method='labelled', call "
                "fit_threshold(scores_or_embeddings, is_anomaly) on a labelled validation set"
            )
        return float(self.threshold_)

    def kneighbors(self, embeddings: Any) -> np.ndarray:
        """Distances to the k nearest references (lower = closer), increasing.

        Shapes: (N, D) -> (N, k) float64.
        """
        self._check_fitted()
        q = _as_embeddings(embeddings, name="embeddings", dim=self.references_.shape[1], allow_empty=True)
        return knn_distances(q, self.references_, int(self.k), distance=self.distance_)

    def score(self, embeddings: Any) -> np.ndarray:
        """Anomaly scores, higher = more anomalous.

        A sample that is itself one of the references has itself as nearest neighbour;
        the references' own (leave-one-out) scores are ``reference_scores_``.

        Shapes: (N, D) -> (N,) float64; (0, D) gives an empty array.

        Raises:
            DataError: not 2-D, NaN / infinite values, another dimension than the references.
        """
        return _reduce(self.kneighbors(embeddings), self.reduction)

    def predict(self, embeddings: Any) -> np.ndarray:
        """Anomaly decisions: ``score > threshold_``.

        Shapes: (N, D) -> bool (N,).
        """
        thr = self._check_threshold()
        return self.score(embeddings) > thr

    def evaluate(self, embeddings: Any, is_anomaly: Any) -> dict[str, Any]:
        """AUROC, average precision and the confusion at ``threshold_`` on a labelled set.

        See :func:`anomaly_metrics` (positive = anomaly). The confusion is None when the
        detector has no threshold yet.

        Shapes: embeddings (N, D), is_anomaly (N,).
        """
        self._check_fitted()
        q = _as_embeddings(embeddings, name="embeddings", dim=self.references_.shape[1])
        y = _as_is_anomaly(is_anomaly, q.shape[0])
        _both_classes(y, "evaluation")
        return anomaly_metrics(self.score(q), y, self.threshold_)

    def _embed_checked(self, network: SiameseNetwork, inputs: torch.Tensor, batch_size: int) -> np.ndarray:
        self._check_fitted()
        self.check_network(network)
        return _embed(network, inputs, batch_size)

    def score_inputs(self, network: SiameseNetwork, inputs: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
        """Embed inputs with ``network`` (checked against the detector's model) and :meth:`score`.

        Shapes: (N, C, H, W) uint8 / float or (N, F) -> (N,).
        """
        return self.score(self._embed_checked(network, inputs, batch_size))

    def predict_inputs(self, network: SiameseNetwork, inputs: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
        """Embed inputs with ``network`` and :meth:`predict`. Shapes: (N, ...) -> bool (N,)."""
        return self.predict(self._embed_checked(network, inputs, batch_size))

    def evaluate_inputs(
        self, network: SiameseNetwork, inputs: torch.Tensor, is_anomaly: Any, *, batch_size: int = 256
    ) -> dict[str, Any]:
        """Embed inputs with ``network`` and :meth:`evaluate`."""
        return self.evaluate(self._embed_checked(network, inputs, batch_size), is_anomaly)

    def check_network(self, network: SiameseNetwork) -> None:
        """Refuse a network that did not make the references.

        Raises:
            ModelFileError: the fingerprints differ, the network has no fingerprint while
                the detector records one, or the embedding sizes differ.
        """
        self._check_fitted()
        _check_fingerprint(self.model_fingerprint_, getattr(network, "fingerprint", None), where="this detector")
        dim = int(network.embedding_dim)
        if dim != self.references_.shape[1]:
            raise ModelFileError(
                f"the network embeds to dimension {dim}, the detector's references have dimension "
                f"{self.references_.shape[1]}: refit the detector with this network"
            )

    # ----------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Write the folder ``path`` (created if needed): ``anomaly.json`` + ``references.npz``.

        Returns:
            The folder.
        """
        self._check_fitted()
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise AnomalyError(f"{path} exists and is not a folder")
        path.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"references": self.references_.astype(np.float32, copy=False)}
        if self.reference_scores_ is not None:
            arrays["reference_scores"] = self.reference_scores_.astype(np.float64, copy=False)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        blob = buf.getvalue()
        _write_bytes_atomic(path / REFERENCES_FILE, blob)
        dist = self.distance
        write_json_atomic(
            path / DETECTOR_FILE,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "siamkit_version": __version__,
                "params": {
                    "k": int(self.k),
                    "reduction": self.reduction,
                    "distance": None if dist is None else _distance_name(dist),
                    "threshold_method": self.threshold_method,
                    "quantile": float(self.quantile),
                    "target_far": float(self.target_far),
                    "criterion": self.criterion,
                },
                "distance": self.distance_,
                "threshold": self.threshold_,
                "threshold_source": self.threshold_source_,
                "num_references": int(self.references_.shape[0]),
                "dim": int(self.references_.shape[1]),
                "model_fingerprint": self.model_fingerprint_,
                "fitted_on": self.fitted_on_,
                "references_file": REFERENCES_FILE,
                "references_sha256": "sha256:" + hashlib.sha256(blob).hexdigest(),
            },
        )
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        network: SiameseNetwork | None = None,
        expected_fingerprint: str | None = None,
    ) -> AnomalyDetector:
        """Read a folder written by :meth:`save` (never unpickles).

        Args:
            path: the detector folder.
            network: the network the detector will be used with: its fingerprint and
                embedding size must match the detector's.
            expected_fingerprint: a model fingerprint to check instead of a network's.

        Raises:
            ModelFileError: a missing or damaged file, another format version, or a
                model whose fingerprint differs from the one the detector was fitted with.
        """
        path = Path(path)
        if not path.is_dir():
            raise ModelFileError(f"anomaly detector folder {path} does not exist" if not path.exists() else f"{path} is not a folder")
        jpath, npath = path / DETECTOR_FILE, path / REFERENCES_FILE
        if not jpath.is_file():
            raise ModelFileError(f"{path} is not a siamkit anomaly detector (no {DETECTOR_FILE})")
        try:
            data = json.loads(jpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelFileError(f"{jpath} is not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelFileError(f"{jpath} is not a siamkit anomaly detector (format is not {FORMAT!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(
                f"{jpath} has anomaly format version {data.get('format_version')!r} (siamkit "
                f"{data.get('siamkit_version')}); this siamkit ({__version__}) reads version {FORMAT_VERSION}"
            )
        if not npath.is_file():
            raise ModelFileError(f"{npath} is missing")
        blob = npath.read_bytes()
        want_sha = data.get("references_sha256")
        if want_sha is not None and "sha256:" + hashlib.sha256(blob).hexdigest() != want_sha:
            raise ModelFileError(f"{npath} does not match {jpath} (checksum differs): the folder is damaged or mixed")
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (ValueError, OSError, EOFError) as e:
            raise ModelFileError(f"{npath} is not a readable npz file of float arrays ({e})") from None
        try:
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
            det._check_params()
            refs = arrays["references"]
            if refs.dtype != np.float32 or refs.ndim != 2:
                raise ValueError(f"references must be float32 (M, D), got {refs.dtype} {refs.shape}")
            if refs.shape != (int(data["num_references"]), int(data["dim"])):
                raise ValueError(f"references have shape {refs.shape}, the JSON says ({data['num_references']}, {data['dim']})")
            det.references_ = _as_embeddings(refs, name="references")
            det.distance_ = _distance_name(data["distance"])
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
            _check_fingerprint(det.model_fingerprint_, expected_fingerprint, where=str(path))
        return det


# --------------------------------------------------------------------------- helpers


def _check_fingerprint(saved: str | None, given: str | None, *, where: str) -> None:
    if saved is None:
        if given is not None:
            logger.warning("%s records no model fingerprint: cannot check that it belongs to this model", where)
        return
    if given is None:
        raise ModelFileError(
            f"{where} was fitted with model {saved!r}, but this network has no fingerprint (it was never saved "
            "or loaded): load the model folder the detector was fitted with"
        )
    if given != saved:
        raise ModelFileError(
            f"{where} was fitted with model {saved!r}, not with this model ({given!r}): its references are "
            "another model's embeddings; refit the detector with this model"
        )


def _embed(network: SiameseNetwork, inputs: torch.Tensor, batch_size: int) -> np.ndarray:
    from .inference import embed_all

    if not isinstance(inputs, torch.Tensor):
        inputs = torch.as_tensor(np.asarray(inputs))
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise DataError(f"inputs must be a non-empty batch (N, ...), got shape {tuple(inputs.shape)}")
    if inputs.is_floating_point() and not torch.isfinite(inputs).all():
        raise DataError("inputs contain NaN or infinity")
    return embed_all(network, inputs, batch_size=batch_size).numpy()


def _write_bytes_atomic(path: Path, blob: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
