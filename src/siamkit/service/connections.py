"""Connection-level limits uvicorn does not have: header and body read timeouts, and a
cap on open connections that keeps serving legitimate clients.

uvicorn (0.54, h11 protocol) bounds a connection only *after* a response
(``timeout_keep_alive``) and answers 503 *per request* beyond ``limit_concurrency``; it
never bounds how long a client may take to send a request. A client that opens a
connection and sends nothing, sends its headers one byte every 2 s, or announces
``Content-Length: 1000000`` and sends one byte every 2 s holds the connection (and its
buffers) indefinitely, and with ``limit_concurrency`` set, a few hundred of them make
every legitimate request a 503.

:func:`protocol_class` returns uvicorn's :class:`~uvicorn.protocols.http.h11_impl.H11Protocol`
with one deadline per phase of a request, read from h11's state machine:

- *head*: from the connection's start (or the first byte of a kept-alive connection's
  next request) to the end of the request headers: ``timeout_headers``; a connection
  that sent part of a request gets a JSON 408, one that sent nothing is closed.
- *idle*: a kept-alive connection between requests: uvicorn's ``timeout_keep_alive``
  closes it; ``timeout_headers`` is a backstop.
- *body*: from the end of the headers to the end of the body: ``timeout_body``, also when
  the service answered early (401, 413) and the client keeps sending; 408 if no response
  was started, else closed.
- the application's own time (inference) is not bounded here.

When a new connection takes the count over ``max_connections``, the connection that has
waited longest for a request head (idle or slow headers) is closed to make room; when
every connection has a request in flight, the new one is closed instead.

``siamkit serve`` passes ``protocol_class(ConnectionLimits(...))`` from its options; under
plain uvicorn, ``--http siamkit.service.connections:GuardedH11Protocol`` gives the defaults.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import error_json

__all__ = ["ConnectionLimits", "GuardedH11Protocol", "protocol_class"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a client may take to send a request, and how many connections may be open.

    Attributes:
        timeout_headers: seconds from a connection's start (or a kept-alive connection's
            first byte of the next request) to the end of the request headers.
        timeout_body: seconds from the end of the headers to the end of the body.
        max_connections: open connections at most (the longest-waiting idle one is
            closed to make room for a new one).
    """

    timeout_headers: float = 10.0
    timeout_body: float = 30.0
    max_connections: int = 256


def _timeout_response(message: str, request_id: str) -> bytes:
    body = json.dumps(error_json("request_timeout", message, request_id)).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\nx-request-id: {request_id}\r\n\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the phase deadlines and the connection cap of
    :class:`ConnectionLimits` (set on a subclass by :func:`protocol_class`)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self._timer: Any = None
        self._phase: tuple[str, int] | None = None
        self._phase_since = 0.0
        self._fresh = True
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            logger.warning("connection cap (%d) reached with every connection busy: closing a new one", self.limits.max_connections)
            self._close()
            return
        self._rearm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._rearm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    # the phases
    def _current_phase(self) -> str | None:
        state = self.conn.their_state
        if state is h11.IDLE:
            return "head" if self._fresh or self.conn.trailing_data[0] else "idle"
        self._fresh = False
        return "body" if state is h11.SEND_BODY else None

    def _rearm(self) -> None:
        if self.transport is None or self.transport.is_closing():
            self._cancel()
            return
        phase = self._current_phase()
        key = None if phase is None else (phase, id(self.cycle))
        if key == self._phase:
            return
        self._cancel()
        self._phase, self._phase_since = key, self.loop.time()
        if phase is not None:
            delay = self.limits.timeout_body if phase == "body" else self.limits.timeout_headers
            self._timer = self.loop.call_later(delay, self._expire, key)

    def _cancel(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, key: tuple[str, int]) -> None:
        self._timer = None
        if key != self._phase or self.transport.is_closing():
            return
        phase = key[0]
        if phase == "head" and self.conn.trailing_data[0]:
            self._answer_408(f"the request headers did not arrive within {self.limits.timeout_headers:g} s", uuid.uuid4().hex)
        elif phase == "body" and self.cycle is not None and not self.cycle.response_started:
            rid = self.scope.get("siamkit.request_id") or uuid.uuid4().hex
            self._answer_408(f"the request body did not arrive within {self.limits.timeout_body:g} s", rid)
        else:
            self._close()

    def _answer_408(self, message: str, request_id: str) -> None:
        if self.cycle is not None:
            self.cycle.disconnected = True  # the application, if waiting for the body, sees a disconnect
        self.transport.write(_timeout_response(message, request_id))
        self._close()

    def _close(self) -> None:
        self._cancel()
        self._phase = None
        if not self.transport.is_closing():
            self.transport.close()

    def _waiting_since(self) -> float | None:
        """When this connection started waiting for a request head, or None if a request is in."""
        return self._phase_since if self._phase is not None and self._phase[0] in ("head", "idle") else None

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request head; False if none is waiting."""
        waiting = [(c._waiting_since(), id(c), c) for c in self.connections if isinstance(c, GuardedH11Protocol) and c is not self]
        waiting = [w for w in waiting if w[0] is not None]
        if not waiting:
            return False
        min(waiting, key=lambda w: (w[0], w[1]))[2]._close()
        return True


def protocol_class(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """The uvicorn ``http`` protocol class enforcing ``limits``.

    Args:
        limits: the deadlines and the connection cap.

    Returns:
        A subclass of :class:`GuardedH11Protocol` (pass it as ``uvicorn.Config(http=...)``).
    """
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})
