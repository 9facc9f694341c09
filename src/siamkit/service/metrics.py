"""The service's Prometheus metrics: one registry per app (two apps in one process do not
share counters)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """Request counts and latencies by route, requests in flight, decisions and errors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "siamkit_http_requests_total", "HTTP requests by route and status.", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "siamkit_http_request_duration_seconds", "Request latency by route.", ["method", "route"],
            buckets=_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge("siamkit_http_requests_in_flight", "Requests being served.", registry=self.registry)
        self.decisions = Counter(
            "siamkit_decisions_total", "Decisions by endpoint (same / different / identified / unknown / uncalibrated).",
            ["endpoint", "decision"], registry=self.registry,
        )
        self.errors = Counter("siamkit_http_errors_total", "Error responses by code.", ["code"], registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency.

        Args:
            method: the HTTP method (an unknown one is counted as ``OTHER``: bounded labels).
            route: the matched route's path template, or ``unmatched``.
            status: the response status.
            seconds: how long it took.
        """
        if method not in _METHODS:
            method = "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        """The metrics in the Prometheus text format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)
