"""``GET /healthz`` (liveness and readiness) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ... import __version__
from ..deps import AuthFirstRoute, ServiceState, get_state
from ..errors import ApiError, error_responses
from ..feedback_metrics import feedback_metrics_text
from ..metrics import CONTENT_TYPE_LATEST
from ..schemas import HealthResponse

__all__ = ["router", "healthz", "metrics"]

logger = logging.getLogger(__name__)

router = APIRouter(route_class=AuthFirstRoute, tags=["service"])


@router.get("/healthz", response_model=HealthResponse, responses=error_responses(503))
def healthz(state: ServiceState = Depends(get_state)) -> Any:
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


@router.get(
    "/metrics", response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}} | error_responses(401),
)
def metrics(request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """Prometheus metrics: request counts and latencies by route, decisions, errors, feedback reports.
    \f
    Args:
        request: the request (its API key, when the metrics are not public).
        state: the service state.

    Returns:
        The metrics in the Prometheus text format.
    """
    if not state.settings.public_metrics:
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if state.keys.authenticate(key) is None:
            raise ApiError(401, "unauthorized", "a valid API key is required", headers={"WWW-Authenticate": "Bearer"})
    return Response(state.metrics.render() + feedback_metrics_text(state.feedback), media_type=CONTENT_TYPE_LATEST)
