"""Metrics (verification, N-way K-shot) and reports."""

from __future__ import annotations

from .metrics import VerificationResult, labelled_pair_distances, n_way_k_shot_accuracy, verification_metrics

__all__ = ["VerificationResult", "labelled_pair_distances", "n_way_k_shot_accuracy", "verification_metrics"]
