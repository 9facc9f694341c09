"""The feedback store in a PostgreSQL database, shared by every service instance.

``siamkit serve --gallery postgresql://...`` keeps its feedback (reported mistakes and
the service's audit log) in the same database by default, so every instance behind a
load balancer writes to and reviews one store; ``--feedback URL`` names another database,
``--feedback FILE`` a SQLite file. :func:`open_feedback` chooses by the location.

:class:`PgFeedbackStore` is :class:`~siamkit.feedback.store.FeedbackStore` with a
pooled PostgreSQL connection under it: the same methods, the same rows and rules (its
statements are the SQLite store's, translated by :class:`_PgCursor`: ``?`` placeholders,
``LIMIT -1``, ``lastrowid``, the JSON lookup). Tables (versioned migrations under an
advisory lock, :data:`MIGRATIONS`; they do not clash with the gallery's)::

    feedback_schema_version(version INTEGER PRIMARY KEY, applied DOUBLE PRECISION)
    feedback(id BIGSERIAL PRIMARY KEY, created, actor, reporter, kind, identity,
             image_a BYTEA, image_a_format, image_b BYTEA, image_b_format,
             predicted, truth, note, model_fingerprint, status)
    service_audit(id BIGSERIAL PRIMARY KEY, time, actor, action, target, detail)

Every write is one transaction (a report and its audit row together). While the server
cannot be reached a call raises :class:`~siamkit.errors.FeedbackUnavailableError`
(HTTP 503) and the pool reconnects by itself.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Iterator

from .._pg import CONNECT_TIMEOUT, apply_migrations, first_line, is_database_url, make_pool, pooled_connection, redact_url
from ..errors import FeedbackError, FeedbackLockedError, FeedbackUnavailableError
from .store import FeedbackStore

__all__ = ["PgFeedbackStore", "MIGRATIONS", "open_feedback"]

#: the advisory lock that serialises the feedback tables' migrations ("siamfdbk")
_LOCK = 0x7369616D6664626B

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE feedback (id BIGSERIAL PRIMARY KEY, created DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL, "
        "reporter TEXT, kind TEXT NOT NULL CHECK (kind IN ('verify', 'identify', 'identity_verify')), identity TEXT, "
        "image_a BYTEA NOT NULL, image_a_format TEXT NOT NULL, image_b BYTEA, image_b_format TEXT, "
        "predicted TEXT NOT NULL DEFAULT '{}', truth TEXT NOT NULL, note TEXT, model_fingerprint TEXT, "
        "status TEXT NOT NULL DEFAULT 'new')",
        "CREATE INDEX feedback_status ON feedback(status)",
        "CREATE TABLE service_audit (id BIGSERIAL PRIMARY KEY, time DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL, "
        "action TEXT NOT NULL, target TEXT, detail TEXT NOT NULL DEFAULT '{}')",
    ),
}

# SQLite -> PostgreSQL, for the statements of FeedbackStore that differ beyond placeholders
_REWRITES = (
    ("LIMIT ?", "LIMIT NULLIF(?, -1)"),  # SQLite's LIMIT -1 = PostgreSQL's LIMIT NULL (all)
    ("json_extract(truth, '$.identity')", "(truth::json ->> 'identity')"),
    ("WHERE who IS NOT NULL", "WHERE COALESCE(identity, truth::json ->> 'identity') IS NOT NULL"),
)


def open_feedback(location: str | os.PathLike[str], *, create: bool = True, timeout: float = 30.0) -> FeedbackStore:
    """Open the feedback store a location names: a SQLite file or a PostgreSQL URL.

    Args:
        location: a file path, or ``postgresql://user@host:port/db``.
        create: create the store (file or tables) when missing.
        timeout: seconds to wait for a lock (or a connection).

    Returns:
        The open store.
    """
    if is_database_url(location):
        return PgFeedbackStore.open(str(location), create=create, timeout=timeout)
    return FeedbackStore.open(location, create=create, timeout=timeout)


class _PgCursor:
    """A psycopg cursor that takes the SQLite store's statements (see :data:`_REWRITES`)."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur
        self.lastrowid: int | None = None

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> _PgCursor:
        for a, b in _REWRITES:
            sql = sql.replace(a, b)
        returning = sql.lstrip().startswith("INSERT INTO feedback(")
        sql = sql.replace("?", "%s") + (" RETURNING id" if returning else "")
        self._cur.execute(sql, tuple(bytes(a) if isinstance(a, memoryview) else a for a in args))
        if returning:
            self.lastrowid = int(self._cur.fetchone()[0])
        return self

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cur.fetchall())


class PgFeedbackStore(FeedbackStore):
    """Reported mistakes and the service's audit log in a PostgreSQL database
    (thread-safe: each call takes a pooled connection). Use :meth:`open`.

    Args:
        url: the database URL.
        pool: its open connection pool.
    """

    def __init__(self, url: str, pool: Any) -> None:  # noqa: D107 - no SQLite connection here
        self.path = redact_url(url)  # type: ignore[assignment]
        self.url = url
        self._pool: Any = pool
        self._con = None
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True, timeout: float = 30.0) -> PgFeedbackStore:
        """Open the feedback tables of a database (migrated; with ``create``, made when missing).

        Args:
            path: ``postgresql://user[:password]@host[:port]/db``.
            create: create the tables when the database has none.
            timeout: seconds to wait for a lock or a pooled connection.

        Returns:
            The open store.

        Raises:
            FeedbackError: psycopg missing, no feedback tables (without ``create``), a newer schema.
            FeedbackUnavailableError: the server cannot be reached.
        """
        try:
            import psycopg
        except ImportError:
            raise FeedbackError("a PostgreSQL feedback store needs psycopg: pip install 'siamkit[postgres]'") from None
        url, where = str(path), redact_url(str(path))
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as con:
                with con.transaction(), con.cursor() as cur:
                    if not create:
                        cur.execute("SELECT to_regclass('feedback_schema_version') IS NOT NULL")
                        if not cur.fetchone()[0]:
                            raise FeedbackError(f"{where} holds no feedback store")
                    apply_migrations(cur, MIGRATIONS, table="feedback_schema_version", lock_key=_LOCK, newer=_newer(where))
        except psycopg.OperationalError as e:
            raise FeedbackUnavailableError(f"cannot reach the feedback database {where}: {first_line(e)}") from None
        except psycopg.Error as e:
            raise FeedbackError(f"{where} is not a usable feedback store ({first_line(e)})") from None
        return cls(url, make_pool(url, timeout=timeout, name="siamkit-feedback", max_size=4))

    def _init_schema(self) -> None:
        """Nothing: :meth:`open` migrated the tables."""

    def close(self) -> None:
        """Close the pool (idempotent)."""
        with self._lock:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                pool.close(timeout=2.0)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        pool = self._pool
        if pool is None:
            raise FeedbackError(f"feedback store {self.path} is closed")
        with pooled_connection(pool, where=str(self.path), store="feedback store",
                               unavailable=FeedbackUnavailableError, locked=FeedbackLockedError) as con:
            yield con

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:  # type: ignore[override]
        with self._connection() as con, con.transaction(), con.cursor() as cur:
            yield _PgCursor(cur)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as con, con.cursor() as cur:
            return _PgCursor(cur).execute(sql, args).fetchall()


def _newer(where: str) -> Any:
    def newer(found: int, known: int) -> FeedbackError:
        return FeedbackError(f"{where} has feedback schema version {found}, newer than this siamkit reads ({known})")

    return newer
