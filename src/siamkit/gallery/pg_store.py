"""PostgreSQL persistence of a gallery shared by several processes and machines.

The database is the source of truth for every process that opens it (several ``siamkit
serve`` instances behind a load balancer, say); each keeps its own search index, built
from :meth:`PgGalleryStore.snapshot` and kept current by the write generation: a process
that is behind applies the newer writes from the ``changes`` table
(:mod:`siamkit.gallery.follow`), or reloads after a re-embedding. Each write sends a
NOTIFY; a listening process (:meth:`PgGalleryStore.subscribe`) follows it within
milliseconds, and its queries read nothing from the database unless something changed.

Every write is one transaction that first locks the generation row (``SELECT ... FOR
UPDATE``): writers of every process queue on it as SQLite's queue on the file lock,
generations are consecutive, sample ids grow in commit order. A client killed mid-write
leaves nothing (its transaction is rolled back); a commit that returned survives a server
crash (``synchronous_commit`` on, the default). Pooled connections (:mod:`psycopg_pool`)
are checked before use; while the server cannot be reached every call raises
:class:`~siamkit.errors.GalleryUnavailableError` (HTTP 503) and the pool reconnects by
itself. pgvector is not used. Needs the ``postgres`` extra (psycopg 3, psycopg_pool).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .._pg import CONNECT_TIMEOUT, POOL_SIZE, make_pool, pooled_connection
from ..errors import (
    GalleryError,
    GalleryFileError,
    GalleryLockedError,
    GalleryUnavailableError,
    UnknownIdentityError,
)
from .pg_rows import (
    Change, finish_write, first_line, gallery_id_of, init_database, insert_identities, insert_samples, read_changes, read_snapshot,
    redact_url, write_meta,
)
from .bulk_rows import EnrolEntry, check_distinct, enrol_rows
from .model_guard import check_in_transaction
from .snapshot import Snapshot
from .store_schema import (
    StoredSample, audit_record, identity_detail, identity_record, json_object, new_sample_rows, stored_samples,
)

try:
    import psycopg
except ImportError:  # pragma: no cover - the optional extra is missing
    psycopg = None  # type: ignore[assignment]

__all__ = ["PgGalleryStore", "Change", "redact_url"]

logger = logging.getLogger(__name__)

#: seconds a call waits for a pooled connection (while the server is down: then unavailable)
CHECKOUT_TIMEOUT = 3.0
#: gallery id -> the newest generation a handle of this process committed (read-your-writes
#: across handles of one process; other processes learn of it by NOTIFY)
_WRITTEN: dict[str, int] = {}
_WRITTEN_LOCK = threading.Lock()


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
        self._gid = ""
        self._mine = threading.local()  # .generation: what this thread's write transaction reached
        #: the model hash writes of embeddings must match (None: not checked); see model_guard
        self.model_hash: str | None = None

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
                init_database(con, where, init_meta if create else None)
        except psycopg.OperationalError as e:
            raise GalleryUnavailableError(f"cannot reach the gallery database {where}: {first_line(e)}") from None
        except psycopg.Error as e:
            raise GalleryFileError(f"{where} is not a usable siamkit gallery ({first_line(e)})") from None
        store = cls(url, make_pool(url, timeout=timeout, name="siamkit-gallery", max_size=POOL_SIZE), timeout)
        store.model_hash = (init_meta or {}).get("model_hash")
        return store

    # ----------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection; driver errors become siamkit's (unavailable / locked)."""
        if self._pool is None:
            raise GalleryError(f"gallery {self.path} is closed")
        try:
            with pooled_connection(self._pool, where=str(self.path), store="gallery", unavailable=GalleryUnavailableError,
                                   locked=GalleryLockedError, timeout=min(self.timeout, CHECKOUT_TIMEOUT)) as con:
                yield con
        except psycopg.errors.UndefinedTable as e:
            raise GalleryFileError(f"{self.path} is damaged: {first_line(e)}") from None

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        """A read transaction on one consistent snapshot (REPEATABLE READ)."""
        with self._connection() as con, con.transaction(), con.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield cur

    @contextlib.contextmanager
    def _write(self) -> Iterator[tuple[Any, int]]:
        """A write transaction holding the generation row's lock: (cursor, generation now).
        Every write bumps the generation once (:meth:`_commit`)."""
        with self._connection() as con:
            with con.transaction(), con.cursor() as cur:
                cur.execute("SELECT value FROM meta WHERE key = 'generation' FOR UPDATE")
                gen = int(json.loads(cur.fetchone()[0]))
                self._mine.generation = gen + 1
                yield cur, gen
        with _WRITTEN_LOCK:  # committed: every handle of this process sees it at once
            _WRITTEN[self._gid] = max(_WRITTEN.get(self._gid, -1), self._mine.generation)

    def _commit(self, cur: Any, old: int, action: str, identity: str | None, n: int, detail: dict[str, Any] | None = None,
                ids: Sequence[int] = ()) -> tuple[int, int]:
        """The end of every write (:func:`~siamkit.gallery.pg_rows.finish_write`)."""
        self._gid = finish_write(cur, old, action, identity, n, detail, ids)
        self._mine.generation = old + 1  # this thread's transaction (a bulk write commits several)
        return old, old + 1

    def subscribe(self, callback: Callable[[int | None], None]) -> None:
        """Call ``callback(generation)`` from a background thread whenever a process
        commits a write (``None``: the listener reconnected and may have missed some).

        Args:
            callback: what to call; it must not raise.
        """
        from .pg_listen import ChangeListener

        if self._listener is None:
            with self._read() as cur:
                gallery_id = gallery_id_of(cur)
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
        """The write generation (bumped by every write transaction of any process).

        While the listener (:meth:`subscribe`) has a fresh heartbeat this is what it
        learnt by NOTIFY, or the newest commit of this process, whichever is newer: a query
        then reads nothing from the database unless something changed, sees this process's
        writes at once and other processes' within milliseconds (at most a heartbeat). Else
        it is read from the database."""
        listener = self._listener
        if listener is not None and listener.fresh():
            return max(listener.generation, _WRITTEN.get(listener.gallery_id, -1))
        with self._connection() as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(json.loads(row[0]))

    def snapshot(self, embedding_dim: int) -> Snapshot:
        """Every sample's embedding, read in one transaction (a consistent view)."""
        with self._read() as cur:
            return read_snapshot(cur, embedding_dim, self.path)

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
            return read_changes(cur, generation, embedding_dim)

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
        return [identity_record(r) for r in rows]

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
        return identity_detail(row, samples)

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
            yield stored_samples(rows)
            last = int(rows[-1][0])

    def stored_sample(self, sample_id: int) -> tuple[str, StoredSample | None] | None:
        """One sample's identity and kept input (None: not kept); None when there is no such sample."""
        with self._connection() as con:
            rows = con.execute(
                "SELECT id, sample, sample_format, sample_shape, identity_id FROM samples WHERE id = %s", (int(sample_id),)
            ).fetchall()
        if not rows:
            return None
        return str(rows[0][4]), stored_samples([rows[0][:4]])[0][1]

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit events, newest first."""
        sql = "SELECT id, time, action, identity_id, n_samples, detail FROM audit ORDER BY id DESC"
        with self._connection() as con:
            rows = con.execute(sql + ("" if limit is None else f" LIMIT {int(limit)}")).fetchall()
        return [audit_record(r) for r in rows]

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
        """Insert sample rows; returns their new ids (increasing)."""
        return insert_samples(cur, rows)

    def add_identity(
        self,
        identity: str,
        embeddings: np.ndarray,
        samples: Sequence[StoredSample | None],
        *,
        metadata: dict[str, Any] | None = None,
        sample_metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> tuple[int, int, list[int]]:
        """Enrol a new identity with its samples, in one transaction.

        Args:
            identity: the new identity; embeddings: float32 (N, D); samples: the kept
                inputs; metadata, sample_metadata: as for
                :meth:`siamkit.gallery.store.GalleryStore.add_identity`.

        Returns:
            (generation before, generation after, new sample ids).

        Raises:
            IdentityExistsError: the identity is already enrolled (nothing is written).
        """
        return self.add_identities([(identity, embeddings, samples, metadata, sample_metadata)])[0]

    def add_identities(self, entries: Sequence[EnrolEntry]) -> list[tuple[int, int, list[int]]]:
        """Enrol several new identities in ONE transaction, all or none (see
        :meth:`siamkit.gallery.store.GalleryStore.add_identities`).

        Args:
            entries: (identity, embeddings, samples, metadata, sample_metadata) each.

        Returns:
            Per identity: (generation before, after, new sample ids); one generation each.
        """
        prepared = [enrol_rows(*e) for e in entries]
        check_distinct([p[0] for p in prepared])
        if not prepared:
            return []
        with self._write() as (cur, gen):
            check_in_transaction(cur, self.model_hash, self.path)
            self._gid, done = insert_identities(cur, gen, prepared, self._insert_sample_rows)
            self._mine.generation = gen + len(prepared)
        return done

    def add_samples(
        self,
        identity: str,
        embeddings: np.ndarray,
        samples: Sequence[StoredSample | None],
        *,
        sample_metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> tuple[int, int, list[int]]:
        """Add samples to an enrolled identity, in one transaction.

        Args:
            identity: an enrolled identity; embeddings: float32 (N, D); samples: the kept
                inputs; sample_metadata: one dict (or None) per sample.

        Returns:
            (generation before, generation after, new sample ids).

        Raises:
            UnknownIdentityError: not enrolled.
        """
        rows = new_sample_rows(identity, embeddings, samples, sample_metadata, "adding samples to")
        with self._write() as (cur, gen):
            check_in_transaction(cur, self.model_hash, self.path)
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
            write_meta(cur, meta_updates)
            detail = {k: meta_updates.get(k) for k in ("model_fingerprint", "model_hash")}
            done = self._commit(cur, gen, "reembed", None, len(sample_ids), detail)
        self.model_hash = meta_updates.get("model_hash", self.model_hash)
        return done

    def set_meta(self, updates: dict[str, Any]) -> None:
        """Update meta values in one transaction (bumps the generation)."""
        with self._write() as (cur, gen):
            write_meta(cur, updates)
            self._commit(cur, gen, "set_meta", None, 0, dict(updates))

    def __repr__(self) -> str:
        return f"PgGalleryStore({self.path!r}{', closed' if self.closed else ''})"
