"""Metrics (verification, retrieval, few-shot) and reports."""

from __future__ import annotations

from .anomaly import anomaly_metrics
from .few_shot import (
    OneShotResult,
    OneShotTrials,
    TrialScore,
    koch_within_alphabet_trials,
    n_way_k_shot_accuracy,
    official_one_shot_accuracy,
    score_trials,
)
from .metrics import (
    FewShotScore,
    VerificationResult,
    candidate_distances,
    labelled_pair_distances,
    nearest_support_score,
    score_predictions,
    verification_metrics,
)
from .openset import DirAtFar, dir_at_far, open_set_roc
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
    "DirAtFar",
    "FewShotScore",
    "OneShotResult",
    "OneShotTrials",
    "TarAtFar",
    "TrialScore",
    "VerificationResult",
    "anomaly_metrics",
    "candidate_distances",
    "confusion_at_threshold",
    "det_curve",
    "dir_at_far",
    "equal_error_rate",
    "koch_within_alphabet_trials",
    "labelled_pair_distances",
    "n_way_k_shot_accuracy",
    "nearest_support_score",
    "official_one_shot_accuracy",
    "open_set_roc",
    "retrieval_metrics",
    "roc",
    "score_predictions",
    "score_trials",
    "tar_at_far",
    "verification_metrics",
    "verification_report",
]
