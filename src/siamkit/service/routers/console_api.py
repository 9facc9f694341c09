"""The endpoints the console needs beyond the public API: who the key is, a search of the
identities by name, thumbnails of
stored samples and reported images, the audit log, the model card and its plots, the
domain-shift check, the feedback review queue, a review verdict and the ``siamkit
finetune`` command line.

Every one checks the key first (:class:`~siamkit.service.deps.AuthFirstRoute`) and its
role: reads (``whoami``, the name search, thumbnails of samples, model card, plots, shift) need a read key;
whatever shows who did what or reported what (audit, the queue, report images, the
finetune command) and every change (a review) needs an admin key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path as PathParam, Query
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from ...feedback import review_report, screen_reports
from ..console_card import PLOT_NAMES, finetune_command, model_card, plot_path
from ..console_schemas import (
    AuditEntry,
    AuditLog,
    FeedbackQueue,
    FinetuneCommand,
    ModelCard,
    QueueItem,
    ReviewIn,
    ReviewOut,
    ShiftOut,
    WhoAmI,
)
from ..deps import ADMIN, JSON_ONLY, READ, AuthFirstRoute, ServiceState, get_state, principal, require_admin
from ..errors import NOT_FOUND, ApiError, error_responses
from ..schemas import IdentityList, IdentityOut
from ..security import Principal
from ..thumbnails import MAX_SIZE, MIN_SIZE, image_bytes_png, stored_sample_png
from .gallery import IdentityPath

__all__ = [
    "router",
    "whoami",
    "sample_thumbnail",
    "search_identities",
    "audit_log",
    "get_model_card",
    "model_plot",
    "model_shift",
    "feedback_queue",
    "review_feedback",
    "feedback_thumbnail",
    "get_finetune_command",
]

router = APIRouter(route_class=AuthFirstRoute, tags=["console"])

#: the newest audit entries the queue reads for who accepted a report
AUDIT_SCAN = 20_000
_PNG = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}
_READ = error_responses(401, 403, 422, 503) | NOT_FOUND


def _size_query() -> Any:
    return Query(96, ge=MIN_SIZE, le=MAX_SIZE, description="the thumbnail's largest edge, pixels")


def _png(data: bytes | None, what: str) -> Response:
    if data is None:
        raise ApiError(404, "no_thumbnail", f"{what} cannot be drawn (its input was not kept, or is not an image)")
    return Response(data, media_type="image/png")


@router.get("/v1/whoami", response_model=WhoAmI, responses=error_responses(401))
async def whoami(p: Principal = Depends(principal)) -> Any:
    """The calling key's name, id and role (the console signs in with it)."""
    return WhoAmI(name=p.name, key_id=p.key_id, role=p.role)  # type: ignore[arg-type]


@router.get(
    "/v1/identities/{identity}/samples/{sample_id}/thumbnail", response_class=Response, dependencies=[READ],
    responses=_PNG | _READ,
)
async def sample_thumbnail(
    identity: str = IdentityPath(), sample_id: int = PathParam(..., ge=0, le=2**62), size: int = _size_query(),
    state: ServiceState = Depends(get_state),
) -> Response:
    """A small PNG of an enrolled sample, drawn by the server from what the gallery kept
    (never the original file).
    \f
    Args:
        identity: whose sample.
        sample_id: the sample's id (``GET /v1/identities/{identity}``).
        size: the largest edge.
        state: the app's state.

    Returns:
        ``image/png``; 404 when the sample is not the identity's or was kept without its input.
    """
    g = state.gallery_for(identity)

    def work() -> bytes | None:
        found = g.store.stored_sample(sample_id)
        if found is None or found[0] != identity:
            raise ApiError(404, "unknown_sample", f"identity {identity!r} has no sample {sample_id}")
        return None if found[1] is None else stored_sample_png(found[1], size, max_pixels=state.limits.max_pixels)

    return _png(await run_in_threadpool(state.run_inference, work), f"sample {sample_id}")


@router.get("/v1/identity-search", response_model=IdentityList, dependencies=[READ], responses=error_responses(401, 403, 422, 503))
async def search_identities(
    q: str = Query(..., min_length=1, max_length=256, description="part of the name (case-insensitive)"),
    limit: int = Query(100, ge=1, le=1000), state: ServiceState = Depends(get_state),
) -> Any:
    """Enrolled identities whose name contains ``q`` (case-insensitive), in enrolment order.
    \f
    Args:
        q: the text to look for.
        limit: at most this many.
        state: the app's state.

    Returns:
        An :class:`~siamkit.service.schemas.IdentityList`; ``total`` counts every match.
    """
    g = state.need_gallery()
    needle = q.casefold()
    recs = [r for r in await run_in_threadpool(state.run_inference, g.list) if needle in r.identity.casefold()]
    return IdentityList(identities=[IdentityOut(**r.to_dict()) for r in recs[:limit]], total=len(recs))


