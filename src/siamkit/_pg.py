"""The PostgreSQL plumbing every siamkit store on a database shares (the gallery, the
feedback store, the service's API keys): the connection pool, versioned migrations,
URLs without passwords and driver messages cut to one line.

Each store keeps its own tables and its own version table, so a gallery, a feedback
store and a keys table may share one database (``siamkit serve --gallery URL --keys URL``)
or live apart. Needs the ``postgres`` extra (psycopg 3, psycopg_pool); this module imports
them lazily so that the library imports without them.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from typing import Any, Callable, Iterator, Mapping, Sequence

__all__ = ["CONNECT_TIMEOUT", "DATABASE_SCHEMES", "POOL_SIZE", "is_database_url", "apply_migrations", "first_line", "make_pool", "pooled_connection", "redact_url"]

#: most connections one store's pool opens
POOL_SIZE = 8
#: seconds one connection attempt may take
CONNECT_TIMEOUT = 3


#: URL schemes of a PostgreSQL database
DATABASE_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(location: Any) -> bool:
    """Whether a store's location names a PostgreSQL database rather than a file.

    Args:
        location: a path or a string.

    Returns:
        True for ``postgresql://...`` / ``postgres://...`` strings.
    """
    return isinstance(location, str) and location.lower().startswith(DATABASE_SCHEMES)


def redact_url(url: str) -> str:
    """A database URL without its password (for messages and logs).

    Args:
        url: ``postgresql://user:password@host:port/db?...``.

    Returns:
        The URL with the password replaced by ``***``.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def first_line(e: BaseException) -> str:
    """A driver error's first line (at most 300 characters)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def make_pool(url: str, *, timeout: float, name: str, max_size: int = POOL_SIZE) -> Any:
    """A started :class:`psycopg_pool.ConnectionPool` (autocommit connections, checked
    before use, reconnecting for as long as the server is gone; ``lock_timeout`` = ``timeout``).

    Args:
        url: the database URL.
        timeout: seconds a statement waits for a lock, and a caller for a connection.
        name: the pool's name (in psycopg's logs).
        max_size: most connections.

    Returns:
        The pool (opening in the background: a server that is down is not an error yet).
    """
    from psycopg_pool import ConnectionPool

    lock_ms = int(timeout * 1000)

    def configure(con: Any) -> None:
        con.execute(f"SET lock_timeout = {lock_ms}")

    pool = ConnectionPool(
        url, min_size=1, max_size=max_size, timeout=timeout, open=False, configure=configure,
        check=ConnectionPool.check_connection, reconnect_timeout=365 * 86400.0,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT}, name=name,
    )
    pool.open(wait=False)
    return pool


@contextlib.contextmanager
def pooled_connection(
    pool: Any,
    *,
    where: str,
    store: str,
    unavailable: type[Exception],
    locked: type[Exception],
    timeout: float | None = None,
) -> Iterator[Any]:
    """A connection from a store's pool, with the driver's errors turned into the store's.

    Args:
        pool: the store's :class:`psycopg_pool.ConnectionPool`.
        where: the store's URL without its password (for messages).
        store: what the store is, for messages ("gallery", "feedback store").
        unavailable: the error for a server that is down or a pool with no connection to give.
        locked: the error for a lock not granted within ``lock_timeout``.
        timeout: seconds to wait for a connection (default: the pool's).

    Returns:
        A context manager yielding the connection.

    Raises:
        Exception: ``unavailable`` or ``locked``, with a one-line message ending in "try again".
    """
    import psycopg
    from psycopg_pool import PoolTimeout

    kind = store.split()[0]
    try:
        with (pool.connection() if timeout is None else pool.connection(timeout=timeout)) as con:
            yield con
    except PoolTimeout as e:
        raise unavailable(f"the {kind} database {where} cannot be reached ({first_line(e)}); try again") from None
    except psycopg.errors.LockNotAvailable as e:
        raise locked(f"{store} {where} is locked by another writer ({first_line(e)}); try again") from None
    except psycopg.OperationalError as e:
        raise unavailable(f"the {kind} database {where} is unavailable ({first_line(e)}); try again") from None


def apply_migrations(
    cur: Any,
    migrations: Mapping[int, Sequence[str]],
    *,
    table: str,
    lock_key: int,
    newer: Callable[[int, int], Exception],
) -> int:
    """Bring one store's tables to the newest of ``migrations``, under an advisory lock
    (two processes opening a new database at once apply each migration once).

    Args:
        cur: a cursor inside a transaction (the caller commits).
        migrations: version -> the statements that bring the previous version to it.
        table: the store's version table (one row per applied migration).
        lock_key: the store's advisory lock key.
        newer: builds the error for a database at a newer version (found, known).

    Returns:
        The version found before migrating (0: no tables of this store yet).

    Raises:
        Exception: what ``newer`` builds, for a database written by a newer siamkit.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
    cur.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)")
    cur.execute(f"SELECT COALESCE(MAX(version), 0) FROM {table}")
    found = int(cur.fetchone()[0])
    known = max(migrations)
    if found > known:
        raise newer(found, known)
    for version in range(found + 1, known + 1):
        for stmt in migrations[version]:
            cur.execute(stmt)
        cur.execute(f"INSERT INTO {table}(version, applied) VALUES (%s, %s)", (version, time.time()))
    return found
