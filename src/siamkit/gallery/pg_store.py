"""PostgreSQL persistence of a gallery shared by several processes and machines.

The database is the source of truth for every process that opens it (several ``siamkit
serve`` instances behind a load balancer, say); each process keeps its own search index,
built from :meth:`PgGalleryStore.snapshot` and kept current by the write generation: a
query first reads the generation (one primary-key lookup), and a process that is behind
applies the newer writes from the ``changes`` table (:mod:`siamkit.gallery.follow`), or
reloads everything after a re-embedding. Each write also sends a NOTIFY, so that a
listening process (:meth:`PgGalleryStore.subscribe`) follows it within milliseconds,
before its next query asks.

Durability and concurrency: every write is one transaction that first locks the
generation row (``SELECT ... FOR UPDATE``), so writers from every process queue on it as
SQLite's writers queue on the file lock, generations are consecutive, and sample ids grow
in commit order. A client killed mid-write leaves nothing (PostgreSQL rolls its
transaction back); a commit that returned survives a server crash (``synchronous_commit``
is PostgreSQL's default, on). Connections come from a :mod:`psycopg_pool` pool; each is
checked before use, so after a server restart the first request gets a new connection
rather than an error. While the server cannot be reached every call raises
:class:`~siamkit.errors.GalleryUnavailableError` (HTTP 503) and the pool reconnects by
itself. pgvector is not used: search stays in each process.

Needs the ``postgres`` extra (``pip install 'siamkit[postgres]'``: psycopg 3 and psycopg_pool).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import (
    GalleryError,
    GalleryFileError,
    GalleryLockedError,
    GalleryUnavailableError,
    IdentityExistsError,
    UnknownIdentityError,
)
from .pg_schema import KEEP_CHANGES, NOTIFY_CHANNEL, check_meta, init_meta_rows, migrate
from .snapshot import Snapshot
from .store_schema import StoredSample, check_identity, json_object, sample_rows

try:
    import psycopg
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError:  # pragma: no cover - the optional extra is missing
    psycopg = None  # type: ignore[assignment]

__all__ = ["PgGalleryStore", "Change", "redact_url"]

logger = logging.getLogger(__name__)

#: most connections one process's pool opens
POOL_SIZE = 8
#: seconds one connection attempt may take
CONNECT_TIMEOUT = 3


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


@dataclass
class Change:
    """One write another process made, as a follower applies it.

    Attributes:
        generation: the generation the write produced (the one before is ``generation - 1``).
        action: ``add``, ``remove`` or ``meta``.
        identity: the identity concerned (None for ``meta`` of the whole gallery).
        sample_ids: the added samples' ids (``add`` only).
        embeddings: float32 (len(sample_ids), D) (``add`` only).
    """

    generation: int
    action: str
    identity: str | None
    sample_ids: list[int]
    embeddings: np.ndarray | None = None


class PgGalleryStore:
    """A gallery in a PostgreSQL database (the same methods as
    :class:`~siamkit.gallery.store.GalleryStore`; see :class:`~siamkit.gallery.backend.GalleryBackend`).

    Use :meth:`open`. Thread-safe: every call takes a pooled connection of its own.

    Args:
        url: the database URL.
        pool: the open connection pool.
        timeout: seconds a write waits for another's lock, and a call for a connection.
    """

    def __init__(self, url: str, pool: Any, timeout: float) -> None:
        self.url = url
        self.path = redact_url(url)
        self.timeout = timeout
        self._pool: Any = pool
        self._listener: Any = None

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls, url: str, *, create: bool = False, init_meta: dict[str, Any] | None = None, timeout: float = 60.0
    ) -> PgGalleryStore:
        """Open (and, with ``create``, create) the gallery in a database.

        Args:
            url: ``postgresql://user[:password]@host[:port]/db`` (libpq's URL; ``?host=/dir``
                for a unix socket).
            create: create the gallery tables if the database has none (``init_meta``
                is then required); migrations of an older siamkit are applied either way.
            init_meta: a new gallery's meta values.
            timeout: seconds a write waits for another's lock, and a call for a connection.

        Returns:
            The open store.

        Raises:
            GalleryError: psycopg is not installed.
            GalleryUnavailableError: the server cannot be reached.
            GalleryFileError: no gallery there (without ``create``), a newer schema, damaged meta.
        """
        if psycopg is None:
            raise GalleryError("a PostgreSQL gallery needs psycopg: pip install 'siamkit[postgres]'")
        where = redact_url(url)
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as con:
                _init_database(con, where, init_meta if create else None)
        except psycopg.OperationalError as e:
            raise GalleryUnavailableError(f"cannot reach the gallery database {where}: {_first_line(e)}") from None
        except psycopg.Error as e:
            raise GalleryFileError(f"{where} is not a usable siamkit gallery ({_first_line(e)})") from None
        lock_ms = int(timeout * 1000)

        def configure(con: Any) -> None:
            con.execute(f"SET lock_timeout = {lock_ms}")

        pool = ConnectionPool(
            url, min_size=1, max_size=POOL_SIZE, timeout=timeout, open=False, configure=configure,
            check=ConnectionPool.check_connection, reconnect_timeout=365 * 86400.0,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT}, name="siamkit-gallery",
        )
        pool.open(wait=False)
        return cls(url, pool, timeout)

    # ----------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection; driver errors become siamkit's (unavailable / locked)."""
        if self._pool is None:
            raise GalleryError(f"gallery {self.path} is closed")
        try:
            with self._pool.connection(timeout=min(self.timeout, 5.0)) as con:
                yield con
        except PoolTimeout as e:
            raise GalleryUnavailableError(f"the gallery database {self.path} cannot be reached ({_first_line(e)}); try again") from None
        except psycopg.errors.LockNotAvailable as e:
            raise GalleryLockedError(f"gallery {self.path} is locked by another writer ({_first_line(e)}); try again") from None
        except psycopg.OperationalError as e:
            raise GalleryUnavailableError(f"the gallery database {self.path} is unavailable ({_first_line(e)}); try again") from None
        except psycopg.errors.UndefinedTable as e:
            raise GalleryFileError(f"{self.path} is damaged: {_first_line(e)}") from None

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        """A read transaction on one consistent snapshot (REPEATABLE READ)."""
        with self._connection() as con, con.transaction(), con.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield cur

    @contextlib.contextmanager
    def _write(self) -> Iterator[tuple[Any, int]]:
        """A write transaction holding the generation row's lock: (cursor, generation now)."""
        with self._connection() as con, con.transaction(), con.cursor() as cur:
            cur.execute("SELECT value FROM meta WHERE key = 'generation' FOR UPDATE")
            yield cur, int(json.loads(cur.fetchone()[0]))

    def _commit(self, cur: Any, old: int, action: str, identity: str | None, n: int, detail: dict[str, Any] | None = None,
                ids: Sequence[int] = ()) -> tuple[int, int]:
        """The end of every write: bump the generation, record the change, audit, notify."""
        new = old + 1
        cur.execute("UPDATE meta SET value = %s WHERE key = 'generation'", (json.dumps(new),))
        change = {"enroll": "add", "add_samples": "add", "remove": "remove", "update_metadata": "meta"}.get(action, "reset")
        cur.execute(
            "INSERT INTO changes(generation, action, identity_id, first_sample, last_sample) VALUES (%s, %s, %s, %s, %s)",
            (new, change, identity, ids[0] if ids else None, ids[-1] if ids else None),
        )
        if new % 100 == 0:
            cur.execute("DELETE FROM changes WHERE generation <= %s", (new - KEEP_CHANGES,))
        cur.execute(
            "INSERT INTO audit(time, action, identity_id, n_samples, detail) VALUES (%s, %s, %s, %s, %s)",
            (time.time(), action, identity, n, json.dumps(detail or {}, sort_keys=True)),
        )
        cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, f"{self._gallery_id(cur)}:{new}"))
        return old, new

    @staticmethod
    def _gallery_id(cur: Any) -> str:
        cur.execute("SELECT value FROM meta WHERE key = 'gallery_id'")
        return str(json.loads(cur.fetchone()[0]))

    def subscribe(self, callback: Callable[[int | None], None]) -> None:
        """Call ``callback(generation)`` from a background thread whenever a process
        commits a write (``None``: the listener reconnected and may have missed some).

        Args:
            callback: what to call; it must not raise.
        """
        from .pg_listen import ChangeListener

        if self._listener is None:
            with self._read() as cur:
                gallery_id = self._gallery_id(cur)
            self._listener = ChangeListener(self.url, gallery_id, callback)
            self._listener.start()

    def close(self) -> None:
        """Stop listening and close the pool (idempotent)."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close(timeout=2.0)

    @property
    def closed(self) -> bool:
        return self._pool is None

    # ----------------------------------------------------------------- reads

    def meta(self) -> dict[str, Any]:
        """All meta values (JSON-decoded)."""
        with self._read() as cur:
            cur.execute("SELECT key, value FROM meta")
            return {k: json.loads(v) for k, v in cur.fetchall()}

    def generation(self) -> int:
        """The write generation (bumped by every write transaction of any process)."""
        with self._connection() as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(json.loads(row[0]))

    def snapshot(self, embedding_dim: int) -> Snapshot:
        """Every sample's embedding, read in one transaction (a consistent view)."""
        with self._read() as cur:
            cur.execute("SELECT value FROM meta WHERE key = 'generation'")
            gen = int(json.loads(cur.fetchone()[0]))
            cur.execute("SELECT id FROM identities ORDER BY seq")
            names = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT s.id, i.seq, s.embedding FROM samples s JOIN identities i ON i.id = s.identity_id ORDER BY s.id")
            rows = cur.fetchall()
        return _snapshot(gen, names, rows, embedding_dim, self.path)

    def changes_since(self, generation: int, embedding_dim: int) -> tuple[int, list[Change]] | None:
        """The writes after ``generation`` (see :mod:`siamkit.gallery.follow`), read in one
        transaction, or None when they cannot be followed (a re-embedding, pruned rows,
        samples since deleted): then reload the snapshot.

        Args:
            generation: the generation the follower is at.
            embedding_dim: the embeddings' size.

        Returns:
            (the current generation, its changes in order), or None.
        """
        with self._read() as cur:
            cur.execute("SELECT value FROM meta WHERE key = 'generation'")
            now = int(json.loads(cur.fetchone()[0]))
            if now - generation > 1000:
                return None
            cur.execute(
                "SELECT generation, action, identity_id, first_sample, last_sample FROM changes "
                "WHERE generation > %s ORDER BY generation", (generation,),
            )
            rows = cur.fetchall()
            if [int(r[0]) for r in rows] != list(range(generation + 1, now + 1)) or any(r[1] == "reset" for r in rows):
                return None
            ranges = [(r[3], r[4]) for r in rows if r[1] == "add"]
            found: dict[int, bytes] = {}
            if ranges:
                cur.execute(
                    "SELECT id, embedding FROM samples WHERE " + " OR ".join(["(id BETWEEN %s AND %s)"] * len(ranges)),
                    [v for pair in ranges for v in pair],
                )
                found = {int(i): bytes(e) for i, e in cur.fetchall()}
        changes = _changes(rows, found, embedding_dim)
        return None if changes is None else (now, changes)

    def has_identity(self, identity: str) -> bool:
        with self._connection() as con:
            return con.execute("SELECT 1 FROM identities WHERE id = %s", (identity,)).fetchone() is not None

    def list_identities(self) -> list[dict[str, Any]]:
        """Every identity with its metadata, sample count and times, in enrolment order."""
        with self._read() as cur:
            cur.execute(
                "SELECT i.id, i.metadata, i.created, i.updated, COUNT(s.id) FROM identities i "
                "LEFT JOIN samples s ON s.identity_id = i.id GROUP BY i.id ORDER BY MIN(i.seq)"
            )
            rows = cur.fetchall()
        return [
            {"identity": r[0], "metadata": json.loads(r[1]), "created": r[2], "updated": r[3], "n_samples": int(r[4])}
            for r in rows
        ]

    def get_identity(self, identity: str) -> dict[str, Any]:
        """One identity with its samples' ids, metadata and whether the input is kept.

        Raises:
            UnknownIdentityError: not enrolled.
        """
        with self._read() as cur:
            cur.execute("SELECT id, metadata, created, updated FROM identities WHERE id = %s", (identity,))
            row = cur.fetchone()
            if row is None:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled")
            cur.execute(
                "SELECT id, metadata, created, sample IS NOT NULL, sample_format FROM samples "
                "WHERE identity_id = %s ORDER BY id", (identity,),
            )
            samples = cur.fetchall()
        return {
            "identity": row[0], "metadata": json.loads(row[1]), "created": row[2], "updated": row[3],
            "n_samples": len(samples),
            "samples": [
                {"id": int(s[0]), "metadata": json.loads(s[1]), "created": s[2], "has_input": bool(s[3]), "format": s[4]}
                for s in samples
            ],
        }

    def count(self) -> tuple[int, int]:
        """(identities, samples)."""
        with self._read() as cur:
            cur.execute("SELECT (SELECT COUNT(*) FROM identities), (SELECT COUNT(*) FROM samples)")
            a, b = cur.fetchone()
        return int(a), int(b)

    def iter_stored_samples(self, batch: int = 256) -> Iterator[list[tuple[int, StoredSample | None]]]:
        """All samples' kept inputs, in id order, ``batch`` at a time (None: not kept)."""
        last = -1
        while True:
            with self._connection() as con:
                rows = con.execute(
                    "SELECT id, sample, sample_format, sample_shape FROM samples WHERE id > %s ORDER BY id LIMIT %s",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            yield [
                (int(sid), None if data is None else StoredSample(fmt, bytes(data), tuple(json.loads(shape)) if shape else None))
                for sid, data, fmt, shape in rows
            ]
            last = int(rows[-1][0])

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit events, newest first."""
        sql = "SELECT id, time, action, identity_id, n_samples, detail FROM audit ORDER BY id DESC"
        args: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT %s"
            args = (int(limit),)
        with self._connection() as con:
            rows = con.execute(sql, args).fetchall()
        return [
            {"id": r[0], "time": r[1], "action": r[2], "identity": r[3], "n_samples": r[4], "detail": json.loads(r[5])}
            for r in rows
        ]

    def integrity_check(self) -> str:
        """Embeddings of the wrong size and the schema version: ``"ok"`` or the problems."""
        with self._read() as cur:
            cur.execute("SELECT value FROM meta WHERE key = 'embedding_dim'")
            dim = int(json.loads(cur.fetchone()[0]))
            cur.execute("SELECT COUNT(*) FROM samples WHERE length(embedding) <> %s", (dim * 4,))
            bad = int(cur.fetchone()[0])
        return "ok" if bad == 0 else f"{bad} samples have embeddings that are not {dim} float32 values"

    # ----------------------------------------------------------------- writes

    def _insert_sample_rows(self, cur: Any, rows: list[tuple[Any, ...]]) -> list[int]:
        """Insert sample rows (identity, embedding, sample, format, shape, metadata, created);
        returns their new ids (increasing)."""
        cur.executemany(
            "INSERT INTO samples(identity_id, embedding, sample, sample_format, sample_shape, metadata, created) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            rows, returning=True,
        )
        ids = []
        while True:
            ids.append(int(cur.fetchone()[0]))
            if not cur.nextset():
                break
        return ids

    def add_identity(
        self,
        identity: str,
        embeddings: np.ndarray,
        samples: Sequence[StoredSample | None],
        *,
        metadata: dict[str, Any] | None = None,
        sample_metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> tuple[int, int, list[int]]:
        """Enrol a new identity with its samples, in one transaction (see
        :meth:`siamkit.gallery.store.GalleryStore.add_identity`).

        Raises:
            IdentityExistsError: the identity is already enrolled (nothing is written).
        """
        check_identity(identity)
        meta_json = json_object(metadata, "identity metadata")
        rows = sample_rows(identity, embeddings, samples, sample_metadata)
        if not rows:
            raise GalleryError(f"enrolling {identity!r} needs at least one sample")
        with self._write() as (cur, gen):
            cur.execute("SELECT COUNT(*) FROM samples WHERE identity_id = %s", (identity,))
            n_old = cur.fetchone()[0]
            cur.execute("SELECT 1 FROM identities WHERE id = %s", (identity,))
            if cur.fetchone() is not None:
                raise IdentityExistsError(
                    f"identity {identity!r} is already enrolled ({n_old} samples); add samples to it with "
                    "add_samples (`siamkit gallery add`), or remove it first"
                )
            now = time.time()
            cur.execute("INSERT INTO identities(id, metadata, created, updated) VALUES (%s, %s, %s, %s)", (identity, meta_json, now, now))
            ids = self._insert_sample_rows(cur, rows)
            old, new = self._commit(cur, gen, "enroll", identity, len(ids), {"sample_ids": [ids[0], ids[-1]]}, ids)
        return old, new, ids

    def add_samples(
        self,
        identity: str,
        embeddings: np.ndarray,
        samples: Sequence[StoredSample | None],
        *,
        sample_metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> tuple[int, int, list[int]]:
        """Add samples to an enrolled identity, in one transaction.

        Raises:
            UnknownIdentityError: not enrolled.
        """
        rows = sample_rows(identity, embeddings, samples, sample_metadata)
        if not rows:
            raise GalleryError(f"adding samples to {identity!r} needs at least one sample")
        with self._write() as (cur, gen):
            cur.execute("UPDATE identities SET updated = %s WHERE id = %s", (time.time(), identity))
            if cur.rowcount == 0:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled; enrol it first")
            ids = self._insert_sample_rows(cur, rows)
            old, new = self._commit(cur, gen, "add_samples", identity, len(ids), {"sample_ids": [ids[0], ids[-1]]}, ids)
        return old, new, ids

    def set_metadata(self, identity: str, metadata: dict[str, Any]) -> tuple[int, int]:
        """Replace an identity's metadata (one transaction).

        Args:
            identity: an enrolled identity.
            metadata: its new JSON-able metadata.

        Returns:
            (generation before, generation after).
        """
        meta_json = json_object(metadata, "identity metadata")
        with self._write() as (cur, gen):
            cur.execute("UPDATE identities SET metadata = %s, updated = %s WHERE id = %s", (meta_json, time.time(), identity))
            if cur.rowcount == 0:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled")
            return self._commit(cur, gen, "update_metadata", identity, 0)

    def remove_identity(self, identity: str) -> tuple[int, int, int]:
        """Delete an identity and (by cascade) its samples, in one transaction.

        Returns:
            (generation before, generation after, samples removed).
        """
        with self._write() as (cur, gen):
            cur.execute("SELECT COUNT(*) FROM samples WHERE identity_id = %s", (identity,))
            n = int(cur.fetchone()[0])
            cur.execute("DELETE FROM identities WHERE id = %s", (identity,))
            if cur.rowcount == 0:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled")
            old, new = self._commit(cur, gen, "remove", identity, n)
        return old, new, n

    def replace_embeddings(
        self, sample_ids: np.ndarray, embeddings: np.ndarray, meta_updates: dict[str, Any], *, expected_generation: int
    ) -> tuple[int, int]:
        """Re-embedding: every sample's new embedding and the new model's meta, in ONE
        transaction (see :meth:`siamkit.gallery.store.GalleryStore.replace_embeddings`).

        Args:
            sample_ids: int64 (N,), every stored sample.
            embeddings: float32 (N, D'), their new embeddings.
            meta_updates: the new model's meta values.
            expected_generation: the generation the samples were read at.

        Returns:
            (generation before, generation after).
        """
        emb = np.ascontiguousarray(embeddings, dtype="<f4")
        with self._write() as (cur, gen):
            if gen != expected_generation:
                raise GalleryError(f"gallery {self.path} changed while re-embedding (another process wrote to it); run reembed again")
            cur.execute("SELECT COUNT(*) FROM samples")
            stored = cur.fetchone()[0]
            if stored != len(sample_ids):
                raise GalleryError(f"re-embedding covers {len(sample_ids)} samples but the gallery holds {stored}")
            cur.executemany(
                "UPDATE samples SET embedding = %s WHERE id = %s",
                [(emb[i].tobytes(), int(sample_ids[i])) for i in range(len(sample_ids))],
            )
            _write_meta(cur, meta_updates)
            detail = {k: meta_updates.get(k) for k in ("model_fingerprint", "model_hash")}
            return self._commit(cur, gen, "reembed", None, len(sample_ids), detail)

    def set_meta(self, updates: dict[str, Any]) -> None:
        """Update meta values in one transaction (bumps the generation)."""
        with self._write() as (cur, gen):
            _write_meta(cur, updates)
            self._commit(cur, gen, "set_meta", None, 0, dict(updates))

    def __repr__(self) -> str:
        return f"PgGalleryStore({self.path!r}{', closed' if self.closed else ''})"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _write_meta(cur: Any, updates: dict[str, Any]) -> None:
    for k, v in updates.items():
        cur.execute(
            "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (k, json.dumps(v)),
        )


def _init_database(con: Any, where: str, init_meta: dict[str, Any] | None) -> None:
    """Migrate the tables and, for a new gallery, write its meta (one transaction)."""
    with con.transaction(), con.cursor() as cur:
        found = migrate(cur, where)
        cur.execute("SELECT key, value FROM meta")
        meta = {k: json.loads(v) for k, v in cur.fetchall()}
        if not meta:
            if init_meta is None:
                kind = "no siamkit gallery" if found == 0 else "an empty siamkit gallery (no model)"
                raise GalleryFileError(f"{where} holds {kind}; creating one needs a model")
            cur.executemany("INSERT INTO meta(key, value) VALUES (%s, %s)", init_meta_rows(init_meta))
            detail = {k: init_meta.get(k) for k in ("model_fingerprint", "distance", "scoring")}
            cur.execute(
                "INSERT INTO audit(time, action, identity_id, n_samples, detail) VALUES (%s, 'create', NULL, 0, %s)",
                (time.time(), json.dumps(detail)),
            )
            return
    check_meta(meta, where)


def _snapshot(gen: int, names: list[str], rows: list[Any], dim: int, where: str) -> Snapshot:
    """rows (sample id, identity seq, embedding) -> the Snapshot, codes in ``names`` order."""
    n = len(rows)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
    seqs = np.fromiter((r[1] for r in rows), dtype=np.int64, count=n)
    blob = b"".join(bytes(r[2]) for r in rows)
    if len(blob) != n * dim * 4:
        raise GalleryFileError(f"{where} is damaged: stored embeddings do not all have {dim} float32 values")
    # identity seq -> code: the rank of its seq among all identities (names is in seq order)
    uniq, codes = np.unique(seqs, return_inverse=True)
    if len(uniq) != len(names):  # identities without samples cannot exist (enrolment needs one)
        raise GalleryFileError(f"{where} is damaged: {len(names) - len(uniq)} identities have no samples")
    emb = np.frombuffer(blob, dtype="<f4").astype(np.float32, copy=False).reshape(n, dim)
    return Snapshot(generation=gen, sample_ids=ids, codes=codes.astype(np.int64), identities=names, embeddings=emb)


def _changes(rows: list[Any], found: dict[int, bytes], dim: int) -> list[Change] | None:
    """Change rows + the added samples' embeddings -> Changes (None: some samples are gone)."""
    out = []
    for gen, action, identity, first, last in rows:
        if action != "add":
            out.append(Change(int(gen), action, identity, []))
            continue
        ids = [i for i in range(int(first), int(last) + 1) if i in found]
        if len(ids) != int(last) - int(first) + 1:
            return None  # removed since: the follower reloads
        emb = np.frombuffer(b"".join(found[i] for i in ids), dtype="<f4").astype(np.float32).reshape(len(ids), dim)
        out.append(Change(int(gen), "add", identity, ids, emb))
    return out