@router.get("/v1/audit", response_model=AuditLog, dependencies=[ADMIN], responses=error_responses(401, 403, 422, 503))
async def audit_log(
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**6), state: ServiceState = Depends(get_state),
) -> Any:
    """Who did what, newest first: the service's audit log (enrol, add samples, delete,
    feedback, reviews, fine-tunes), or the gallery's own log when the service has no
    feedback store.
    \f
    Args:
        limit: the page size.
        offset: where the page starts.
        state: the app's state.

    Returns:
        An :class:`~siamkit.service.console_schemas.AuditLog`.
    """
    if state.feedback is not None:
        rows = await run_in_threadpool(state.feedback.audit_log, offset + limit)
        entries = [AuditEntry(**r) for r in rows[offset:]]
        return AuditLog(entries=entries, source="feedback_store")
    g = state.need_gallery()
    rows = await run_in_threadpool(g.audit_log, offset + limit)
    entries = [
        AuditEntry(id=r["id"], time=r["time"], action=r["action"], target=r["identity"],
                   detail={"n_samples": r["n_samples"], **(r["detail"] or {})})
        for r in rows[offset:]
    ]
    return AuditLog(entries=entries, source="gallery")


@router.get("/v1/model", response_model=ModelCard, dependencies=[READ], responses=error_responses(401, 403))
async def get_model_card(state: ServiceState = Depends(get_state)) -> Any:
    """The model card: network, training configuration and split, calibration, where each
    decision's threshold comes from, report metrics and the plots available.
    \f
    Args:
        state: the app's state.

    Returns:
        A :class:`~siamkit.service.console_schemas.ModelCard`.
    """
    return ModelCard(**await run_in_threadpool(state.run_inference, model_card, state))


@router.get("/v1/model/plots/{name}", response_class=FileResponse, dependencies=[READ], responses=_PNG | _READ)
async def model_plot(name: str = PathParam(..., max_length=64), state: ServiceState = Depends(get_state)) -> Any:
    """One of the model's report plots, by name (``GET /v1/model`` lists them).
    \f
    Args:
        name: a plot's name (``distances.png``, ``roc.png``, ...).
        state: the app's state.

    Returns:
        The PNG file.
    """
    path = plot_path(state.settings.model, name)
    if path is None:
        raise ApiError(404, "unknown_plot", f"no plot {name[:64]!r}; the model card lists those there are (of {list(PLOT_NAMES)})")
    return FileResponse(path, media_type="image/png")


@router.get("/v1/model/shift", response_model=ShiftOut, dependencies=[READ], responses=error_responses(401, 403, 503))
async def model_shift(state: ServiceState = Depends(get_state)) -> Any:
    """Have the gallery's impostor distances moved away from the model's calibration?
    (:func:`siamkit.gallery.selfcal.gallery_shift`: every pair of samples of two enrolled
    identities against the calibration's score summary.)
    \f
    Args:
        state: the app's state.

    Returns:
        A :class:`~siamkit.service.console_schemas.ShiftOut`.
    """
    from dataclasses import asdict

    from ...gallery.selfcal import gallery_shift

    g = state.need_gallery()
    rep = await run_in_threadpool(state.run_inference, gallery_shift, g)
    if rep is None:
        return ShiftOut(available=False, note="no check: the model's calibration has no score summary, or the gallery "
                        "holds fewer than two identities")
    return ShiftOut(available=True, report=asdict(rep))


def _accepted_by(audit: Iterable[dict[str, Any]]) -> dict[int, str]:
    """Feedback id -> the reviewer who last put it back to ``new`` (accepted it)."""
    out: dict[int, str] = {}
    for row in audit:  # newest first: the first seen wins
        if row["action"] == "feedback_new":
            for i in (row.get("detail") or {}).get("ids", []):
                out.setdefault(int(i), row["actor"])
    return out


def _queue(state: ServiceState, min_reporters: int) -> tuple[list[QueueItem], int]:
    store = state.need_feedback()
    recs = store.list(status="new") + store.list(status="held")
    sc = screen_reports(recs, min_reporters=min_reporters)
    by_id = {r.id: r for r in recs}
    teaching = {i: len({by_id[j].actor for j in ids}) for ids in sc.members.values() for i in ids}
    held = set(sc.held)
    accepted = _accepted_by(store.audit_log(AUDIT_SCAN))
    items = []
    for r in sorted(recs, key=lambda r: r.id):
        state_ = "held" if r.id in held else ("teaches" if r.id in teaching else "waiting")
        n = teaching.get(r.id, sc.waiting.get(r.id, 1))
        items.append(QueueItem(**r.summary(), screening=state_, reporters=n, accepted_by=accepted.get(r.id)))
    return items, len(items)


