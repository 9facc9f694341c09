"""The HTTP service: a FastAPI app over :class:`~siamkit.verify.Verifier`,
:class:`~siamkit.gallery.Gallery` and the :class:`~siamkit.service.feedback.FeedbackStore`.

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
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from fastapi import Depends, FastAPI, File, Form, HTTPException, Path as PathParam, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import DataError, SiamkitError
from ..verify import Verifier
from ..feedback import FeedbackError, FeedbackStore, default_feedback_path
from .images import Limits, UploadError, decode_image, sniff_image_format
from .security import KeyStore, Principal

__all__ = ["ServiceSettings", "create_app", "create_app_from_env", "ApiError"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- settings


@dataclass
class ServiceSettings:
    """Everything the service needs, parsed once at the edge (CLI or environment).

    Attributes:
        model: the model folder (with its calibration.json, if calibrated).
        keys: the API keys file, or a :class:`KeyStore` (required: the service has no
            anonymous mode).
        gallery: the gallery SQLite file (created if missing); None disables the gallery
            endpoints (503).
        feedback: the feedback SQLite file; None = ``GALLERY.feedback.sqlite`` (or no
            feedback endpoint when there is no gallery either).
        limits: request / image / batch limits.
        public_metrics: serve ``/metrics`` without a key (True) or only to read keys.
        max_inference: concurrent decode + embed jobs (default: the CPU count).
        index: the gallery's search index (auto, exact, flat, hnsw, ivf).
    """

    model: Path
    keys: Path | KeyStore
    gallery: Path | None = None
    feedback: Path | None = None
    limits: Limits = field(default_factory=Limits)
    public_metrics: bool = True
    max_inference: int | None = None
    index: str = "auto"


# --------------------------------------------------------------------------- errors


class ApiError(HTTPException):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail={"code": code, "message": message}, headers=headers)


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "request_too_large", f"the request body is larger than {limit} bytes")


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 409: "conflict", 411: "length_required", 413: "request_too_large",
    415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests", 500: "internal_error",
    503: "unavailable",
}


def _error_json(status: int, code: str, message: str, request_id: str | None, details: list[Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if request_id:
        body["request_id"] = request_id
    if details:
        body["details"] = details
    return {"error": body}


def _error_response(request: Request, status: int, code: str, message: str, *, details: list[Any] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    rid = request.scope.get("siamkit.request_id")
    return JSONResponse(_error_json(status, code, message, rid, details), status_code=status, headers=headers)


def _library_error(e: Exception) -> ApiError:
    """Map a library exception to an HTTP error (status, code, message)."""
    from ..errors import FeedbackLockedError, GalleryError, GalleryLockedError, IdentityExistsError, ModelMismatchError, UnknownIdentityError

    msg = str(e)[:500]
    if isinstance(e, UploadError):
        return ApiError(e.status, e.code, e.message)
    if isinstance(e, UnknownIdentityError):
        return ApiError(404, "unknown_identity", msg)
    if isinstance(e, IdentityExistsError):
        return ApiError(409, "identity_exists", msg)
    if isinstance(e, ModelMismatchError):
        return ApiError(409, "model_mismatch", msg)
    if isinstance(e, FeedbackError):
        return ApiError(422, "invalid_feedback", msg)
    if isinstance(e, (GalleryLockedError, FeedbackLockedError)):
        return ApiError(503, "gallery_busy", msg)
    if isinstance(e, GalleryError):
        return ApiError(422, "invalid_request", msg)
    if isinstance(e, DataError):
        return ApiError(422, "invalid_input", msg)
    return ApiError(422, "invalid_request", msg)


# --------------------------------------------------------------------------- response models


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable error code, e.g. invalid_image, unknown_identity")
    message: str
    request_id: Optional[str] = None
    details: Optional[list[dict[str, Any]]] = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class VerifyResponse(BaseModel):
    distance: float = Field(description="lower = more similar")
    score: float = Field(description="higher = more similar, in [0, 1] (a display score)")
    same: Optional[bool] = Field(description="decision at the calibrated threshold; null: model not calibrated")
    decision: Optional[Literal["same", "different"]] = None
    confidence: Optional[float] = Field(description="calibrated probability of 'same'; null: not calibrated")
    threshold: Optional[float] = Field(description="accept when distance <= threshold")
    model: Optional[str] = Field(None, description="the model's fingerprint")


class IdentityVerifyResponse(VerifyResponse):
    identity: str
    sample_id: int
    sample_distance: float
    n_samples: int
    scoring: str


class CandidateOut(BaseModel):
    identity: str
    distance: float
    score: float
    sample_id: Optional[int] = None


class IdentifyResponse(BaseModel):
    candidates: list[CandidateOut]
    decision: Optional[str] = Field(description="the identity, 'unknown', or null when the model is not calibrated")
    unknown: Optional[bool]
    threshold: Optional[float]
    confidence: Optional[float]
    scoring: str
    index: str
    note: Optional[str] = None
    model: Optional[str] = None


class SampleOut(BaseModel):
    id: int
    metadata: dict[str, Any]
    created: float
    has_input: bool
    format: Optional[str] = None


class IdentityOut(BaseModel):
    identity: str
    metadata: dict[str, Any]
    n_samples: int
    created: float
    updated: float
    samples: list[SampleOut] = []


class IdentityList(BaseModel):
    identities: list[IdentityOut]
    total: int


class DeleteResponse(BaseModel):
    identity: str
    removed_samples: int


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    model: Optional[str]
    calibrated: bool
    gallery: Optional[dict[str, int]] = None
    feedback: bool


class FeedbackIn(BaseModel):
    """A reported mistake. Images are base64 (standard alphabet) of PNG / JPEG / GIF /
    BMP / WebP files; they are validated like uploads and stored as sent.

    - ``kind="verify"``: ``image_a`` + ``image_b``, truth ``true_same``.
    - ``kind="identity_verify"``: ``image_a`` (the probe) + ``identity`` (the claim),
      truth ``true_same``.
    - ``kind="identify"``: ``image_a`` (the probe), truth ``true_identity`` (``"unknown"``
      when the person is not enrolled).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["verify", "identify", "identity_verify"]
    image_a: str = Field(min_length=1, description="base64 image (the probe, or the first image of a pair)")
    image_b: Optional[str] = Field(None, min_length=1, description="base64 image: the second image of a verify pair")
    identity: Optional[str] = Field(None, min_length=1, max_length=256, description="identity_verify: the claimed identity")
    predicted_same: Optional[bool] = None
    predicted_identity: Optional[str] = Field(None, max_length=256)
    predicted_distance: Optional[float] = Field(None, allow_inf_nan=False)
    true_same: Optional[bool] = None
    true_identity: Optional[str] = Field(None, min_length=1, max_length=256)
    reporter: Optional[str] = Field(None, max_length=200, description="who reported it (the API key's name is recorded too)")
    note: Optional[str] = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _consistent(self) -> "FeedbackIn":
        if self.kind == "verify":
            if self.image_b is None or self.true_same is None:
                raise ValueError("verify feedback needs image_b and true_same")
            if self.identity is not None or self.true_identity is not None:
                raise ValueError("verify feedback takes no identity / true_identity")
        elif self.kind == "identity_verify":
            if self.identity is None or self.true_same is None or self.image_b is not None:
                raise ValueError("identity_verify feedback needs identity and true_same, and one image")
        else:
            if self.true_identity is None or self.image_b is not None or self.true_same is not None:
                raise ValueError("identify feedback needs true_identity and one image (no true_same)")
        return self


