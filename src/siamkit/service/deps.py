"""The service's state and its FastAPI dependencies.

:class:`ServiceState` is built once by :func:`~siamkit.service.app.create_app` (it loads the
model, keys, gallery and feedback store) and lives at ``app.state.siamkit``; endpoints get
it with ``Depends(get_state)``. The dependencies here check the API key and its role
(:data:`require_read`, :data:`require_admin`; :data:`READ`, :data:`ADMIN` where the
endpoint does not need the principal) and the request's content type
(:data:`MULTIPART`, :data:`JSON_ONLY`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from fastapi import Depends, HTTPException, Request
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..errors import GalleryModelChangedError, SiamkitError
from ..verify import Verifier
from .errors import ApiError, library_error
from ..feedback import FeedbackStore, default_feedback_path, open_feedback
from .images import UploadError, decode_image
from .metrics import ServiceMetrics
from .model_reload import ModelFollower
from .ratelimit import KdfGate
from .pg_keys import open_keys
from .security import KeyStore, Principal
from .settings import ServiceSettings

if TYPE_CHECKING:
    import torch

    from ..gallery import Gallery

__all__ = [
    "ADMIN",
    "AuthFirstRoute",
    "JSON_ONLY",
    "MULTIPART",
    "READ",
    "ServiceState",
    "check_identity_name",
    "content_type_check",
    "get_state",
    "principal",
    "require",
    "require_admin",
    "require_read",
]

logger = logging.getLogger(__name__)


class ServiceState:
    """What the endpoints share: the verifier, gallery, feedback store, keys, metrics, and
    the locks that bound inference and serialise gallery writes.

    Args:
        settings: the service's settings; the model, keys, gallery and feedback store are
            loaded now, so every problem is reported at start-up.

    Raises:
        SiamkitError: a file cannot be used (the message names it).
    """

    def __init__(self, settings: ServiceSettings) -> None:
        from ..gallery import Gallery
        from ..gallery.backend import is_database_url

        self.settings = settings
        self.limits = settings.limits
        self.verifier = _open_verifier(settings)
        net = self.verifier.network
        try:  # a text model (its tokenizer attached) takes texts: the /v1/text endpoints
            self.spec = None if getattr(net, "text_input", None) is not None else net.input_spec.require_image()
        except ValueError as e:
            raise SiamkitError(f"cannot serve {settings.model}: {e}") from None
        self.fingerprint: str | None = getattr(net, "fingerprint", None)
        self.keys = settings.keys if isinstance(settings.keys, KeyStore) else open_keys(settings.keys)
        rate = settings.auth_rate
        self.kdf_gate = None if rate is None else KdfGate(rate, max(1.0, rate * settings.rate_burst))
        if len(self.keys) == 0:
            raise SiamkitError("the keys file holds no key; create one with `siamkit keys add`")
        self.gallery: Gallery | None = None
        self.feedback: FeedbackStore | None = None
        try:
            if settings.gallery is not None:
                self.gallery = Gallery.open(settings.gallery, self.verifier, create=True, index=settings.index)
            fb = settings.feedback
            if fb is None and settings.gallery is not None:  # a database gallery: its database
                fb = settings.gallery if is_database_url(settings.gallery) else default_feedback_path(settings.gallery)
            if fb is not None:
                self.feedback = open_feedback(fb)
        except BaseException:
            self.close()
            raise
        n = settings.max_inference or os.cpu_count() or 1
        self.inference = threading.BoundedSemaphore(max(1, int(n)))
        self.write_lock = threading.Lock()
        self.metrics = ServiceMetrics()
        self.model_follower = ModelFollower()

    def close(self) -> None:
        """Close the gallery and the feedback store (errors are ignored)."""
        for thing in (self.gallery, self.feedback, self.keys):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        with contextlib.suppress(Exception):  # the onnx runtime's temporary export
            getattr(self.verifier, "close", lambda: None)()

    def need_gallery(self) -> Gallery:
        """The gallery, or 503 ``no_gallery``."""
        if self.gallery is None:
            hint = "" if self.settings.runtime == "torch" else " and --runtime torch"
            raise ApiError(503, "no_gallery", f"this service runs without a gallery (start it with --gallery FILE{hint})")
        return self.gallery

    def need_feedback(self) -> FeedbackStore:
        """The feedback store, or 503 ``no_feedback_store``."""
        if self.feedback is None:
            raise ApiError(503, "no_feedback_store", "this service runs without a feedback store")
        return self.feedback

    def gallery_for(self, identity: str) -> Gallery:
        """The gallery (503 without one), after checking the identity's name (422).

        Args:
            identity: the identity named by the request.

        Returns:
            The gallery.
        """
        g = self.need_gallery()
        check_identity_name(identity)
        return g

    def decode(self, data: bytes, what: str) -> torch.Tensor:
        """Validate and decode uploaded image bytes to the model's input spec.

        Args:
            data: the image file's bytes.
            what: names the image in messages.

        Returns:
            uint8 (C, H, W).

        Raises:
            UploadError: 400 / 413 / 415 (see :mod:`siamkit.service.images`).
        """
        if self.spec is None:
            raise ApiError(415, "unsupported_media_type", "this service's model takes texts: send JSON to the /v1/text endpoints")
        return decode_image(data, self.spec, self.limits, what=what)

    def run_inference(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` (in a worker thread) once an inference slot is free, library
        errors mapped to HTTP errors.

        Args:
            fn: the work: decoding, embedding, searching.
            args: its arguments.

        Returns:
            What ``fn`` returns.
        """
        return self._run(fn, args, write=False)

    def run_write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Like :meth:`run_inference`, also holding the gallery's write lock (writes are
        serialised).

        Args:
            fn: the work: enrol, add samples, remove.
            args: its arguments.

        Returns:
            What ``fn`` returns.
        """
        return self._run(fn, args, write=True)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], *, write: bool) -> Any:
        with self.write_lock if write else contextlib.nullcontext(), self.inference:
            try:
                try:
                    return fn(*args)
                except GalleryModelChangedError:  # re-embedded elsewhere: our model folder may hold the new model
                    if not self.model_follower.adopt(self):
                        raise
                    return fn(*args)
            except (UploadError, HTTPException):
                raise
            except SiamkitError as e:
                raise library_error(e) from None

    def audit(self, actor: Principal, action: str, target: str | None, detail: dict[str, Any] | None = None) -> None:
        """Record a write in the feedback store's audit log (when there is a store).

        Args:
            actor: who did it.
            action: what (``enroll``, ``add_samples``, ``delete``).
            target: the identity.
            detail: extra facts (counts); the key id is added.
        """
        if self.feedback is None:
            return
        try:
            self.feedback.audit(actor.name, action, target, {"key_id": actor.key_id, **(detail or {})})
        except Exception as e:  # noqa: BLE001 - the gallery wrote; its own audit table has the event too
            logger.error("could not write the audit entry %s %s: %s", action, target, e)


def _open_verifier(settings: ServiceSettings) -> Any:
    """The torch :class:`Verifier`, or for ``runtime="onnx"`` the ONNX one (its own module)."""
    if settings.runtime == "torch":
        return Verifier.from_dir(settings.model)
    if settings.runtime != "onnx":
        raise SiamkitError(f"the service runtime must be torch or onnx, got {settings.runtime!r}")
    from .onnx_runtime import open_verifier

    jobs = max(1, int(settings.max_inference or os.cpu_count() or 1))
    return open_verifier(settings.model, gallery=settings.gallery, precision=settings.onnx_precision,
                         threads=max(1, (os.cpu_count() or 1) // jobs))


def get_state(request: Request) -> ServiceState:
    """The app's :class:`ServiceState` (a FastAPI dependency)."""
    return request.app.state.siamkit


