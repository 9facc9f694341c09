"""The HTTP service: a FastAPI app over :class:`~siamkit.verify.Verifier`,
:class:`~siamkit.gallery.Gallery` and the :class:`~siamkit.feedback.FeedbackStore`.

``create_app(ServiceSettings(...))`` loads the model, opens the gallery, the feedback
store and the keys file (every problem is reported at start-up, not on the first
request) and returns the app. ``siamkit serve`` runs it with uvicorn.

Endpoints (``/openapi.json`` has the full spec):

===========================================  =======  ==========================================
``POST /v1/verify``                          read     two images -> distance, score, decision, confidence
``POST /v1/identities/{identity}/verify``    read     one image against the enrolled record
``POST /v1/identify``                        read     one image -> the k closest identities, or "unknown"
``GET /v1/identities``, ``GET .../{id}``     read     list / one identity (metadata, samples)
``POST /v1/identities``                      admin    enrol a new identity (1..max_batch images)
``POST /v1/identities/{identity}/samples``   admin    add samples
``DELETE /v1/identities/{identity}``         admin    remove an identity and its samples
``POST /v1/feedback``                        admin    record a reported mistake (JSON, images base64)
``GET /v1/feedback``                         admin    review the reported mistakes
``GET /healthz``, ``GET /metrics``           none     liveness / Prometheus text (``public_metrics``)
``GET /console``                             none     the web console (its endpoints: :mod:`.routers.console_api`)
===========================================  =======  ==========================================

Every error, including validation errors, unknown routes and unexpected exceptions, is
``{"error": {"code": ..., "message": ..., "request_id": ...}}`` with a 4xx/5xx status;
a traceback is logged, never sent. Each response carries ``X-Request-ID``.

Limits (:class:`~siamkit.service.images.Limits`): the request body is capped from its
Content-Length header *and* while it streams (chunked bodies); image bytes, pixels (read
from the header before decoding), images per request, ``k`` and text fields are capped.
Image uploads are decoded from memory; no path from a request reaches the file system.

Concurrency: reads (verify / identify) run in a thread pool, at most ``max_inference``
at a time (CPU-bound work beyond the cores only adds latency). Writes to the gallery
(enrol, add samples, delete) go through one lock, so e.g. concurrent enrol + delete of one
identity are serialised; each is also one SQLite transaction (a killed process leaves the
gallery as before or after the write).

This module only wires the app; the pieces live beside it: :mod:`.settings`
(:class:`ServiceSettings`), :mod:`.schemas` (request / response models), :mod:`.errors`
(the error shape, library error -> HTTP), :mod:`.middleware` (the guard), :mod:`.metrics`,
:mod:`.deps` (the app state, auth and content-type dependencies), :mod:`.uploads` and
the endpoints in :mod:`.routers` (``verify``, ``gallery``, ``feedback``, ``ops``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import AsyncIterator

from fastapi import FastAPI

from .. import __version__
from ..errors import SiamkitError
from ..gallery.backend import gallery_location
from .deps import ServiceState
from .errors import EXCEPTION_HANDLERS, ApiError
from .middleware import GuardMiddleware
from .routers import console, feedback, gallery, ops, verify
from .routers.text import build_text_router
from .schemas import ErrorResponse
from .ratelimit import RateLimiter, RateLimitMiddleware
from .settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "create_app_from_env", "ApiError"]


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    finally:
        app.state.siamkit.close()


def create_app(settings: ServiceSettings) -> FastAPI:
    """Build the service. Loads the model, keys, gallery and feedback store now.

    Args:
        settings: the service's settings.

    Returns:
        The FastAPI app (``app.state.siamkit`` is its :class:`~siamkit.service.deps.ServiceState`).

    Raises:
        SiamkitError (ModelFileError, KeyFileError, GalleryError, FeedbackError): a file
            cannot be used; the message names it.
    """
    state = ServiceState(settings)
    app = FastAPI(
        title="siamkit", version=__version__, lifespan=_lifespan, redoc_url=None,
        description="Siamese-network verification and identification (API key: X-API-Key or Authorization: Bearer).",
        responses={
            429: {"model": ErrorResponse, "description": "rate limited (see Retry-After); only when limits are set"},
            500: {"model": ErrorResponse, "description": "internal error"},
        },
    )
    app.state.siamkit = state
    def limiter(rate: float | None) -> RateLimiter | None:
        return None if rate is None else RateLimiter(rate, max(1.0, rate * settings.rate_burst))

    # inside the guard (added last = outermost): 429s get its request id and headers
    app.add_middleware(RateLimitMiddleware, per_key=limiter(settings.rate_per_key), per_client=limiter(settings.rate_per_client))
    app.add_middleware(GuardMiddleware, limits=state.limits, metrics=state.metrics)
    for exc_type, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
    app.include_router(ops.router)
    app.include_router(verify.router)
    app.include_router(gallery.build_router(state.limits))
    app.include_router(feedback.router)
    app.include_router(console.router)  # /console and the endpoints it needs (routers/console_api.py)
    app.include_router(build_text_router())  # JSON bodies, for a text model
    return app


def create_app_from_env() -> FastAPI:
    """``uvicorn --factory siamkit.service.app:create_app_from_env``: settings from
    ``SIAMKIT_MODEL``, ``SIAMKIT_KEYS``, ``SIAMKIT_GALLERY``, ``SIAMKIT_FEEDBACK`` (optional)."""
    env = os.environ
    missing = [k for k in ("SIAMKIT_MODEL", "SIAMKIT_KEYS") if not env.get(k)]
    if missing:
        raise SiamkitError(f"set {', '.join(missing)}")
    return create_app(
        ServiceSettings(
            model=Path(env["SIAMKIT_MODEL"]), keys=gallery_location(env["SIAMKIT_KEYS"]),
            gallery=gallery_location(env["SIAMKIT_GALLERY"]) if env.get("SIAMKIT_GALLERY") else None,
            feedback=gallery_location(env["SIAMKIT_FEEDBACK"]) if env.get("SIAMKIT_FEEDBACK") else None,
        )
    )
