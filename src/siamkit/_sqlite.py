"""The one SQLite connect() (pragmas, open-time checks) and write-transaction helper
shared by the gallery and the feedback store."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["connect", "immediate_transaction"]

logger = logging.getLogger(__name__)


def connect(path: str | Path, *, timeout: float, foreign_keys: bool = False) -> sqlite3.Connection:
    """Open a SQLite file the way every siamkit store uses it.

    Explicit transactions (``isolation_level=None``), usable from several threads (each
    store serialises access itself), ``busy_timeout`` = ``timeout``, WAL journal (readers
    never block the writer; a warning when the file system refuses it), ``synchronous =
    FULL`` (an acknowledged commit survives a power cut), and optionally foreign keys.

    Args:
        path: the database file (created when missing).
        timeout: seconds to wait for another process's lock.
        foreign_keys: turn on foreign-key enforcement.

    Returns:
        The open connection.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a SQLite database; the caller
            wraps it in its own typed error. The connection is closed on failure.
    """
    con = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("%s: WAL journal mode unavailable (got %s)", path, mode)
        con.execute("PRAGMA synchronous = FULL")
        if foreign_keys:
            con.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        con.close()
        raise
    return con


@contextlib.contextmanager
def immediate_transaction(
    con: sqlite3.Connection, locked_error: Callable[[sqlite3.OperationalError], Exception]
) -> Iterator[sqlite3.Cursor]:
    """BEGIN IMMEDIATE (takes the write lock up front, so two writers queue instead of
    deadlocking on a lock upgrade), then COMMIT, or ROLLBACK on any exception.

    Args:
        con: a connection opened with ``isolation_level=None`` (explicit transactions).
        locked_error: builds the error raised when the lock cannot be taken.

    Returns:
        A context manager yielding a cursor inside the transaction.
    """
    cur = con.cursor()
    try:
        cur.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        cur.close()
        raise locked_error(e) from None
    try:
        yield cur
        cur.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            cur.execute("ROLLBACK")
        raise
    finally:
        cur.close()