@router.get("/v1/feedback/queue", response_model=FeedbackQueue, dependencies=[ADMIN], responses=error_responses(401, 403, 422, 503))
async def feedback_queue(
    min_reporters: int = Query(2, ge=1, le=100, description="distinct reporters a claim needs to teach (finetune's --min-reporters)"),
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
    state: ServiceState = Depends(get_state),
) -> Any:
    """The reports waiting for a fine-tune or a review (status ``new`` or ``held``), oldest
    first, each with what the guard rails make of it (:func:`siamkit.feedback.screen_reports`).
    \f
    Args:
        min_reporters: as ``siamkit finetune --min-reporters``.
        limit: the page size.
        offset: where the page starts.
        state: the app's state.

    Returns:
        A :class:`~siamkit.service.console_schemas.FeedbackQueue`.
    """
    items, total = await run_in_threadpool(state.run_inference, _queue, state, min_reporters)
    return FeedbackQueue(items=items[offset : offset + limit], total=total, min_reporters=min_reporters)


@router.post(
    "/v1/feedback/{feedback_id}/review", response_model=ReviewOut, dependencies=[JSON_ONLY],
    responses=error_responses(400, 401, 403, 415, 422, 503),
)
async def review_feedback(
    body: ReviewIn, feedback_id: int = PathParam(..., ge=1, le=2**62),
    p: Principal = Depends(require_admin), state: ServiceState = Depends(get_state),
) -> Any:
    """A reviewer's verdict (:func:`siamkit.feedback.review_report`): accepting a report
    rejects the reports that contradict it and puts it back to ``new``; rejecting it
    rejects it alone. Audited with the key's name.
    \f
    Args:
        body: the verdict.
        feedback_id: the report.
        p: the reviewer (an admin key).
        state: the app's state.

    Returns:
        A :class:`~siamkit.service.console_schemas.ReviewOut`: the ids changed.
    """
    store = state.need_feedback()
    changed = await run_in_threadpool(
        state.run_inference, lambda: review_report(store, feedback_id, accept=body.accept, actor=p.name)
    )
    return ReviewOut(**changed)


@router.get(
    "/v1/feedback/{feedback_id}/thumbnail/{which}", response_class=Response, dependencies=[ADMIN],
    responses=_PNG | _READ,
)
async def feedback_thumbnail(
    feedback_id: int = PathParam(..., ge=1, le=2**62), which: Literal["a", "b"] = PathParam(...),
    size: int = _size_query(), state: ServiceState = Depends(get_state),
) -> Response:
    """A small PNG of a reported image (``a``: the probe or first image; ``b``: the second).
    \f
    Args:
        feedback_id: the report.
        which: ``a`` or ``b``.
        size: the largest edge.
        state: the app's state.

    Returns:
        ``image/png``.
    """
    store = state.need_feedback()

    def work() -> bytes | None:
        rec = store.get(feedback_id)
        data = rec.image_a if which == "a" else rec.image_b
        return None if data is None else image_bytes_png(data, size, max_pixels=state.limits.max_pixels)

    return _png(await run_in_threadpool(state.run_inference, work), f"image {which} of report {feedback_id}")


@router.get(
    "/v1/feedback/finetune-command", response_model=FinetuneCommand, dependencies=[ADMIN],
    responses=error_responses(401, 403, 422, 503),
)
async def get_finetune_command(
    min_reporters: int = Query(2, ge=1, le=100), state: ServiceState = Depends(get_state),
) -> Any:
    """The ``siamkit finetune`` command line that would learn from the reports collected,
    and how many of them would teach now.
    \f
    Args:
        min_reporters: the command's ``--min-reporters``.
        state: the app's state.

    Returns:
        A :class:`~siamkit.service.console_schemas.FinetuneCommand`.
    """
    store = state.need_feedback()

    def work() -> dict[str, Any]:
        s = screen_reports(store.list(status="new") + store.list(status="held"), min_reporters=min_reporters).summary()
        return {"claims_teaching": s["claims_teaching"], "reports_teaching": s["reports_teaching"],
                "waiting_for_reporters": len(s["waiting_for_reporters"]), "held_contradicted": len(s["held_contradicted"])}

    counts = await run_in_threadpool(state.run_inference, work)
    return FinetuneCommand(
        command=finetune_command(state, min_reporters=min_reporters), **counts,
        note="run it on the machine that has the model folder and the training images (TRAINING_DATA: one "
        "sub-folder of images per class); it writes the new model only when it is not worse on held-out classes",
    )
