"""The gallery endpoints: 1:1 against an enrolled identity, 1:N identification, and
listing, enrolling, adding samples to and deleting identities.

Read endpoints check the key with ``dependencies=[READ]``; writes take the admin
``principal`` (the audit log records it). Reads run through
:meth:`~siamkit.service.deps.ServiceState.run_inference`, writes through
:meth:`~siamkit.service.deps.ServiceState.run_write` (one lock: writes are serialised).
``POST /v1/identify`` bounds ``k`` by the app's ``Limits.max_k``, which is part of its
OpenAPI spec, so :func:`build_router` builds the router per app.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

from fastapi import APIRouter, Depends, File, Form, Path as PathParam, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from ..deps import AuthFirstRoute, MULTIPART, READ, ServiceState, check_identity_name, get_state, require_admin
from ..errors import NOT_FOUND, error_responses
from ..images import Limits
from ..schemas import (
    CandidateOut,
    DeleteResponse,
    ErrorResponse,
    IdentifyResponse,
    IdentityList,
    IdentityOut,
    IdentityVerifyResponse,
)
from ..security import Principal
from ..uploads import parse_metadata, read_batch, read_upload
from .verify import verdict_fields

__all__ = [
    "build_router",
    "verify_identity",
    "identify",
    "list_identities",
    "get_identity",
    "enroll",
    "add_samples",
    "delete_identity",
]

_UPLOAD_ERRORS = error_responses(400, 401, 403, 413, 415, 422, 503)
_READ_ERRORS = error_responses(401, 403, 422, 503)


def IdentityPath() -> Any:  # noqa: N802 - a fresh parameter spec per route
    """The ``{identity}`` path parameter's spec."""
    return PathParam(..., min_length=1, max_length=256, description="the identity's name")


def _k_query(max_k: int) -> Any:
    return Query(5, ge=1, le=max_k, description="candidates to return")


def _identity_out(rec: Any) -> IdentityOut:
    return IdentityOut(**rec.to_dict())


def _stack(state: ServiceState, datas: list[bytes]) -> Any:
    import torch

    return torch.stack([state.decode(d, f"images[{i}]") for i, d in enumerate(datas)])


async def verify_identity(
    identity: str = IdentityPath(),
    image: UploadFile = File(..., description="the probe image"),
    state: ServiceState = Depends(get_state),
) -> Any:
    """1:1: is this image the enrolled identity?
    \f
    Args:
        identity: the claimed identity.
        image: the probe image.
        state: the app's state (the gallery it searches).

    Returns:
        An :class:`~siamkit.service.schemas.IdentityVerifyResponse`.
    """
    g = state.need_gallery()
    data = await read_upload(image, state.limits, "image")
    check_identity_name(identity)

    def work() -> Any:
        return g.verify(identity, state.decode(data, "image")[None])

    r = await run_in_threadpool(state.run_inference, work)
    return IdentityVerifyResponse(
        **verdict_fields(r, state, "identity_verify"), identity=r.identity, sample_id=r.sample_id,
        sample_distance=r.sample_distance, n_samples=r.n_samples, scoring=r.scoring,
    )


async def identify(
    image: UploadFile = File(..., description="the probe image"),
    k: int = _k_query(Limits().max_k),  # the app's bound replaces it: see build_router
    state: ServiceState = Depends(get_state),
) -> Any:
    """1:N, open set: the k closest identities and the decision (an identity or
    "unknown").
    \f
    Args:
        image: the probe image.
        k: how many candidates to return, 1..``Limits.max_k``.
        state: the app's state (the gallery it searches).

    Returns:
        An :class:`~siamkit.service.schemas.IdentifyResponse`.
    """
    g = state.need_gallery()
    data = await read_upload(image, state.limits, "image")

    def work() -> Any:
        return g.identify(state.decode(data, "image")[None], k=k)

    r = await run_in_threadpool(state.run_inference, work)
    label = "uncalibrated" if r.decision is None else ("unknown" if r.unknown else "identified")
    state.metrics.decisions.labels("identify", label).inc()
    return IdentifyResponse(
        candidates=[CandidateOut(**c.to_dict()) for c in r.candidates], decision=r.decision, unknown=r.unknown,
        threshold=r.threshold, confidence=r.confidence, scoring=r.scoring, index=r.index, note=r.note,
        model=state.fingerprint,
    )


async def list_identities(
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
    state: ServiceState = Depends(get_state),
) -> Any:
    """Enrolled identities (metadata, sample counts), in enrolment order.
    \f
    Args:
        limit: the page size.
        offset: where the page starts.
        state: the app's state.

    Returns:
        An :class:`~siamkit.service.schemas.IdentityList`; ``total`` counts every identity.
    """
    g = state.need_gallery()
    recs = await run_in_threadpool(state.run_inference, g.list)
    return IdentityList(identities=[_identity_out(r) for r in recs[offset : offset + limit]], total=len(recs))


async def get_identity(identity: str = IdentityPath(), state: ServiceState = Depends(get_state)) -> Any:
    """One identity with its samples.
    \f
    Args:
        identity: whom to show.
        state: the app's state.

    Returns:
        An :class:`~siamkit.service.schemas.IdentityOut` with ``samples`` filled in.
    """
    g = state.gallery_for(identity)
    return _identity_out(await run_in_threadpool(state.run_inference, g.get, identity))


