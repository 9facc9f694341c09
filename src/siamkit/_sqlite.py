"""The one SQLite write-transaction helper shared by the gallery and the feedback store."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Callable, Iterator

__all__ = ["immediate_transaction"]


@contextlib.contextmanager
def immediate_transaction(
    con: sqlite3.Connection, locked_error: Callable[[sqlite3.OperationalError], Exception]
) -> Iterator[sqlite3.Cursor]:
    """BEGIN IMMEDIATE (takes the write lock up front, so two writers queue instead of
    deadlocking on a lock upgrade), then COMMIT, or ROLLBACK on any exception.

    Args:
        con: a connection opened with ``isolation_level=None`` (explicit transactions).
        locked_error: builds the error raised when the lock cannot be taken.
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
