"""The guard middleware: the outermost ASGI layer of the service.

It gives every request an id (``X-Request-ID``), caps the request body from its
Content-Length header *and* while it streams (chunked bodies), answers any unexpected
exception with a JSON 500 (a traceback is logged, never sent), adds the security headers
and records the Prometheus request metrics.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Callable

from .errors import BodyTooLarge, error_json
from .images import Limits
from .metrics import ServiceMetrics

__all__ = ["GuardMiddleware"]

logger = logging.getLogger(__name__)

_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]


class _Exchange:
    """One HTTP request passing through the guard: its id, its response status once
    started, and the wrapped ``receive`` / ``send``."""

    def __init__(self, receive: Callable[..., Any], send: Callable[..., Any], *, limit: int, metrics: ServiceMetrics) -> None:
        self.rid = uuid.uuid4().hex
        self.status: int | None = None
        self.limit = limit
        self.received = 0
        self.metrics = metrics
        self._receive = receive
        self._send = send

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", [])) + [(b"x-request-id", self.rid.encode()), *_SECURITY_HEADERS]
            message = {**message, "headers": headers}
        await self._send(message)

    async def receive(self) -> dict[str, Any]:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise BodyTooLarge(self.limit)
        return message

    async def send_error(self, status: int, code: str, message: str) -> None:
        """Answer with the JSON error shape (counted in the error metrics).

        Args:
            status: the HTTP status.
            code: the machine-readable error code.
            message: the human-readable message.
        """
        body = json.dumps(error_json(code, message, self.rid)).encode()
        self.metrics.errors.labels(code).inc()
        await self.send({
            "type": "http.response.start", "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        })
        await self.send({"type": "http.response.body", "body": body})

    def content_length_error(self, headers: list[tuple[bytes, bytes]]) -> tuple[int, str, str] | None:
        """The error to answer for the Content-Length header (invalid or over the limit), or None."""
        cl = dict((k.lower(), v) for k, v in headers).get(b"content-length")
        if cl is None:
            return None
        try:
            n = int(cl)
        except ValueError:
            n = -1
        if n < 0:
            return 400, "bad_request", "invalid Content-Length header"
        if n > self.limit:
            return 413, "request_too_large", f"the request body is {n} bytes; the limit is {self.limit}"
        return None


class GuardMiddleware:
    """Outermost ASGI layer: request id, body-size cap (header + stream), catch-all JSON
    500, security headers, Prometheus request metrics.

    Args:
        app: the ASGI app it wraps.
        limits: the service's limits (``max_request_bytes``; ``max_json_bytes`` for
            ``/v1/feedback``).
        metrics: where requests, latencies and errors are counted.
    """

    def __init__(self, app: Any, *, limits: Limits, metrics: ServiceMetrics) -> None:
        self.app = app
        self.limits = limits
        self.metrics = metrics

    def _limit_for(self, path: str) -> int:
        return self.limits.max_json_bytes if path.rstrip("/") == "/v1/feedback" else self.limits.max_request_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ex = _Exchange(receive, send, limit=self._limit_for(scope.get("path", "")), metrics=self.metrics)
        scope["siamkit.request_id"] = ex.rid
        t0 = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            refused = ex.content_length_error(scope.get("headers", []))
            if refused is not None:
                await ex.send_error(*refused)
                return
            await self._serve(scope, ex)
        finally:
            self.metrics.in_flight.dec()
            route_path = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(scope.get("method", ""), route_path, ex.status or 500, time.perf_counter() - t0)

    async def _serve(self, scope: dict[str, Any], ex: _Exchange) -> None:
        try:
            await self.app(scope, ex.receive, ex.send)
        except BodyTooLarge as e:
            if ex.status is None:
                await ex.send_error(413, "request_too_large", e.detail["message"])
        except Exception:  # noqa: BLE001 - the edge: log, answer JSON, never a traceback
            logger.exception("unhandled error in %s %s (request %s)", scope.get("method"), scope.get("path"), ex.rid)
            if ex.status is None:
                await ex.send_error(500, "internal_error", "internal server error")
