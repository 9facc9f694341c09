"""``POST /v1/verify``: are these two images the same?"""

from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends, File, UploadFile
from starlette.concurrency import run_in_threadpool

from ..deps import AuthFirstRoute, MULTIPART, READ, ServiceState, get_state
from ..errors import error_responses
from ..schemas import VerifyResponse
from ..uploads import read_upload

__all__ = ["router", "verify", "decision_label", "verdict_fields"]

router = APIRouter(route_class=AuthFirstRoute, tags=["verification"])


def decision_label(same: bool | None) -> Optional[Literal["same", "different"]]:
    """``"same"`` / ``"different"``, or None when the model is not calibrated."""
    return None if same is None else ("same" if same else "different")


def verdict_fields(result: Any, state: ServiceState, endpoint: str) -> dict[str, Any]:
    """The :class:`~siamkit.service.schemas.VerifyResponse` fields of a 1:1 result, its
    decision counted in the metrics.

    Args:
        result: a :class:`~siamkit.verify.Verification` or
            :class:`~siamkit.gallery.GalleryVerification`.
        state: the service state (metrics, the model's fingerprint).
        endpoint: the metrics label (``verify``, ``identity_verify``).

    Returns:
        distance, score, same, decision, confidence, threshold and model.
    """
    decision = decision_label(result.same)
    state.metrics.decisions.labels(endpoint, decision or "uncalibrated").inc()
    return dict(
        distance=result.distance, score=result.score, same=result.same, decision=decision,
        confidence=result.confidence, threshold=result.threshold, model=state.fingerprint,
    )


@router.post(
    "/v1/verify", response_model=VerifyResponse, dependencies=[MULTIPART, READ],
    responses=error_responses(400, 401, 403, 413, 415, 422),
)
async def verify(
    image_a: UploadFile = File(..., description="first image (PNG, JPEG, GIF, BMP, WebP)"),
    image_b: UploadFile = File(..., description="second image"),
    state: ServiceState = Depends(get_state),
) -> Any:
    """Are these two images the same? Distance (lower = closer), score (higher = more
    similar), and when the model is calibrated, the decision and its confidence.
    \f
    Args:
        image_a: the first image.
        image_b: the second image.
        state: the app's state (the verifier).

    Returns:
        A :class:`~siamkit.service.schemas.VerifyResponse`.
    """
    a = await read_upload(image_a, state.limits, "image_a")
    b = await read_upload(image_b, state.limits, "image_b")

    def work() -> Any:
        return state.verifier.verify(state.decode(a, "image_a"), state.decode(b, "image_b"))

    r = await run_in_threadpool(state.run_inference, work)
    return VerifyResponse(**verdict_fields(r, state, "verify"))
