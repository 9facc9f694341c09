"""LISTEN / NOTIFY: learn of other processes' gallery writes as they commit.

Every write to a PostgreSQL gallery sends ``NOTIFY siamkit_gallery, '<gallery_id>:<generation>'``
(delivered at commit). A :class:`ChangeListener` holds one connection that listens on the
channel, in a daemon thread, and calls its callback with the new generation; after a lost
connection it reconnects (every :data:`RETRY_SECONDS`) and calls the callback with None,
since notifications sent meanwhile are lost. The generation check of every query stays
the guarantee; the listener only makes a process follow a write before a query asks.

The listener also reads the generation every :data:`RETRY_SECONDS` (a heartbeat that
notices a dead connection and a missed notification). While its last heartbeat is under
:data:`FRESH_SECONDS` old, :attr:`ChangeListener.generation` stands in for reading the
generation from the database, so a query touches the database only when something
changed; once the heartbeat stops (the server is gone), queries read the database again
and report it unavailable.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

from .pg_schema import NOTIFY_CHANNEL

__all__ = ["ChangeListener", "RETRY_SECONDS", "FRESH_SECONDS"]

logger = logging.getLogger(__name__)

#: seconds between reconnection attempts, and between heartbeats (the longest wait of one poll)
RETRY_SECONDS = 0.5
#: a listener whose last heartbeat is older than this is not trusted with the generation
FRESH_SECONDS = 2.0


class ChangeListener:
    """A daemon thread that listens for one gallery's writes.

    Args:
        url: the database URL.
        gallery_id: the gallery's id (other galleries' notifications are ignored).
        callback: called with the new generation, or None after a reconnection.
    """

    def __init__(self, url: str, gallery_id: str, callback: Callable[[int | None], None]) -> None:
        self.url = url
        self.gallery_id = gallery_id
        self.callback = callback
        self.generation = -1
        self._beat = -1e18
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="siamkit-gallery-listen", daemon=True)

    def start(self) -> None:
        """Start listening."""
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: the thread ends (and closes its connection) within a poll. Not
        joined: it may be waiting for the gallery's lock, which the closing caller holds."""
        self._stop.set()

    def fresh(self) -> bool:
        """Whether the last heartbeat is recent enough to trust :attr:`generation`."""
        return time.monotonic() - self._beat < FRESH_SECONDS

    def _heartbeat(self, con: object) -> None:
        row = con.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()  # type: ignore[attr-defined]
        gen = int(json.loads(row[0]))
        moved = gen > self.generation
        self.generation = max(self.generation, gen)
        self._beat = time.monotonic()
        if moved:
            self._notify(gen)

    def _notify(self, generation: int | None) -> None:
        try:
            self.callback(generation)
        except Exception as e:  # noqa: BLE001 - the listener must outlive a failed refresh
            logger.debug("gallery change callback failed: %s", e)

    def _run(self) -> None:
        import psycopg

        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as con:
                    con.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if not first:
                        self._notify(None)  # writes made while disconnected sent nothing to us
                    first = False
                    while not self._stop.is_set():
                        self._heartbeat(con)
                        for n in con.notifies(timeout=RETRY_SECONDS):
                            gid, _, gen = n.payload.partition(":")
                            if gid == self.gallery_id and gen.isdigit():
                                self.generation = max(self.generation, int(gen))
                                self._notify(int(gen))
            except (psycopg.Error, ValueError, TypeError) as e:
                first = False
                logger.debug("gallery listener: %s; reconnecting", e)
                self._stop.wait(RETRY_SECONDS)
