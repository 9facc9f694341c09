"""The :class:`AnomalyDetector` estimator: distance to the k nearest normal references.

The k-NN search is :func:`siamkit.anomaly.knn.knn_distances`, the metrics
:func:`siamkit.evaluation.anomaly.anomaly_metrics`, the folder format
:mod:`siamkit.anomaly.files`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..distances import BaseDistance
from ..errors import AnomalyError, DataError, ModelFileError, NotFittedError
from ..evaluation.anomaly import anomaly_metrics, as_anomaly_flags, as_scores_and_flags, require_both_classes
from ..evaluation.curve import to_numpy
from ..evaluation.verification import equal_error_rate, min_negatives_for_far, tar_at_far
from ..inference import embed_all
from ..io import check_fingerprint
from .files import FINGERPRINT_HINT, load_detector, save_detector
from .knn import REDUCTIONS, as_embeddings, check_k, distance_name, knn_distances, reduce_distances

if TYPE_CHECKING:  # pragma: no cover
    from ..network import SiameseNetwork

__all__ = ["AnomalyDetector", "CRITERIA", "THRESHOLD_METHODS"]

logger = logging.getLogger(__name__)

THRESHOLD_METHODS = ("quantile", "labelled")
CRITERIA = ("far", "eer")


def _embed(network: SiameseNetwork, inputs: torch.Tensor, batch_size: int) -> np.ndarray:
    """Embeddings (N, E) of a checked, non-empty batch of inputs (eval mode, batched)."""
    if not isinstance(inputs, torch.Tensor):
        inputs = torch.as_tensor(np.asarray(inputs))
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise DataError(f"inputs must be a non-empty batch (N, ...), got shape {tuple(inputs.shape)}")
    if inputs.is_floating_point() and not torch.isfinite(inputs).all():
        raise DataError("inputs contain NaN or infinity")
    return embed_all(network, inputs, batch_size=batch_size).numpy()


def _far_threshold(s: np.ndarray, y: np.ndarray, far: float) -> float:
    """The lowest threshold flagging at most ``far`` of the normal scores, mid-gap."""
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
    return thr


@dataclass(kw_only=True, eq=False)
class AnomalyDetector:
    """Anomaly score = distance to the k nearest normal references (higher = more anomalous).

    Follows scikit-learn: the (keyword-only, generated) ``__init__`` only stores its
    arguments; :meth:`fit` learns the trailing-underscore attributes and returns ``self``.

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

    k: int = 5
    reduction: str = "mean"
    distance: str | BaseDistance | None = None
    threshold_method: str = "quantile"
    quantile: float = 0.99
    target_far: float = 0.01
    criterion: str = "far"

    # ----------------------------------------------------------------- params

    def check_params(self) -> None:
        """Validate the constructor arguments (done by :meth:`fit` and when loading).

        Raises:
            AnomalyError: a parameter is out of range or unknown.
        """
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
            distance_name(self.distance)

    # ----------------------------------------------------------------- fit

    def _fit_distance(self, network: SiameseNetwork | None) -> str:
        if self.distance is not None:
            return distance_name(self.distance)
        if network is None:
            return "euclidean"
        dist = distance_name(network.distance)
        if network.pair_head is not None:
            logger.warning(
                "the network has a pair head, which is not a metric: the anomaly detector uses its "
                "embedding distance (%s) for the k-NN search",
                dist,
            )
        return dist

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
        self.check_params()
        refs = as_embeddings(normal_embeddings, name="normal embeddings")
        loo_ok = refs.shape[0] > int(self.k)
        check_k(self.k, refs.shape[0], loo=self.threshold_method == "quantile")
        dist = self._fit_distance(network)
        if model_fingerprint is None and network is not None:
            model_fingerprint = getattr(network, "fingerprint", None)

        self.references_ = refs
        self.distance_ = dist
        self.reference_scores_ = (
            reduce_distances(knn_distances(refs, refs, int(self.k), distance=dist, leave_one_out=True), self.reduction)
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
            batch_size: inputs per embedding batch.
            fitted_on: a name of the normal data, saved with the detector.

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
        self.check_params()
        raw = to_numpy(scores_or_embeddings)
        scores = self.score(raw) if raw.ndim == 2 else raw
        s, y = as_scores_and_flags(scores, is_anomaly)
        require_both_classes(y, "a labelled threshold")
        if self.criterion == "far":
            thr = _far_threshold(s, y, float(self.target_far))
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
        q = as_embeddings(embeddings, name="embeddings", dim=self.references_.shape[1], allow_empty=True)
        return knn_distances(q, self.references_, int(self.k), distance=self.distance_)

    def score(self, embeddings: Any) -> np.ndarray:
        """Anomaly scores, higher = more anomalous.

        A sample that is itself one of the references has itself as nearest neighbour;
        the references' own (leave-one-out) scores are ``reference_scores_``.

        Shapes: (N, D) -> (N,) float64; (0, D) gives an empty array.

        Raises:
            DataError: not 2-D, NaN / infinite values, another dimension than the references.
        """
        return reduce_distances(self.kneighbors(embeddings), self.reduction)

    def predict(self, embeddings: Any) -> np.ndarray:
        """Anomaly decisions: ``score > threshold_``.

        Shapes: (N, D) -> bool (N,).
        """
        thr = self._check_threshold()
        return self.score(embeddings) > thr

    def evaluate(self, embeddings: Any, is_anomaly: Any) -> dict[str, Any]:
        """AUROC, average precision and the confusion at ``threshold_`` on a labelled set.

        See :func:`~siamkit.evaluation.anomaly.anomaly_metrics` (positive = anomaly).
        The confusion is None when the detector has no threshold yet.

        Args:
            embeddings: embeddings of normal and anomalous samples.
            is_anomaly: True for anomalous samples.

        Shapes:
            embeddings (N, D), is_anomaly (N,).

        Returns:
            The metrics of :func:`~siamkit.evaluation.anomaly.anomaly_metrics`.
        """
        self._check_fitted()
        q = as_embeddings(embeddings, name="embeddings", dim=self.references_.shape[1])
        y = as_anomaly_flags(is_anomaly, q.shape[0])
        require_both_classes(y, "evaluation")
        return anomaly_metrics(self.score(q), y, self.threshold_)

    def embed_inputs(self, network: SiameseNetwork, inputs: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
        """Embed inputs with ``network``, after checking it is the detector's model.

        Args:
            network: the network the detector was fitted with.
            inputs: uint8 images in [0, 255] or float inputs.
            batch_size: inputs per embedding batch.

        Shapes:
            (N, C, H, W) or (N, F) -> (N, D) float32.

        Returns:
            The embeddings.

        Raises:
            ModelFileError: another model (see :meth:`check_network`).
            DataError: an empty batch or NaN / infinite inputs.
        """
        self._check_fitted()
        self.check_network(network)
        return _embed(network, inputs, batch_size)

    def score_inputs(self, network: SiameseNetwork, inputs: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
        """Embed inputs with ``network`` (checked against the detector's model) and :meth:`score`.

        Args:
            network, inputs, batch_size: as :meth:`embed_inputs`.

        Shapes:
            (N, C, H, W) uint8 / float or (N, F) -> (N,).

        Returns:
            The anomaly scores.
        """
        return self.score(self.embed_inputs(network, inputs, batch_size=batch_size))

    def predict_inputs(self, network: SiameseNetwork, inputs: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
        """Embed inputs with ``network`` and :meth:`predict`.

        Args:
            network, inputs, batch_size: as :meth:`embed_inputs`.

        Shapes:
            (N, ...) -> bool (N,).

        Returns:
            The anomaly decisions.
        """
        return self.predict(self.embed_inputs(network, inputs, batch_size=batch_size))

    def evaluate_inputs(
        self, network: SiameseNetwork, inputs: torch.Tensor, is_anomaly: Any, *, batch_size: int = 256
    ) -> dict[str, Any]:
        """Embed inputs with ``network`` and :meth:`evaluate`.

        Args:
            network, inputs, batch_size: as :meth:`embed_inputs`.
            is_anomaly: True for anomalous inputs.

        Shapes:
            inputs (N, ...), is_anomaly (N,).

        Returns:
            The metrics of :meth:`evaluate`.
        """
        return self.evaluate(self.embed_inputs(network, inputs, batch_size=batch_size), is_anomaly)

    def check_network(self, network: SiameseNetwork) -> None:
        """Refuse a network that did not make the references.

        Raises:
            ModelFileError: the fingerprints differ, the network has no fingerprint while
                the detector records one, or the embedding sizes differ.
        """
        self._check_fitted()
        check_fingerprint(
            self.model_fingerprint_, getattr(network, "fingerprint", None), where="this detector", hint=FINGERPRINT_HINT
        )
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
        return save_detector(self, path)

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

        Returns:
            The fitted detector.

        Raises:
            ModelFileError: a missing or damaged file, another format version, or a
                model whose fingerprint differs from the one the detector was fitted with.
        """
        return load_detector(cls, path, network=network, expected_fingerprint=expected_fingerprint)
