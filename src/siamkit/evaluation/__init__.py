"""Metrics (verification, retrieval, N-way K-shot) and reports."""

from __future__ import annotations

from .anomaly import anomaly_metrics
from .metrics import VerificationResult, labelled_pair_distances, n_way_k_shot_accuracy, verification_metrics
from .retrieval import retrieval_metrics
from .verification import (
    Confusion,
    TarAtFar,
    confusion_at_threshold,
    det_curve,
    equal_error_rate,
    roc,
    tar_at_far,
    verification_report,
)

__all__ = [
    "Confusion",
    "TarAtFar",
    "VerificationResult",
    "anomaly_metrics",
    "confusion_at_threshold",
    "det_curve",
    "equal_error_rate",
    "labelled_pair_distances",
    "n_way_k_shot_accuracy",
    "retrieval_metrics",
    "roc",
    "tar_at_far",
    "verification_metrics",
    "verification_report",
]
