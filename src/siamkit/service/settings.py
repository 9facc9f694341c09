"""The service's settings: everything :func:`~siamkit.service.app.create_app` needs,
parsed once at the edge (the CLI or the environment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .images import Limits
from .security import KeyStore

__all__ = ["ServiceSettings"]


@dataclass
class ServiceSettings:
    """Everything the service needs, parsed once at the edge (CLI or environment).

    Attributes:
        model: the model folder (with its calibration.json, if calibrated).
        keys: the API keys file, a ``postgresql://`` URL (shared by every instance), or a
            :class:`KeyStore` (required: the service has no anonymous mode).
        gallery: the gallery SQLite file (created if missing), or a PostgreSQL URL
            ``postgresql://...`` shared by several instances; None disables the gallery
            endpoints (503).
        feedback: the feedback SQLite file or a ``postgresql://`` URL; None =
            ``GALLERY.feedback.sqlite``, a PostgreSQL gallery's own database, or no feedback
            endpoint without a gallery.
        limits: request / image / batch limits.
        public_metrics: serve ``/metrics`` without a key (True) or only to read keys.
        max_inference: concurrent decode + embed jobs (default: the CPU count).
        index: the gallery's search index (auto, exact, flat, hnsw, ivf).
        rate_per_key: requests per second one API key id may make (None: no limit).
        rate_per_client: requests per second one client address may make (None: no limit).
        auth_rate: failed slow key checks (scrypt) per second per client address and per
            key id, 4x that in all, before keys not verified yet get 429 (None: no limit); see
            :class:`~siamkit.service.ratelimit.KdfGate`.
        runtime: ``"torch"`` (the model folder's :class:`~siamkit.verify.Verifier`) or
            ``"onnx"`` (``model`` is an export folder, or a model folder exported at
            start-up; verify only, see :mod:`siamkit.service.onnx_runtime`).
        onnx_precision: ``"fp32"`` / ``"int8"`` for the onnx runtime (None: fp32).
        rate_burst: how many requests above the rate a key or client may make at once,
            as seconds of its rate (the bucket holds ``max(1, rate * rate_burst)``).
    """

    model: Path
    keys: Path | str | KeyStore
    gallery: Path | str | None = None
    feedback: Path | str | None = None
    limits: Limits = field(default_factory=Limits)
    public_metrics: bool = True
    max_inference: int | None = None
    index: str = "auto"
    rate_per_key: float | None = None
    rate_per_client: float | None = None
    rate_burst: float = 2.0
    auth_rate: float | None = None
    runtime: str = "torch"
    onnx_precision: str | None = None
