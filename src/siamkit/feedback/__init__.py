"""Feedback: the store of reported mistakes (and the service's audit log), and the
labelled pairs fine-tuning learns from them.

Library code: the HTTP service, the CLI and :mod:`siamkit.training.finetune` all use it.
"""

from __future__ import annotations

from ..errors import FeedbackError, FeedbackLockedError
from .pairs import FeedbackPairs, feedback_pairs
from .store import KINDS, SCHEMA_VERSION, FeedbackRecord, FeedbackStore, default_feedback_path

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "FeedbackError",
    "FeedbackLockedError",
    "FeedbackPairs",
    "FeedbackRecord",
    "FeedbackStore",
    "default_feedback_path",
    "feedback_pairs",
]