async def enroll(
    identity: str = Form(..., min_length=1, max_length=256, description="the new identity's name"),
    images: list[UploadFile] = File(..., description="1..max_batch images of the identity"),
    metadata: Optional[str] = Form(None, description="a JSON object kept with the identity"),
    principal: Principal = Depends(require_admin),
    state: ServiceState = Depends(get_state),
) -> Any:
    """Enrol a new identity (one transaction: all its samples or nothing).
    \f
    Args:
        identity: the new identity's name.
        images: its first samples.
        metadata: the ``metadata`` form field (a JSON object).
        principal: who enrols (an admin key; audited).
        state: the app's state.

    Returns:
        The new identity's :class:`~siamkit.service.schemas.IdentityOut` (201).
    """
    g = state.gallery_for(identity)
    meta = parse_metadata(metadata, state.limits)
    datas = await read_batch(images, state.limits)

    def work() -> Any:
        return g.enroll(identity, _stack(state, datas), metadata=meta)

    rec = await run_in_threadpool(state.run_write, work)
    await run_in_threadpool(state.audit, principal, "enroll", identity, {"n_samples": rec.n_samples})
    return _identity_out(rec)


async def add_samples(
    identity: str = IdentityPath(),
    images: list[UploadFile] = File(..., description="1..max_batch more images of the identity"),
    principal: Principal = Depends(require_admin),
    state: ServiceState = Depends(get_state),
) -> Any:
    """Add samples to an enrolled identity (one transaction).
    \f
    Args:
        identity: whose samples these are.
        images: the new samples.
        principal: who adds them (an admin key; audited).
        state: the app's state.

    Returns:
        The identity's updated :class:`~siamkit.service.schemas.IdentityOut`.
    """
    g = state.gallery_for(identity)
    datas = await read_batch(images, state.limits)

    def work() -> Any:
        return g.add_samples(identity, _stack(state, datas))

    rec = await run_in_threadpool(state.run_write, work)
    await run_in_threadpool(state.audit, principal, "add_samples", identity, {"n_added": len(datas), "n_samples": rec.n_samples})
    return _identity_out(rec)


async def delete_identity(
    identity: str = IdentityPath(), principal: Principal = Depends(require_admin), state: ServiceState = Depends(get_state),
) -> Any:
    """Remove an identity and all its samples (one transaction).
    \f
    Args:
        identity: whom to remove.
        principal: who removes it (an admin key; audited).
        state: the app's state.

    Returns:
        A :class:`~siamkit.service.schemas.DeleteResponse` (how many samples went).
    """
    g = state.gallery_for(identity)
    n = await run_in_threadpool(state.run_write, g.remove, identity)
    await run_in_threadpool(state.audit, principal, "delete", identity, {"n_samples": n})
    return DeleteResponse(identity=identity, removed_samples=int(n))


def _identify_bounded(max_k: int) -> Callable[..., Any]:
    """:func:`identify` with ``k <= max_k`` in its signature, where FastAPI reads the bound
    (for validation and the OpenAPI spec); its name, doc and globals stay identify's."""
    sig = inspect.signature(identify, eval_str=True)
    params = [p.replace(default=_k_query(max_k)) if p.name == "k" else p for p in sig.parameters.values()]

    @functools.wraps(identify)
    async def bounded(**kwargs: Any) -> Any:
        return await identify(**kwargs)

    bounded.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return bounded


def build_router(limits: Limits) -> APIRouter:
    """The gallery endpoints of one app (``POST /v1/identify`` with ``k`` bounded by
    ``limits.max_k``), in the order of the OpenAPI spec.

    Args:
        limits: the app's limits.

    Returns:
        A router to include in the app.
    """
    router = APIRouter(route_class=AuthFirstRoute, tags=["gallery"])
    router.add_api_route(
        "/v1/identities/{identity}/verify", verify_identity, methods=["POST"], response_model=IdentityVerifyResponse,
        responses=_UPLOAD_ERRORS | NOT_FOUND, dependencies=[MULTIPART, READ],
    )
    router.add_api_route(
        "/v1/identify", _identify_bounded(limits.max_k), methods=["POST"], response_model=IdentifyResponse,
        responses=_UPLOAD_ERRORS, dependencies=[MULTIPART, READ],
    )
    router.add_api_route(
        "/v1/identities", list_identities, methods=["GET"], response_model=IdentityList, responses=_READ_ERRORS,
        dependencies=[READ],
    )
    router.add_api_route(
        "/v1/identities/{identity}", get_identity, methods=["GET"], response_model=IdentityOut,
        responses=_READ_ERRORS | NOT_FOUND, dependencies=[READ],
    )
    router.add_api_route(
        "/v1/identities", enroll, methods=["POST"], response_model=IdentityOut, status_code=201,
        responses=_UPLOAD_ERRORS | {409: {"model": ErrorResponse, "description": "already enrolled"}},
        dependencies=[MULTIPART],
    )
    router.add_api_route(
        "/v1/identities/{identity}/samples", add_samples, methods=["POST"], response_model=IdentityOut,
        responses=_UPLOAD_ERRORS | NOT_FOUND, dependencies=[MULTIPART],
    )
    router.add_api_route(
        "/v1/identities/{identity}", delete_identity, methods=["DELETE"], response_model=DeleteResponse,
        responses=_READ_ERRORS | NOT_FOUND,
    )
    return router