def check_identity_name(identity: str) -> str:
    """The identity's name if the gallery accepts it, else 422 ``invalid_identity``."""
    from ..gallery.store import check_identity

    try:
        return check_identity(identity)
    except SiamkitError as e:
        raise ApiError(422, "invalid_identity", str(e)[:300]) from None


# --------------------------------------------------------------------------- auth

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (sk_...)")
bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


def principal(
    request: Request,
    api_key: Optional[str] = Depends(api_key_header),
    creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer),
) -> Principal:
    """Who is calling: the key from ``X-API-Key`` or ``Authorization: Bearer``, else 401.

    Args:
        request: the request (for the app's keys).
        api_key: the ``X-API-Key`` header.
        creds: the bearer credentials.

    Returns:
        The key's principal.
    """
    done = getattr(request.state, "siamkit_principal", None)
    if done is not None:  # AuthFirstRoute authenticated this request already
        return done
    key = api_key or (creds.credentials if creds is not None else None)
    state = get_state(request)
    p = state.keys.authenticate(key, **_kdf_gate(state, request)) if key else None
    if p is None:
        raise ApiError(
            401, "unauthorized", "a valid API key is required (X-API-Key or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return p


def _kdf_gate(state: ServiceState, request: Request) -> dict[str, Callable[[str], None]]:
    """The hooks of ``KeyStore.authenticate`` for the :class:`~.ratelimit.KdfGate`: 429
    before a slow key check past it, a failed check charged to it."""
    gate = state.kdf_gate
    if gate is None:
        return {}
    client = request.client.host if request.client else "?"

    def before(key_id: str) -> None:
        wait = gate.wait(client, key_id)
        if wait > 0.0:
            raise ApiError(429, "rate_limited", "too many failed key checks; retry after the Retry-After seconds",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})

    return {"before_kdf": before, "on_failure": lambda key_id: gate.failed(client, key_id)}


