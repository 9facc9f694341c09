"""The API keys in a PostgreSQL database, shared by every service instance.

``siamkit serve --keys postgresql://...`` (usually the gallery's database) and
``siamkit keys add / list / revoke --keys postgresql://...`` use :class:`PgKeyStore`:
the records of a keys file (:class:`~siamkit.service.security.ApiKeyRecord`, scrypt
hashes, never a key) as rows of one table::

    api_keys_schema_version(version INTEGER PRIMARY KEY, applied DOUBLE PRECISION)
    api_keys(id TEXT PRIMARY KEY, name TEXT UNIQUE, record TEXT)   -- record: the file's JSON of the key

Adding and revoking are one statement each, committed at once. A running instance
looks at most every :data:`~siamkit.service.security.RELOAD_INTERVAL_S` seconds (on
authentication) whether the set of key ids changed (one ``md5`` of them) and reloads the
records when it did, dropping every remembered verification: a key revoked through any
instance or the CLI is refused by every instance within about a second. While the
server cannot be reached the keys loaded last keep working (logged); adding or revoking
then fails with :class:`~siamkit.errors.KeyFileError`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from .._pg import CONNECT_TIMEOUT, apply_migrations, first_line, is_database_url, make_pool, redact_url
from ..errors import KeyFileError
from .security import RELOAD_INTERVAL_S, ApiKeyRecord, KeyStore

__all__ = ["PgKeyStore", "MIGRATIONS", "open_keys"]

logger = logging.getLogger(__name__)

#: the advisory lock that serialises the keys table's migrations ("siamkeys")
_LOCK = 0x7369616D6B657973
#: seconds an authentication waits for a pooled connection to look for changes
CHECK_TIMEOUT = 1.0

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, record TEXT NOT NULL)",),
}
_DIGEST = "SELECT md5(COALESCE(string_agg(id, ',' ORDER BY id), '')) FROM api_keys"


def open_keys(location: str | os.PathLike[str], *, create: bool = False) -> KeyStore:
    """The keys a location names: a keys file or a PostgreSQL database.

    Args:
        location: a keys file, or ``postgresql://user@host:port/db``.
        create: a missing file gives an empty store (saved by ``save``); a database's
            table is created either way.

    Returns:
        The store.

    Raises:
        KeyFileError: the file or database cannot be used.
    """
    if is_database_url(location):
        return PgKeyStore.open(str(location))
    path = Path(location)
    if create and not path.exists():
        return KeyStore(path=path)
    return KeyStore.load(path)


class PgKeyStore(KeyStore):
    """API keys in a PostgreSQL table (see the module doc). Use :meth:`open`.

    Args:
        url: the database URL.
        pool: its open connection pool.
        records: the keys read at opening.
        digest: what :data:`_DIGEST` read with them.
    """

    def __init__(self, url: str, pool: Any, records: list[ApiKeyRecord], digest: str) -> None:
        super().__init__(records)
        self.url = url
        self.location = redact_url(url)
        self._pool: Any = pool
        self._digest = digest
        self._warned = 0.0

    @classmethod
    def open(cls, url: str) -> PgKeyStore:  # type: ignore[override]
        """Open (creating the table when missing) the keys of a database.

        Args:
            url: ``postgresql://user[:password]@host[:port]/db``.

        Returns:
            The store with the keys as they are now.

        Raises:
            KeyFileError: psycopg missing, the server unreachable, a newer schema, a bad record.
        """
        try:
            import psycopg
        except ImportError:
            raise KeyFileError("API keys in PostgreSQL need psycopg: pip install 'siamkit[postgres]'") from None
        where = redact_url(url)

        def newer(found: int, known: int) -> KeyFileError:
            return KeyFileError(f"{where} has API keys schema version {found}, newer than this siamkit reads ({known})")

        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as con:
                with con.transaction(), con.cursor() as cur:
                    apply_migrations(cur, MIGRATIONS, table="api_keys_schema_version", lock_key=_LOCK, newer=newer)
                records, digest = _read(con)
        except psycopg.Error as e:
            raise KeyFileError(f"cannot use the API keys in {where}: {first_line(e)}") from None
        return cls(url, make_pool(url, timeout=2.0, name="siamkit-keys", max_size=2), records, digest)

    def close(self) -> None:
        """Close the pool (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=2.0)

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """Reload the keys when the set of key ids changed (looked at most every
        :data:`RELOAD_INTERVAL_S` seconds unless ``force``); True when they were replaced.
        An unreachable server keeps the keys loaded last (logged at most once a minute)."""
        now = time.monotonic()
        with self._lock:
            if self._pool is None or (not force and now < self._next_check):
                return False
            self._next_check = now + RELOAD_INTERVAL_S
        try:
            with self._pool.connection(timeout=CHECK_TIMEOUT) as con:
                digest = con.execute(_DIGEST).fetchone()[0]
                if digest == self._digest:
                    return False
                records, digest = _read(con)
        except Exception as e:  # noqa: BLE001 - keep serving with the keys loaded last
            if now - self._warned > 60.0:
                self._warned = now
                logger.error("cannot read the API keys in %s (keeping the %d loaded): %s", self.location, len(self), first_line(e))
            return False
        with self._lock:
            self._by_id = {r.id: r for r in records}
            self._digest = digest
            self._cache.clear()
            self._failed.clear()
        logger.info("API keys in %s changed: %d keys loaded", self.location, len(records))
        return True

    def add(self, name: str, role: str) -> str:
        """Create a key in the database (committed at once).

        Args:
            name: the key's name (unique in the database).
            role: ``read`` or ``admin``.

        Returns:
            The plaintext key (shown once, never stored).

        Raises:
            KeyFileError: an invalid name or role, the name is taken, or the database is unreachable.
        """
        self.reload_if_changed(force=True)
        before = set(self._by_id)
        key = super().add(name, role)
        rec = next(r for i, r in self._by_id.items() if i not in before)
        try:
            with self._pool.connection() as con:
                con.execute("INSERT INTO api_keys(id, name, record) VALUES (%s, %s, %s)", (rec.id, rec.name, json.dumps(rec.to_json())))
        except Exception as e:  # noqa: BLE001 - a taken name / id, or no server: nothing was added
            del self._by_id[rec.id]
            raise KeyFileError(f"could not add key {name!r} to {self.location}: {first_line(e)}") from None
        return key

    def revoke(self, name_or_id: str) -> bool:
        """Remove a key by name or id in the database; True when one was removed.

        Args:
            name_or_id: the key's name or id.

        Returns:
            Whether a key was removed (every instance refuses it within about a second).
        """
        try:
            with self._pool.connection() as con:
                gone = con.execute("DELETE FROM api_keys WHERE name = %s OR id = %s RETURNING id", (name_or_id, name_or_id)).fetchall()
        except Exception as e:  # noqa: BLE001
            raise KeyFileError(f"could not revoke {name_or_id!r} in {self.location}: {first_line(e)}") from None
        self.reload_if_changed(force=True)
        return bool(gone)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Nothing to write: every add and revoke is committed already. Returns the
        redacted URL as a path-like name (for messages)."""
        return Path(self.location)


def _read(con: Any) -> tuple[list[ApiKeyRecord], str]:
    """Every key record and the digest of their ids, in one transaction."""
    with con.transaction(), con.cursor() as cur:
        cur.execute("SELECT record FROM api_keys ORDER BY id")
        records = [ApiKeyRecord.from_json(json.loads(row[0])) for row in cur.fetchall()]
        cur.execute(_DIGEST)
        return records, cur.fetchone()[0]
