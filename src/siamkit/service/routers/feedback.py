"""``POST /v1/feedback`` (record a reported mistake) and ``GET /v1/feedback`` (review them)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from ..deps import AuthFirstRoute, ADMIN, JSON_ONLY, ServiceState, check_identity_name, get_state, require_admin
from ..errors import error_responses
from ...feedback import FeedbackStore
from ..images import sniff_image_format
from ..schemas import FeedbackIn, FeedbackList, FeedbackOut, FeedbackSummary
from ..security import Principal
from ..uploads import b64_image

__all__ = ["router", "post_feedback", "list_feedback"]

router = APIRouter(route_class=AuthFirstRoute, tags=["feedback"])


def _stored_image(data: bytes) -> tuple[bytes, str]:
    return data, sniff_image_format(data[:32]) or "?"


def _record(state: ServiceState, store: FeedbackStore, body: FeedbackIn, principal: Principal, a: bytes, b: bytes | None) -> Any:
    """Validate the images like uploads (they are stored as sent), store the report and
    return its record. Runs in a worker thread."""
    state.decode(a, "image_a")
    if b is not None:
        state.decode(b, "image_b")
    predicted = {
        k: v for k, v in {
            "same": body.predicted_same, "identity": body.predicted_identity, "distance": body.predicted_distance,
        }.items() if v is not None
    }
    truth = {"same": body.true_same} if body.kind != "identify" else {"identity": body.true_identity}
    fid = store.add(
        actor=principal.name, kind=body.kind, image_a=_stored_image(a),
        image_b=None if b is None else _stored_image(b), identity=body.identity,
        predicted=predicted, truth=truth, reporter=body.reporter, note=body.note,
        model_fingerprint=state.fingerprint,
    )
    return store.get(fid)


@router.post(
    "/v1/feedback", response_model=FeedbackOut, status_code=201, dependencies=[JSON_ONLY],
    responses=error_responses(400, 401, 403, 413, 415, 422, 503),
)
async def post_feedback(
    body: FeedbackIn, principal: Principal = Depends(require_admin), state: ServiceState = Depends(get_state),
) -> Any:
    """Record a reported mistake: the pair or probe, what the system said, what is
    true, who reported it and when (the server's time). Used by ``siamkit finetune``.
    \f
    Args:
        body: the report.
        principal: who reports it (an admin key; its name is stored as the actor).
        state: the app's state (the feedback store).

    Returns:
        The stored report's :class:`~siamkit.service.schemas.FeedbackOut`.
    """
    store = state.need_feedback()
    a = b64_image(body.image_a, state.limits, "image_a")
    b = b64_image(body.image_b, state.limits, "image_b") if body.image_b is not None else None
    if body.identity is not None:
        check_identity_name(body.identity)
    rec = await run_in_threadpool(state.run_inference, _record, state, store, body, principal, a, b)
    return FeedbackOut(id=rec.id, kind=rec.kind, status=rec.status, created=rec.created, actor=rec.actor)


@router.get(
    "/v1/feedback", response_model=FeedbackList, dependencies=[ADMIN], responses=error_responses(401, 403, 422, 503),
)
async def list_feedback(
    status: Optional[Literal["new", "used", "rejected"]] = Query(None),
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
    state: ServiceState = Depends(get_state),
) -> Any:
    """Review the reported mistakes (without their images), oldest first.
    \f
    Args:
        status: only the reports with this status (None: all).
        limit: the page size.
        offset: where the page starts.
        state: the app's state (the feedback store).

    Returns:
        A :class:`~siamkit.service.schemas.FeedbackList`; ``total`` counts every matching report.
    """
    store = state.need_feedback()

    def page() -> tuple[list[Any], int]:
        return store.list(status=status, limit=limit, offset=offset), store.count(status)

    recs, total = await run_in_threadpool(page)
    return FeedbackList(feedback=[FeedbackSummary(**r.summary()) for r in recs], total=total)
