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

The k-NN search is exact (:mod:`siamkit.anomaly.knn`): the gallery's search
(:mod:`siamkit.gallery.search`: a flat FAISS index for euclidean, sqeuclidean and cosine,
an exact index with the float64 L1 distance for l1) finds a few more candidates than
needed, whose distances are then recomputed exactly in float64 (FAISS's float32
expansion ``|x|^2 + |y|^2 - 2 x.y`` loses precision for near-identical rows).

A fitted detector is saved as a folder: ``anomaly.json`` (parameters, threshold, the
fingerprint of the model whose embeddings it holds, versions) and ``references.npz``
(float32 reference embeddings and their float64 leave-one-out scores; read with
``allow_pickle=False``): :mod:`siamkit.anomaly.files`.

Layout: :mod:`~siamkit.anomaly.detector` (the estimator), :mod:`~siamkit.anomaly.knn`
(input checks and the k-NN), :mod:`~siamkit.anomaly.files` (the folder format); the
metrics are :mod:`siamkit.evaluation.anomaly`.

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

from ..errors import AnomalyError, NotFittedError
from ..evaluation.anomaly import anomaly_metrics
from .detector import AnomalyDetector
from .files import DETECTOR_FILE, FORMAT, FORMAT_VERSION, REFERENCES_FILE
from .knn import knn_distances

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