class FeedbackOut(BaseModel):
    id: int
    kind: str
    status: str
    created: float
    actor: str


class FeedbackSummary(FeedbackOut):
    reporter: Optional[str] = None
    identity: Optional[str] = None
    predicted: dict[str, Any]
    truth: dict[str, Any]
    note: Optional[str] = None
    model_fingerprint: Optional[str] = None
    has_image_b: bool


class FeedbackList(BaseModel):
    feedback: list[FeedbackSummary]
    total: int


# --------------------------------------------------------------------------- metrics


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "siamkit_http_requests_total", "HTTP requests by route and status.", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "siamkit_http_request_duration_seconds", "Request latency by route.", ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.in_flight = Gauge("siamkit_http_requests_in_flight", "Requests being served.", registry=self.registry)
        self.decisions = Counter(
            "siamkit_decisions_total", "Decisions by endpoint (same / different / identified / unknown / uncalibrated).",
            ["endpoint", "decision"], registry=self.registry,
        )
        self.errors = Counter("siamkit_http_errors_total", "Error responses by code.", ["code"], registry=self.registry)


# --------------------------------------------------------------------------- guard middleware


class _GuardMiddleware:
    """Outermost ASGI layer: request id, body-size cap (header + stream), catch-all JSON
    500, security headers, Prometheus request metrics."""

    def __init__(self, app: Any, *, limits: Limits, metrics: _Metrics) -> None:
        self.app = app
        self.limits = limits
        self.metrics = metrics

    def _limit_for(self, path: str) -> int:
        return self.limits.max_json_bytes if path.rstrip("/") == "/v1/feedback" else self.limits.max_request_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope["siamkit.request_id"] = rid
        limit = self._limit_for(scope.get("path", ""))
        started = {"status": None}
        t0 = time.perf_counter()
        self.metrics.in_flight.inc()

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-request-id", rid.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-store"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        async def send_error(status: int, code: str, message: str) -> None:
            body = json.dumps(_error_json(status, code, message, rid)).encode()
            self.metrics.errors.labels(code).inc()
            await send_wrapper({
                "type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            })
            await send_wrapper({"type": "http.response.body", "body": body})

        try:
            headers = dict((k.lower(), v) for k, v in scope.get("headers", []))
            cl = headers.get(b"content-length")
            if cl is not None:
                try:
                    n = int(cl)
                except ValueError:
                    n = -1
                if n < 0:
                    await send_error(400, "bad_request", "invalid Content-Length header")
                    return
                if n > limit:
                    await send_error(413, "request_too_large", f"the request body is {n} bytes; the limit is {limit}")
                    return
            received = 0

            async def receive_wrapper() -> dict[str, Any]:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(limit)
                return message

            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except BodyTooLarge as e:
                if started["status"] is None:
                    await send_error(413, "request_too_large", e.detail["message"])
            except Exception:  # noqa: BLE001 - the edge: log, answer JSON, never a traceback
                logger.exception("unhandled error in %s %s (request %s)", scope.get("method"), scope.get("path"), rid)
                if started["status"] is None:
                    await send_error(500, "internal_error", "internal server error")
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            if method not in _METHODS:
                method = "OTHER"  # bounded label values
            status = started["status"] or 500
            self.metrics.requests.labels(method, route_path, str(status)).inc()
            self.metrics.latency.labels(method, route_path).observe(time.perf_counter() - t0)


# --------------------------------------------------------------------------- state


class _State:
    def __init__(self, settings: ServiceSettings) -> None:
        from ..gallery import Gallery

        self.settings = settings
        self.limits = settings.limits
        self.verifier = Verifier.from_dir(settings.model)
        net = self.verifier.network
        try:
            self.spec = net.input_spec.require_image()
        except ValueError as e:
            raise SiamkitError(f"cannot serve {settings.model}: {e}") from None
        self.fingerprint: str | None = getattr(net, "fingerprint", None)
        self.keys = settings.keys if isinstance(settings.keys, KeyStore) else KeyStore.load(settings.keys)
        if len(self.keys) == 0:
            raise SiamkitError("the keys file holds no key; create one with `siamkit keys add`")
        self.gallery = None
        self.feedback = None
        try:
            if settings.gallery is not None:
                self.gallery = Gallery.open(settings.gallery, self.verifier, create=True, index=settings.index)
            fb = settings.feedback
            if fb is None and settings.gallery is not None:
                fb = default_feedback_path(settings.gallery)
            if fb is not None:
                self.feedback = FeedbackStore.open(fb)
        except BaseException:
            self.close()
            raise
        n = settings.max_inference or os.cpu_count() or 1
        self.inference = threading.BoundedSemaphore(max(1, int(n)))
        self.write_lock = threading.Lock()
        self.metrics = _Metrics()

    def close(self) -> None:
        for thing in (self.gallery, self.feedback):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()

    def need_gallery(self) -> Any:
        if self.gallery is None:
            raise ApiError(503, "no_gallery", "this service runs without a gallery (start it with --gallery FILE)")
        return self.gallery

    def need_feedback(self) -> FeedbackStore:
        if self.feedback is None:
            raise ApiError(503, "no_feedback_store", "this service runs without a feedback store")
        return self.feedback

    def audit(self, actor: Principal, action: str, target: str | None, detail: dict[str, Any] | None = None) -> None:
        if self.feedback is None:
            return
        try:
            self.feedback.audit(actor.name, action, target, {"key_id": actor.key_id, **(detail or {})})
        except Exception as e:  # noqa: BLE001 - the gallery wrote; its own audit table has the event too
            logger.error("could not write the audit entry %s %s: %s", action, target, e)


# --------------------------------------------------------------------------- helpers


def _decision(same: bool | None) -> Optional[Literal["same", "different"]]:
    return None if same is None else ("same" if same else "different")


async def _read_upload(f: UploadFile, limits: Limits, what: str) -> bytes:
    data = await f.read(limits.max_image_bytes + 1)
    if len(data) > limits.max_image_bytes:
        raise ApiError(413, "image_too_large", f"{what} is larger than {limits.max_image_bytes} bytes")
    return data


def _b64_image(text: str, limits: Limits, what: str) -> bytes:
    if len(text) > (limits.max_image_bytes * 4) // 3 + 8:
        raise ApiError(413, "image_too_large", f"{what} is larger than {limits.max_image_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_base64", f"{what} is not valid base64") from None


def _content_type_dependency(kind: str) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        ct = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind == "multipart" and ct != "multipart/form-data":
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data with the images as files")
        if kind == "json" and ct != "application/json":
            raise ApiError(415, "unsupported_media_type", "send application/json")

    return check


# --------------------------------------------------------------------------- app


def create_app(settings: ServiceSettings) -> FastAPI:
    """Build the service. Loads the model, keys, gallery and feedback store now.

    Raises:
        SiamkitError (ModelFileError, KeyFileError, GalleryError, FeedbackError): a file
            cannot be used; the message names it.
    """
    state = _State(settings)
    limits = state.limits

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        try:
            yield
        finally:
            state.close()

    err = {
        s: {"model": ErrorResponse, "description": d}
        for s, d in [
            (400, "bad input"), (401, "missing or invalid API key"), (403, "the key's role is not allowed"),
            (413, "too large"), (415, "wrong content type or image format"), (422, "invalid request"),
            (503, "not available"),
        ]
    }
    app = FastAPI(
        title="siamkit", version=__version__, lifespan=lifespan, redoc_url=None,
        description="Siamese-network verification and identification (API key: X-API-Key or Authorization: Bearer).",
        responses={500: {"model": ErrorResponse, "description": "internal error"}},
    )
    app.state.siamkit = state
    app.add_middleware(_GuardMiddleware, limits=limits, metrics=state.metrics)

    # ----------------------------------------------------------------- error handlers

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if isinstance(detail, dict) and "code" in detail:
            code, message = str(detail["code"]), str(detail.get("message", ""))
        else:
            code = _STATUS_CODES.get(exc.status_code, "error")
            message = str(detail) if detail else code.replace("_", " ")
            if exc.status_code == 404:
                message = f"no such endpoint: {request.method} {request.url.path[:200]}"
        state.metrics.errors.labels(code).inc()
        return _error_response(request, exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for e in exc.errors()[:10]:
            details.append({
                "loc": [str(x)[:64] for x in e.get("loc", ())],
                "msg": str(e.get("msg", ""))[:200],
                "type": str(e.get("type", ""))[:64],
            })
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        message = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
        state.metrics.errors.labels("invalid_request").inc()
        return _error_response(request, 422, "invalid_request", message, details=details)

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, exc: UploadError) -> JSONResponse:
        state.metrics.errors.labels(exc.code).inc()
        return _error_response(request, exc.status, exc.code, exc.message)

    # ----------------------------------------------------------------- auth

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (sk_...)")
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")

    def _principal(
        api_key: Optional[str] = Depends(api_key_header),
        creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer),
    ) -> Principal:
        key = api_key or (creds.credentials if creds is not None else None)
        p = state.keys.authenticate(key) if key else None
        if p is None:
            raise ApiError(
                401, "unauthorized", "a valid API key is required (X-API-Key or Authorization: Bearer)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return p

    def require(role: str) -> Callable[..., Principal]:
        def dep(p: Principal = Depends(_principal)) -> Principal:
            if not p.has(role):
                raise ApiError(403, "forbidden", f"this needs an {role} key; key {p.name!r} has the role {p.role!r}")
            return p

        return dep

    read = require("read")
    admin = require("admin")
    multipart = Depends(_content_type_dependency("multipart"))
    json_only = Depends(_content_type_dependency("json"))

    # ----------------------------------------------------------------- work in threads

    def decode(data: bytes, what: str) -> Any:
        return decode_image(data, state.spec, limits, what=what)

    def run_inference(fn: Callable[..., Any], *args: Any) -> Any:
        with state.inference:
            try:
                return fn(*args)
            except (UploadError, HTTPException):
                raise
            except SiamkitError as e:
                raise _library_error(e) from None

    def run_write(fn: Callable[..., Any], *args: Any) -> Any:
        with state.write_lock, state.inference:
            try:
                return fn(*args)
            except (UploadError, HTTPException):
                raise
            except SiamkitError as e:
                raise _library_error(e) from None

    def check_identity_name(identity: str) -> str:
        from ..gallery.store import check_identity

        try:
            return check_identity(identity)
        except SiamkitError as e:
            raise ApiError(422, "invalid_identity", str(e)[:300]) from None

    # ----------------------------------------------------------------- service endpoints

    @app.get("/healthz", response_model=HealthResponse, tags=["service"], responses={503: err[503]})
    def healthz() -> Any:
        """Liveness and readiness: the model, calibration, gallery size."""
        gallery = None
        status = "ok"
        if state.gallery is not None:
            try:
                n_id, n_s = state.gallery.store.count()
                gallery = {"identities": int(n_id), "samples": int(n_s)}
            except Exception as e:  # noqa: BLE001
                logger.error("health check: gallery unreadable: %s", e)
                status = "degraded"
        body = HealthResponse(
            status=status, version=__version__, model=state.fingerprint,
            calibrated=state.verifier.calibrator is not None, gallery=gallery, feedback=state.feedback is not None,
        )
        return JSONResponse(body.model_dump(), status_code=200 if status == "ok" else 503)

    @app.get(
        "/metrics", tags=["service"], response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}, 401: err[401]},
    )
    def metrics(request: Request) -> Response:
        """Prometheus metrics: request counts and latencies by route, decisions, errors."""
        if not settings.public_metrics:
            key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if state.keys.authenticate(key) is None:
                raise ApiError(401, "unauthorized", "a valid API key is required", headers={"WWW-Authenticate": "Bearer"})
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ----------------------------------------------------------------- verify

    @app.post(
        "/v1/verify", response_model=VerifyResponse, tags=["verification"],
        dependencies=[multipart], responses={k: err[k] for k in (400, 401, 403, 413, 415, 422)},
    )
    async def verify(
        image_a: UploadFile = File(..., description="first image (PNG, JPEG, GIF, BMP, WebP)"),
        image_b: UploadFile = File(..., description="second image"),
        principal: Principal = Depends(read),
    ) -> Any:
        """Are these two images the same? Distance (lower = closer), score (higher = more
        similar), and when the model is calibrated, the decision and its confidence."""
        a = await _read_upload(image_a, limits, "image_a")
        b = await _read_upload(image_b, limits, "image_b")

        def work() -> Any:
            ta, tb = decode(a, "image_a"), decode(b, "image_b")
            return state.verifier.verify(ta, tb)

        r = await run_in_threadpool(run_inference, work)
        state.metrics.decisions.labels("verify", _decision(r.same) or "uncalibrated").inc()
        return VerifyResponse(
            distance=r.distance, score=r.score, same=r.same, decision=_decision(r.same), confidence=r.confidence,
            threshold=r.threshold, model=state.fingerprint,
        )

    # ----------------------------------------------------------------- gallery

    def IdentityPath() -> Any:  # noqa: N802 - a fresh parameter spec per route
        return PathParam(..., min_length=1, max_length=256, description="the identity's name")

    @app.post(
        "/v1/identities/{identity}/verify", response_model=IdentityVerifyResponse, tags=["gallery"],
        dependencies=[multipart], responses={k: err[k] for k in (400, 401, 403, 413, 415, 422, 503)} | {404: {"model": ErrorResponse}},
    )
    async def verify_identity(
        identity: str = IdentityPath(),
        image: UploadFile = File(..., description="the probe image"),
        principal: Principal = Depends(read),
    ) -> Any:
        """1:1: is this image the enrolled identity?"""
        g = state.need_gallery()
        data = await _read_upload(image, limits, "image")
        check_identity_name(identity)

        def work() -> Any:
            return g.verify(identity, decode(data, "image")[None])

        r = await run_in_threadpool(run_inference, work)
        state.metrics.decisions.labels("identity_verify", _decision(r.same) or "uncalibrated").inc()
        return IdentityVerifyResponse(
            identity=r.identity, distance=r.distance, score=r.score, same=r.same, decision=_decision(r.same),
            confidence=r.confidence, threshold=r.threshold, model=state.fingerprint, sample_id=r.sample_id,
            sample_distance=r.sample_distance, n_samples=r.n_samples, scoring=r.scoring,
        )

    @app.post(
        "/v1/identify", response_model=IdentifyResponse, tags=["gallery"],
        dependencies=[multipart], responses={k: err[k] for k in (400, 401, 403, 413, 415, 422, 503)},
    )
    async def identify(
        image: UploadFile = File(..., description="the probe image"),
        k: int = Query(5, ge=1, le=limits.max_k, description="candidates to return"),
        principal: Principal = Depends(read),
    ) -> Any:
        """1:N, open set: the k closest identities and the decision (an identity or
        "unknown")."""
        g = state.need_gallery()
        data = await _read_upload(image, limits, "image")

        def work() -> Any:
            return g.identify(decode(data, "image")[None], k=k)

        r = await run_in_threadpool(run_inference, work)
        label = "uncalibrated" if r.decision is None else ("unknown" if r.unknown else "identified")
        state.metrics.decisions.labels("identify", label).inc()
        return IdentifyResponse(
            candidates=[CandidateOut(**c.to_dict()) for c in r.candidates], decision=r.decision, unknown=r.unknown,
            threshold=r.threshold, confidence=r.confidence, scoring=r.scoring, index=r.index, note=r.note,
            model=state.fingerprint,
        )

    def _identity_out(rec: Any) -> IdentityOut:
        return IdentityOut(**rec.to_dict())

    @app.get("/v1/identities", response_model=IdentityList, tags=["gallery"], responses={k: err[k] for k in (401, 403, 422, 503)})
    async def list_identities(
        limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
        principal: Principal = Depends(read),
    ) -> Any:
        """Enrolled identities (metadata, sample counts), in enrolment order."""
        g = state.need_gallery()
        recs = await run_in_threadpool(run_inference, g.list)
        return IdentityList(identities=[_identity_out(r) for r in recs[offset : offset + limit]], total=len(recs))

    @app.get(
        "/v1/identities/{identity}", response_model=IdentityOut, tags=["gallery"],
        responses={k: err[k] for k in (401, 403, 422, 503)} | {404: {"model": ErrorResponse}},
    )
    async def get_identity(identity: str = IdentityPath(), principal: Principal = Depends(read)) -> Any:
        """One identity with its samples."""
        g = state.need_gallery()
        check_identity_name(identity)
        return _identity_out(await run_in_threadpool(run_inference, g.get, identity))

    def _parse_metadata(text: Optional[str]) -> Optional[dict[str, Any]]:
        if text is None or text == "":
            return None
        if len(text) > limits.max_text:
            raise ApiError(413, "metadata_too_large", f"metadata is longer than {limits.max_text} characters")
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise ApiError(422, "invalid_metadata", "metadata must be a JSON object") from None
        if not isinstance(value, dict):
            raise ApiError(422, "invalid_metadata", "metadata must be a JSON object")
        return value

    async def _read_batch(images: list[UploadFile]) -> list[bytes]:
        if len(images) == 0:
            raise ApiError(422, "invalid_request", "send at least one image")
        if len(images) > limits.max_batch:
            raise ApiError(413, "batch_too_large", f"{len(images)} images; the limit is {limits.max_batch} per request")
        return [await _read_upload(f, limits, f"images[{i}]") for i, f in enumerate(images)]

    def _stack(datas: list[bytes]) -> Any:
        import torch

        return torch.stack([decode(d, f"images[{i}]") for i, d in enumerate(datas)])

    @app.post(
        "/v1/identities", response_model=IdentityOut, status_code=201, tags=["gallery"], dependencies=[multipart],
        responses={k: err[k] for k in (400, 401, 403, 413, 415, 422, 503)} | {409: {"model": ErrorResponse, "description": "already enrolled"}},
    )
    async def enroll(
        identity: str = Form(..., min_length=1, max_length=256, description="the new identity's name"),
        images: list[UploadFile] = File(..., description="1..max_batch images of the identity"),
        metadata: Optional[str] = Form(None, description="a JSON object kept with the identity"),
        principal: Principal = Depends(admin),
    ) -> Any:
        """Enrol a new identity (one transaction: all its samples or nothing)."""
        g = state.need_gallery()
        check_identity_name(identity)
        meta = _parse_metadata(metadata)
        datas = await _read_batch(images)

        def work() -> Any:
            x = _stack(datas)
            return g.enroll(identity, x, metadata=meta)

        rec = await run_in_threadpool(run_write, work)
        state.audit(principal, "enroll", identity, {"n_samples": rec.n_samples})
        return _identity_out(rec)

    @app.post(
        "/v1/identities/{identity}/samples", response_model=IdentityOut, tags=["gallery"], dependencies=[multipart],
        responses={k: err[k] for k in (400, 401, 403, 413, 415, 422, 503)} | {404: {"model": ErrorResponse}},
    )
    async def add_samples(
        identity: str = IdentityPath(),
        images: list[UploadFile] = File(..., description="1..max_batch more images of the identity"),
        principal: Principal = Depends(admin),
    ) -> Any:
        """Add samples to an enrolled identity (one transaction)."""
        g = state.need_gallery()
        check_identity_name(identity)
        datas = await _read_batch(images)

        def work() -> Any:
            return g.add_samples(identity, _stack(datas))

        rec = await run_in_threadpool(run_write, work)
        state.audit(principal, "add_samples", identity, {"n_added": len(datas), "n_samples": rec.n_samples})
        return _identity_out(rec)

    @app.delete(
        "/v1/identities/{identity}", response_model=DeleteResponse, tags=["gallery"],
        responses={k: err[k] for k in (401, 403, 422, 503)} | {404: {"model": ErrorResponse}},
    )
    async def delete_identity(identity: str = IdentityPath(), principal: Principal = Depends(admin)) -> Any:
        """Remove an identity and all its samples (one transaction)."""
        g = state.need_gallery()
        check_identity_name(identity)
        n = await run_in_threadpool(run_write, g.remove, identity)
        state.audit(principal, "delete", identity, {"n_samples": n})
        return DeleteResponse(identity=identity, removed_samples=int(n))

    # ----------------------------------------------------------------- feedback

    @app.post(
        "/v1/feedback", response_model=FeedbackOut, status_code=201, tags=["feedback"], dependencies=[json_only],
        responses={k: err[k] for k in (400, 401, 403, 413, 415, 422, 503)},
    )
    async def post_feedback(body: FeedbackIn, principal: Principal = Depends(admin)) -> Any:
        """Record a reported mistake: the pair or probe, what the system said, what is
        true, who reported it and when (the server's time). Used by ``siamkit finetune``."""
        store = state.need_feedback()
        a = _b64_image(body.image_a, limits, "image_a")
        b = _b64_image(body.image_b, limits, "image_b") if body.image_b is not None else None
        if body.identity is not None:
            check_identity_name(body.identity)

        def work() -> Any:
            decode(a, "image_a")  # validated like an upload; stored as sent
            if b is not None:
                decode(b, "image_b")
            predicted = {
                k: v for k, v in {
                    "same": body.predicted_same, "identity": body.predicted_identity, "distance": body.predicted_distance,
                }.items() if v is not None
            }
            truth = {"same": body.true_same} if body.kind != "identify" else {"identity": body.true_identity}
            fid = store.add(
                actor=principal.name, kind=body.kind, image_a=(a, sniff_image_format(a[:32]) or "?"),
                image_b=None if b is None else (b, sniff_image_format(b[:32]) or "?"), identity=body.identity,
                predicted=predicted, truth=truth, reporter=body.reporter, note=body.note,
                model_fingerprint=state.fingerprint,
            )
            return store.get(fid)

        rec = await run_in_threadpool(run_inference, work)
        return FeedbackOut(id=rec.id, kind=rec.kind, status=rec.status, created=rec.created, actor=rec.actor)

    @app.get("/v1/feedback", response_model=FeedbackList, tags=["feedback"], responses={k: err[k] for k in (401, 403, 422, 503)})
    async def list_feedback(
        status: Optional[Literal["new", "used", "rejected"]] = Query(None),
        limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
        principal: Principal = Depends(admin),
    ) -> Any:
        """Review the reported mistakes (without their images), oldest first."""
        store = state.need_feedback()
        recs, total = await run_in_threadpool(lambda: (store.list(status=status, limit=limit, offset=offset), store.count(status)))
        return FeedbackList(feedback=[FeedbackSummary(**r.summary()) for r in recs], total=total)

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
            model=Path(env["SIAMKIT_MODEL"]), keys=Path(env["SIAMKIT_KEYS"]),
            gallery=Path(env["SIAMKIT_GALLERY"]) if env.get("SIAMKIT_GALLERY") else None,
            feedback=Path(env["SIAMKIT_FEEDBACK"]) if env.get("SIAMKIT_FEEDBACK") else None,
        )
    )
