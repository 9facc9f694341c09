"""Feedback: the store of reported mistakes (and the service's audit log), and the
labelled pairs fine-tuning learns from them.

Library code: the HTTP service, the CLI and :mod:`siamkit.training.finetune` all use it.
"""

from __future__ import annotations

from ..errors import FeedbackError, FeedbackLockedError
from .pairs import FeedbackPairs, feedback_pairs
from .guard import Screening, claim_key, review_report, screen_reports
from .store import KINDS, SCHEMA_VERSION, STATUSES, FeedbackRecord, FeedbackStore, default_feedback_path
from .pg_store import PgFeedbackStore, open_feedback

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "STATUSES",
    "Screening",
    "FeedbackError",
    "FeedbackLockedError",
    "FeedbackPairs",
    "FeedbackRecord",
    "FeedbackStore",
    "PgFeedbackStore",
    "claim_key",
    "default_feedback_path",
    "feedback_pairs",
    "open_feedback",
    "review_report",
    "screen_reports",
]
