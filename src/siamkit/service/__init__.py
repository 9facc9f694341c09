"""The HTTP service: verification, gallery and feedback endpoints over the library.

Example:
    >>> from siamkit.service import ServiceSettings, create_app        # doctest: +SKIP
    >>> app = create_app(ServiceSettings(model=Path("model"), keys=Path("keys.json"),
    ...                                  gallery=Path("staff.db")))      # doctest: +SKIP
"""

from __future__ import annotations

from .app import ApiError, ServiceSettings, create_app, create_app_from_env
from ..feedback import FeedbackError, FeedbackRecord, FeedbackStore, default_feedback_path
from .images import Limits, UploadError, decode_image
from .security import KeyFileError, KeyStore, Principal

__all__ = [
    "ApiError",
    "FeedbackError",
    "FeedbackRecord",
    "FeedbackStore",
    "KeyFileError",
    "KeyStore",
    "Limits",
    "Principal",
    "ServiceSettings",
    "UploadError",
    "create_app",
    "create_app_from_env",
    "decode_image",
    "default_feedback_path",
]
