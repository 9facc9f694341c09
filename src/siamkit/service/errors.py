"""The service's errors: :class:`ApiError`, the one JSON error shape, the mapping from
library errors to HTTP statuses, and the exception handlers that answer with it.

Every error is ``{"error": {"code": ..., "message": ..., "request_id": ...}}`` (plus
``details`` for validation errors). Library errors are mapped by their *type*
(:mod:`siamkit.errors`), never by their message.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    DataError,
    FeedbackError,
    FeedbackLockedError,
    FeedbackUnavailableError,
    GalleryError,
    GalleryLockedError,
    GalleryModelChangedError,
    GalleryUnavailableError,
    IdentityExistsError,
    ModelMismatchError,
    UnknownIdentityError,
)
from .images import UploadError
from .schemas import ErrorResponse

__all__ = [
    "ApiError",
    "BodyTooLarge",
    "STATUS_CODES",
    "NOT_FOUND",
    "error_json",
    "error_response",
    "error_responses",
    "library_error",
    "EXCEPTION_HANDLERS",
]

STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 409: "conflict", 411: "length_required", 413: "request_too_large",
    415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests", 500: "internal_error",
    503: "unavailable",
}

# (library error type, HTTP status, code), most specific first: the first match wins.
_LIBRARY_ERRORS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int, str], ...] = (
    (UnknownIdentityError, 404, "unknown_identity"),
    (IdentityExistsError, 409, "identity_exists"),
    (GalleryModelChangedError, 503, "gallery_model_changed"),
    (ModelMismatchError, 409, "model_mismatch"),
    (FeedbackUnavailableError, 503, "feedback_unavailable"),
    (GalleryUnavailableError, 503, "gallery_unavailable"),
    ((GalleryLockedError, FeedbackLockedError), 503, "gallery_busy"),
    (FeedbackError, 422, "invalid_feedback"),
    (GalleryError, 422, "invalid_request"),
    (DataError, 422, "invalid_input"),
)

_DESCRIPTIONS = {
    400: "bad input", 401: "missing or invalid API key", 403: "the key's role is not allowed", 413: "too large",
    415: "wrong content type or image format", 422: "invalid request", 503: "not available",
}

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}
"""The OpenAPI ``responses`` entry of an endpoint that answers 404 for an unknown identity."""


class ApiError(HTTPException):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``.

    Args:
        status: the HTTP status.
        code: the machine-readable error code.
        message: the human-readable message.
        headers: extra response headers (e.g. ``WWW-Authenticate``).
    """

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail={"code": code, "message": message}, headers=headers)


class BodyTooLarge(ApiError):
    """The request body streamed past its limit (413 ``request_too_large``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "request_too_large", f"the request body is larger than {limit} bytes")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of these error statuses.

    Args:
        statuses: HTTP statuses among 400, 401, 403, 413, 415, 422, 503.

    Returns:
        ``{status: {"model": ErrorResponse, "description": ...}}``.
    """
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in statuses}


def error_json(code: str, message: str, request_id: str | None, details: list[Any] | None = None) -> dict[str, Any]:
    """The JSON body of an error response.

    Args:
        code: the machine-readable error code.
        message: the human-readable message.
        request_id: the request's id (left out when None).
        details: validation details (left out when empty).

    Returns:
        ``{"error": {"code", "message", ["request_id"], ["details"]}}``.
    """
    body: dict[str, Any] = {"code": code, "message": message}
    if request_id:
        body["request_id"] = request_id
    if details:
        body["details"] = details
    return {"error": body}


def error_response(
    request: Request, status: int, code: str, message: str, *, details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error response for ``request`` (with its request id), counted in the metrics.

    Args:
        request: the request being answered.
        status: the HTTP status.
        code: the machine-readable error code.
        message: the human-readable message.
        details: validation details.
        headers: extra response headers.

    Returns:
        The JSON response.
    """
    request.app.state.siamkit.metrics.errors.labels(code).inc()
    rid = request.scope.get("siamkit.request_id")
    return JSONResponse(error_json(code, message, rid, details), status_code=status, headers=headers)


def library_error(e: Exception) -> ApiError:
    """Map a library exception to an HTTP error (status, code, message) by its type."""
    if isinstance(e, UploadError):
        return ApiError(e.status, e.code, e.message)
    msg = str(e)[:500]
    for types, status, code in _LIBRARY_ERRORS:
        if isinstance(e, types):
            return ApiError(status, code, msg)
    return ApiError(422, "invalid_request", msg)


# --------------------------------------------------------------------------- exception handlers


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """An :class:`ApiError` or any Starlette HTTP error (404, 405, ...)."""
    detail = exc.detail
    if isinstance(detail, dict) and "code" in detail:
        code, message = str(detail["code"]), str(detail.get("message", ""))
    else:
        code = STATUS_CODES.get(exc.status_code, "error")
        message = str(detail) if detail else code.replace("_", " ")
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path[:200]}"
    return error_response(request, exc.status_code, code, message, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 ``invalid_request`` with (bounded) details: no input values are echoed."""
    details = []
    for e in exc.errors()[:10]:
        details.append({
            "loc": [str(x)[:64] for x in e.get("loc", ())],
            "msg": str(e.get("msg", ""))[:200],
            "type": str(e.get("type", ""))[:64],
        })
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    message = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
    return error_response(request, 422, "invalid_request", message, details=details)


async def _upload_error(request: Request, exc: UploadError) -> JSONResponse:
    """An :class:`~siamkit.service.images.UploadError`, with its status and code."""
    return error_response(request, exc.status, exc.code, exc.message)


EXCEPTION_HANDLERS: dict[type[Exception], Callable[[Request, Any], Awaitable[JSONResponse]]] = {
    StarletteHTTPException: _http_error,
    RequestValidationError: _validation_error,
    UploadError: _upload_error,
}
"""The app's exception handlers: every such error is answered with the JSON error shape
(anything else becomes a JSON 500 in :class:`~siamkit.service.middleware.GuardMiddleware`)."""
