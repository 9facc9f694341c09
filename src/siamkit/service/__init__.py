"""The HTTP service: verification, gallery and feedback endpoints over the library.

Example:
    >>> from siamkit.service import ServiceSettings, create_app        # doctest: +SKIP
    >>> app = create_app(ServiceSettings(model=Path("model"), keys=Path("keys.json"),
    ...                                  gallery=Path("staff.db")))      # doctest: +SKIP

Layout: :mod:`.app` wires the app; :mod:`.settings`, :mod:`.schemas`, :mod:`.errors`,
:mod:`.middleware`, :mod:`.metrics`, :mod:`.deps`, :mod:`.uploads`, :mod:`.images`,
:mod:`.security` and :mod:`.feedback` hold its parts; :mod:`.routers` the endpoints.
"""

from __future__ import annotations

from .app import create_app, create_app_from_env
from .errors import ApiError
from ..feedback import FeedbackError, FeedbackRecord, FeedbackStore, default_feedback_path
from .images import Limits, UploadError, decode_image
from .security import KeyFileError, KeyStore, Principal
from .settings import ServiceSettings

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
