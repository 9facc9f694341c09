"""Token-bucket rate limiting per API key id and per client address (an ASGI middleware).

Why a small middleware of our own rather than a library (slowapi, limits): the service
needs two buckets per request (the presented key id and the client address), a 429 in
the service's JSON error shape with ``Retry-After``, and nothing stored outside the
process; that is ~80 lines with no new dependency, tested in ``tests/service``.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request takes
one token from each of its buckets, else it is answered 429 before the app reads it. The
key id is read from the header without checking the key (checking costs a scrypt, which
is what a flood would exploit), so a made-up key id has a bucket too; the client bucket
bounds those. ``/healthz`` is not limited. Buckets live in a bounded LRU table.

:class:`KdfGate` bounds the one expensive refusal: a key that is not in the key store's
cache costs a scrypt (~30 ms of CPU) whether it is right or wrong, and random secrets
for a real (public) key id are never cached. The gate counts the checks that *failed*:
``rate`` per second per client address and per key id, 4x that in all; past it, a key
not seen before is answered 429 without running the KDF. A key already verified is
answered from the cache and never reaches the gate (so a flood of wrong secrets for a
key id does not lock out its owner), and right keys are never charged (so a client
opening many connections to a cold server is not refused).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from ..errors import SiamkitError
from .errors import error_json

__all__ = ["KdfGate", "RateLimiter", "RateLimitMiddleware"]

_KEY_ID = re.compile(rb"sk_([0-9a-f]{8})_")
_EXEMPT = ("/healthz",)


class RateLimiter:
    """Token buckets by name.

    Args:
        rate: tokens per second (> 0).
        burst: the bucket size (>= 1).
        max_buckets: how many buckets are kept (least recently used go first).
        clock: the time source (seconds).

    Raises:
        SiamkitError: a rate or burst that is not positive and finite.
    """

    def __init__(self, rate: float, burst: float, *, max_buckets: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(rate) and rate > 0) or not (math.isfinite(burst) and burst >= 1):
            raise SiamkitError(f"a rate limit needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst, self.max_buckets, self.clock = float(rate), float(burst), max_buckets, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, name: str) -> float:
        """The seconds until ``name``'s bucket has a token (0.0: now); nothing is taken."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, name: str) -> float:
        """Take one token from ``name``'s bucket: 0.0 when granted, else the seconds until
        a token is there (nothing is taken)."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
            self._buckets[name] = (tokens - 1.0 if wait == 0.0 else tokens, now)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        return wait


class KdfGate:
    """How many failed slow key checks (scrypt) a client address, a key id and everyone may make.

    Args:
        rate: checks per second per client address and per key id (4x that in all).
        burst: the bucket size per client address and per key id (4x that in all).
        clock: the time source (seconds).
    """

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets = (RateLimiter(rate, burst, clock=clock), RateLimiter(rate, burst, clock=clock),
                         RateLimiter(4 * rate, 4 * burst, clock=clock))

    def wait(self, client: str, key_id: str) -> float:
        """The seconds until ``client`` and ``key_id`` may have a key checked (0.0: now).

        Args:
            client: the client's address.
            key_id: the presented key id.

        Returns:
            0.0 (go ahead and run the KDF) or the seconds to wait; nothing is taken.
        """
        return max(b.wait(n) for b, n in zip(self._buckets, self._names(client, key_id)))

    def failed(self, client: str, key_id: str) -> None:
        """Charge one failed check to ``client``, ``key_id`` and the total.

        Args:
            client: the client's address.
            key_id: the presented key id.
        """
        for b, n in zip(self._buckets, self._names(client, key_id)):
            b.take(n)

    @staticmethod
    def _names(client: str, key_id: str) -> tuple[str, str, str]:
        return (f"c:{client}", f"k:{key_id}", "all")


class RateLimitMiddleware:
    """429 ``rate_limited`` (JSON, ``Retry-After``) for requests past their key's or
    client's rate.

    Args:
        app: the ASGI app.
        per_key: the limiter by presented key id (None: off).
        per_client: the limiter by client address (None: off).
    """

    def __init__(self, app: Any, *, per_key: RateLimiter | None, per_client: RateLimiter | None) -> None:
        self.app, self.per_key, self.per_client = app, per_key, per_client

    def _wait(self, scope: dict[str, Any]) -> float:
        wait = 0.0
        if self.per_client is not None:
            client = scope.get("client") or ("?", 0)
            wait = max(wait, self.per_client.take(f"c:{client[0]}"))
        if self.per_key is not None:
            for name, value in scope.get("headers", []):
                if name in (b"x-api-key", b"authorization"):
                    m = _KEY_ID.search(value[:300])
                    if m is not None:
                        wait = max(wait, self.per_key.take(f"k:{m.group(1).decode()}"))
                        break
        return wait

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http" or scope.get("path") in _EXEMPT:
            await self.app(scope, receive, send)
            return
        wait = self._wait(scope)
        if wait <= 0.0:
            await self.app(scope, receive, send)
            return
        body = json.dumps(error_json("rate_limited", "too many requests; retry after the Retry-After seconds", None)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"retry-after", str(max(1, math.ceil(wait))).encode())]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
