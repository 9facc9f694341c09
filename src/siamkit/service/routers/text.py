"""The text endpoints of a text model's service: JSON bodies (the image endpoints take
multipart uploads). ``POST /v1/text/verify`` compares two texts; the gallery ones enrol,
add to, verify against and identify with texts.

They answer 415 ``unsupported_media_type`` when the service's model takes images (and the
image endpoints answer 415 when it takes texts), so a client learns which form to send.
The answers are the image endpoints' response models.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Path as PathParam, Query
from starlette.concurrency import run_in_threadpool

from ...text.inputs import compare_texts, text_input_of
from ..deps import AuthFirstRoute, JSON_ONLY, READ, ServiceState, check_identity_name, get_state, require_admin
from ..errors import NOT_FOUND, ApiError, error_responses
from ..schemas import CandidateOut, ErrorResponse, IdentifyResponse, IdentityOut, IdentityVerifyResponse, VerifyResponse
from ..security import Principal
from ..text_schemas import TextEnrollIn, TextPairIn, TextProbeIn, TextSamplesIn
from ..uploads import parse_metadata
from .verify import verdict_fields

__all__ = ["build_text_router", "verify_texts", "identify_text", "verify_identity_text", "enroll_texts", "add_texts"]

_ERRORS = error_responses(400, 401, 403, 413, 415, 422, 503)


def _need_text(state: ServiceState) -> None:
    if text_input_of(state.verifier.network) is None:
        raise ApiError(415, "unsupported_media_type",
                       "this service's model takes images: send them as multipart/form-data to the image endpoints")


def _check_batch(texts: list[str], state: ServiceState) -> None:
    if len(texts) > state.limits.max_batch:
        raise ApiError(413, "too_many_samples", f"{len(texts)} texts; at most {state.limits.max_batch} per request")


async def verify_texts(body: TextPairIn, state: ServiceState = Depends(get_state)) -> Any:
    """Are these two texts the same (paraphrase, duplicate)? Distance, score, and when the
    model is calibrated, the decision and its confidence.
    \f
    Args:
        body: the two texts.
        state: the app's state (the verifier).

    Returns:
        A :class:`~siamkit.service.schemas.VerifyResponse`.
    """
    _need_text(state)
    r = await run_in_threadpool(state.run_inference, compare_texts, state.verifier, body.text_a, body.text_b)
    return VerifyResponse(**verdict_fields(r, state, "verify"))


async def identify_text(body: TextProbeIn, k: int = Query(5, ge=1, description="candidates to return, at most the service's max_k"),
                        state: ServiceState = Depends(get_state)) -> Any:
    """1:N, open set, for a text: the k closest identities and the decision.
    \f
    Args:
        body: the probe text.
        k: how many candidates to return (at most ``Limits.max_k``).
        state: the app's state (the gallery).

    Returns:
        An :class:`~siamkit.service.schemas.IdentifyResponse`.
    """
    _need_text(state)
    g = state.need_gallery()
    if k > state.limits.max_k:
        raise ApiError(422, "invalid_request", f"k must be at most {state.limits.max_k}")
    r = await run_in_threadpool(state.run_inference, lambda: g.identify(body.text, k=k))
    label = "uncalibrated" if r.decision is None else ("unknown" if r.unknown else "identified")
    state.metrics.decisions.labels("identify", label).inc()
    return IdentifyResponse(**{**r.to_dict(), "candidates": [CandidateOut(**c.to_dict()) for c in r.candidates]},
                            model=state.fingerprint)


async def verify_identity_text(body: TextProbeIn, identity: str = PathParam(..., min_length=1, max_length=256),
                               state: ServiceState = Depends(get_state)) -> Any:
    """1:1: is this text the enrolled identity?
    \f
    Args:
        body: the probe text.
        identity: the claimed identity.
        state: the app's state (the gallery).

    Returns:
        An :class:`~siamkit.service.schemas.IdentityVerifyResponse`.
    """
    _need_text(state)
    g = state.gallery_for(identity)
    r = await run_in_threadpool(state.run_inference, g.verify, identity, body.text)
    return IdentityVerifyResponse(
        **verdict_fields(r, state, "identity_verify"), identity=r.identity, sample_id=r.sample_id,
        sample_distance=r.sample_distance, n_samples=r.n_samples, scoring=r.scoring,
    )


async def enroll_texts(body: TextEnrollIn, principal: Principal = Depends(require_admin),
                       state: ServiceState = Depends(get_state)) -> Any:
    """Enrol a new identity from texts (one transaction: all its samples or nothing).
    \f
    Args:
        body: the identity, its texts and metadata.
        principal: who enrols (an admin key; audited).
        state: the app's state.

    Returns:
        The new identity's :class:`~siamkit.service.schemas.IdentityOut` (201).
    """
    _need_text(state)
    _check_batch(body.texts, state)
    g = state.gallery_for(body.identity)
    meta = None if body.metadata is None else parse_metadata(json.dumps(body.metadata), state.limits)
    rec = await run_in_threadpool(state.run_write, lambda: g.enroll(body.identity, list(body.texts), metadata=meta))
    await run_in_threadpool(state.audit, principal, "enroll", body.identity, {"n_samples": rec.n_samples})
    return IdentityOut(**rec.to_dict())


async def add_texts(body: TextSamplesIn, identity: str = PathParam(..., min_length=1, max_length=256),
                    principal: Principal = Depends(require_admin), state: ServiceState = Depends(get_state)) -> Any:
    """Add texts to an enrolled identity (one transaction).
    \f
    Args:
        body: the new texts.
        identity: whose samples these are.
        principal: who adds them (an admin key; audited).
        state: the app's state.

    Returns:
        The identity's updated :class:`~siamkit.service.schemas.IdentityOut`.
    """
    _need_text(state)
    _check_batch(body.texts, state)
    g = state.gallery_for(identity)
    rec = await run_in_threadpool(state.run_write, g.add_samples, identity, list(body.texts))
    await run_in_threadpool(state.audit, principal, "add_samples", identity, {"n_added": len(body.texts), "n_samples": rec.n_samples})
    return IdentityOut(**rec.to_dict())


def build_text_router() -> APIRouter:
    """The text endpoints (JSON bodies), in the order of the OpenAPI spec.

    Returns:
        A router to include in the app.
    """
    router = APIRouter(route_class=AuthFirstRoute, tags=["text"])
    add = router.add_api_route
    add("/v1/text/verify", verify_texts, methods=["POST"], response_model=VerifyResponse, responses=_ERRORS,
        dependencies=[JSON_ONLY, READ])
    add("/v1/text/identities/{identity}/verify", verify_identity_text, methods=["POST"],
        response_model=IdentityVerifyResponse, responses=_ERRORS | NOT_FOUND, dependencies=[JSON_ONLY, READ])
    add("/v1/text/identify", identify_text, methods=["POST"], response_model=IdentifyResponse, responses=_ERRORS,
        dependencies=[JSON_ONLY, READ])
    add("/v1/text/identities", enroll_texts, methods=["POST"], response_model=IdentityOut, status_code=201,
        responses=_ERRORS | {409: {"model": ErrorResponse, "description": "already enrolled"}},
        dependencies=[JSON_ONLY])
    add("/v1/text/identities/{identity}/samples", add_texts, methods=["POST"], response_model=IdentityOut,
        responses=_ERRORS | NOT_FOUND, dependencies=[JSON_ONLY])
    return router