def require(role: str) -> Callable[..., Principal]:
    """A dependency: the caller's principal if its key has ``role``, else 403 (401 without a key)."""

    def dep(p: Principal = Depends(principal)) -> Principal:
        if not p.has(role):
            raise ApiError(403, "forbidden", f"this needs an {role} key; key {p.name!r} has the role {p.role!r}")
        return p

    return dep


require_read = require("read")
require_admin = require("admin")
READ = Depends(require_read)
"""For ``dependencies=[...]`` of an endpoint that needs a read key but not its principal."""
ADMIN = Depends(require_admin)
"""For ``dependencies=[...]`` of an endpoint that needs an admin key but not its principal."""


def _request_key(request: Request) -> Optional[str]:
    """The key of ``X-API-Key`` or ``Authorization: Bearer`` (as the security schemes read them)."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _needs_key(dependant: Any) -> bool:
    """Whether an endpoint's dependency tree includes :func:`principal`."""
    stack = list(dependant.dependencies)
    while stack:
        d = stack.pop()
        if d.call is principal:
            return True
        stack.extend(d.dependencies)
    return False


class AuthFirstRoute(APIRoute):
    """A route that authenticates the caller (401) before FastAPI reads the body or any
    other dependency checks it (content type 415, JSON or form parsing 400 / 422): an
    anonymous client learns nothing about an endpoint's body rules.

    Only routes whose dependencies include :func:`principal` are affected; the principal
    found is kept on ``request.state`` so that the dependency does not run the KDF again.
    Role checks (403) stay in the dependencies, so the OpenAPI spec is unchanged.
    """

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        if not _needs_key(self.dependant):
            return handler

        async def authenticated(request: Request) -> Any:
            from starlette.concurrency import run_in_threadpool

            request.state.siamkit_principal = await run_in_threadpool(principal, request, _request_key(request), None)
            return await handler(request)

        return authenticated


# --------------------------------------------------------------------------- content types


def content_type_check(kind: str) -> Callable[[Request], None]:
    """A dependency: 415 unless the request's content type is ``kind`` (multipart or json)."""

    def check(request: Request) -> None:
        ct = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind == "multipart" and ct != "multipart/form-data":
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data with the images as files")
        if kind == "json" and ct != "application/json":
            raise ApiError(415, "unsupported_media_type", "send application/json")

    return check


MULTIPART = Depends(content_type_check("multipart"))
JSON_ONLY = Depends(content_type_check("json"))
