"""SQLite persistence of a gallery: identities, their samples' embeddings, metadata.

One gallery is one SQLite file (the embedded default database: nothing to install or
run). The file is the single source of truth; FAISS index files next to it are caches
rebuilt from it whenever they are missing, stale or unreadable.

The schema, the meta values and the rules for rows are in :mod:`siamkit.gallery.store_schema`.

Durability and concurrency: the file is in WAL mode with ``synchronous=FULL`` and a busy
timeout; every write (enrol, add samples, metadata update, delete, re-embedding) is one
``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, so a process killed at any moment leaves
the gallery as it was before or after that write, and concurrent writers from several
processes queue on SQLite's lock instead of losing updates. Open one store per process
(never share a connection across ``fork``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .._sqlite import connect, immediate_transaction
from ..errors import GalleryError, GalleryFileError, GalleryLockedError, IdentityExistsError, ModelMismatchError, UnknownIdentityError
from .bulk_rows import EnrolEntry, check_distinct, enrol_rows, exists_error
from .model_guard import check_in_transaction
from .snapshot import Snapshot
from .store_schema import (
    SCHEMA_VERSION,
    StoredSample,
    audit_record,
    check_identity,
    check_schema,
    create_schema,
    identity_detail,
    identity_record,
    insert_audit,
    json_object,
    new_sample_rows,
    read_generation,
    read_meta,
    stored_samples,
    write_meta,
)

__all__ = [
    "GalleryStore",
    "StoredSample",
    "Snapshot",
    "GalleryError",
    "GalleryFileError",
    "ModelMismatchError",
    "UnknownIdentityError",
    "IdentityExistsError",
    "SCHEMA_VERSION",
    "check_identity",
]

logger = logging.getLogger(__name__)

#: seconds a writer waits for another process's transaction before giving up
DEFAULT_TIMEOUT = 60.0


class GalleryStore:
    """The SQLite file of one gallery.

    Use :meth:`open`; every public write is one transaction. Thread-safe (one lock per
    store); for several processes, open one store in each.

    Args:
        path: the SQLite file.
        connection: an open connection (autocommit mode) to it.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = connection
        self._lock = threading.RLock()
        self.model_hash: str | None = None  # writes of embeddings must match it (None: unchecked); model_guard

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = False,
        init_meta: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> GalleryStore:
        """Open (and, with ``create``, create) a gallery file.

        Args:
            path: the SQLite file.
            create: create the file if it does not exist (``init_meta`` is then required).
            init_meta: meta values of a new gallery (model_hash, model_fingerprint,
                embedding_dim, distance, normalize, scoring).
            timeout: seconds to wait for another process's write lock.

        Returns:
            The open store.

        Raises:
            GalleryFileError: missing file (without ``create``), not a SQLite file or
                not a siamkit gallery, or a newer schema.
        """
        path = Path(path)
        exists = path.exists() and path.stat().st_size > 0
        if path.exists() and path.is_dir():
            raise GalleryFileError(f"gallery {path} is a folder, not a file")
        if not exists and not create:
            raise GalleryFileError(f"gallery {path} does not exist")
        if not exists and init_meta is None:
            raise GalleryFileError(f"gallery {path} does not exist; creating one needs a model")
        if not path.parent.is_dir():
            raise GalleryFileError(f"folder {path.parent} of gallery {path.name} does not exist")
        try:
            con = connect(path, timeout=timeout, foreign_keys=True)
        except sqlite3.OperationalError as e:
            raise GalleryFileError(f"cannot open gallery {path}: {e}") from None
        except sqlite3.DatabaseError as e:  # e.g. "file is not a database"
            raise GalleryFileError(f"{path} is not a readable siamkit gallery ({e})") from None
        store = cls(path, con)
        try:
            store._init_schema(init_meta if create else None)
        except sqlite3.DatabaseError as e:
            con.close()
            raise GalleryFileError(f"{path} is not a readable siamkit gallery ({e})") from None
        except BaseException:
            con.close()
            raise
        store.model_hash = (init_meta or {}).get("model_hash")
        return store

    def _init_schema(self, init_meta: dict[str, Any] | None) -> None:
        con = self._conn()
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not {"meta", "schema_version"} <= tables:
            raise GalleryFileError(f"{self.path} is a SQLite file but not a siamkit gallery (tables: {sorted(tables)})")
        if not tables:
            if init_meta is None:
                raise GalleryFileError(f"{self.path} is an empty SQLite file, not a siamkit gallery")
            with self._transaction() as cur:  # races safely with another process creating the same file
                create_schema(cur, init_meta)
        check_schema(con, self.path)

    # ----------------------------------------------------------------- plumbing

    def _conn(self) -> sqlite3.Connection:
        if self._con is None:
            raise GalleryError(f"gallery {self.path} is closed")
        return self._con

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: BEGIN IMMEDIATE (takes the write lock up front, so two
        writers queue instead of deadlocking on a lock upgrade), COMMIT or ROLLBACK."""
        with self._lock, immediate_transaction(
            self._conn(),
            lambda e: GalleryLockedError(f"gallery {self.path} is locked by another process ({e}); try again"),
        ) as cur:
            yield cur

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        """A read transaction: one consistent snapshot (WAL readers never block writers)."""
        with self._lock:
            cur = self._conn().cursor()
            cur.execute("BEGIN")
            try:
                yield cur
            finally:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("COMMIT")
                cur.close()

    @staticmethod
    def _bump(cur: sqlite3.Cursor) -> tuple[int, int]:
        old = read_generation(cur)
        cur.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (json.dumps(old + 1),))
        return old, old + 1

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    @property
    def closed(self) -> bool:
        return self._con is None

    # ----------------------------------------------------------------- reads

    def meta(self) -> dict[str, Any]:
        """All meta values (JSON-decoded)."""
        with self._lock:
            return read_meta(self._conn())

    def generation(self) -> int:
        """The write generation (bumped by every write transaction)."""
        with self._lock:
            return read_generation(self._conn())

    def snapshot(self, embedding_dim: int) -> Snapshot:
        """Every sample's embedding, read in one transaction (a consistent view)."""
        with self._read() as cur:
            gen = read_generation(cur)
            names = [r[0] for r in cur.execute("SELECT id FROM identities ORDER BY rowid")]
            code_of = {n: i for i, n in enumerate(names)}
            rows = cur.execute("SELECT id, identity_id, embedding FROM samples ORDER BY id").fetchall()
        n = len(rows)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        codes = np.fromiter((code_of[r[1]] for r in rows), dtype=np.int64, count=n)
        blob = b"".join(r[2] for r in rows)
        if len(blob) != n * embedding_dim * 4:
            raise GalleryFileError(
                f"{self.path} is damaged: stored embeddings do not all have {embedding_dim} float32 values"
            )
        emb = np.frombuffer(blob, dtype="<f4").astype(np.float32, copy=False).reshape(n, embedding_dim)
        return Snapshot(generation=gen, sample_ids=ids, codes=codes, identities=names, embeddings=emb)

    def has_identity(self, identity: str) -> bool:
        with self._lock:
            return self._conn().execute("SELECT 1 FROM identities WHERE id = ?", (identity,)).fetchone() is not None

    def list_identities(self) -> list[dict[str, Any]]:
        """Every identity with its metadata, sample count and times, in enrolment order."""
        with self._read() as cur:
            rows = cur.execute(
                "SELECT i.id, i.metadata, i.created, i.updated, COUNT(s.id) FROM identities i "
                "LEFT JOIN samples s ON s.identity_id = i.id GROUP BY i.id ORDER BY i.rowid"
            ).fetchall()
        return [identity_record(r) for r in rows]

    def get_identity(self, identity: str) -> dict[str, Any]:
        """One identity with its samples' ids, metadata and whether the input is kept.

        Raises:
            UnknownIdentityError: not enrolled.
        """
        with self._read() as cur:
            row = cur.execute("SELECT id, metadata, created, updated FROM identities WHERE id = ?", (identity,)).fetchone()
            if row is None:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled")
            samples = cur.execute(
                "SELECT id, metadata, created, sample IS NOT NULL, sample_format FROM samples "
                "WHERE identity_id = ? ORDER BY id",
                (identity,),
            ).fetchall()
        return identity_detail(row, samples)

    def count(self) -> tuple[int, int]:
        """(identities, samples)."""
        with self._read() as cur:
            a = cur.execute("SELECT COUNT(*) FROM identities").fetchone()[0]
            b = cur.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        return int(a), int(b)

    def iter_stored_samples(self, batch: int = 256) -> Iterator[list[tuple[int, StoredSample | None]]]:
        """All samples' kept inputs, in id order, ``batch`` at a time (None: not kept)."""
        last = -1
        while True:
            with self._lock:
                rows = self._conn().execute(
                    "SELECT id, sample, sample_format, sample_shape FROM samples WHERE id > ? ORDER BY id LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            yield stored_samples(rows)
            last = int(rows[-1][0])

    def stored_sample(self, sample_id: int) -> tuple[str, StoredSample | None] | None:
        """One sample's identity and kept input (None: not kept); None when there is no such sample."""
        sql = "SELECT id, sample, sample_format, sample_shape, identity_id FROM samples WHERE id = ?"
        with self._lock:
            row = self._conn().execute(sql, (int(sample_id),)).fetchone()
        return None if row is None else (str(row[4]), stored_samples([row[:4]])[0][1])

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit events, newest first."""
        sql = "SELECT id, time, action, identity_id, n_samples, detail FROM audit ORDER BY id DESC"
        args: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            args = (int(limit),)
        with self._lock:
            rows = self._conn().execute(sql, args).fetchall()
        return [audit_record(r) for r in rows]

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` plus the foreign-key check: ``"ok"`` or the problems."""
        with self._lock:
            con = self._conn()
            res = [r[0] for r in con.execute("PRAGMA integrity_check")]
            fk = con.execute("PRAGMA foreign_key_check").fetchall()
        problems = [r for r in res if r != "ok"] + [f"foreign key: {r}" for r in fk]
        return "ok" if not problems else "; ".join(map(str, problems))

    # ----------------------------------------------------------------- writes

    def _insert_sample_rows(self, cur: sqlite3.Cursor, rows: list[tuple[Any, ...]]) -> list[int]:
        """Insert sample rows (identity, embedding, sample, format, shape, metadata, created);
        returns their new ids (increasing)."""
        ids = []
        for r in rows:
            cur.execute(
                "INSERT INTO samples(identity_id, embedding, sample, sample_format, sample_shape, metadata, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                r,
            )
            ids.append(int(cur.lastrowid))  # type: ignore[arg-type]
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
        """Enrol a new identity with its samples, in one transaction.

        Args:
            identity: the new identity (see :func:`~siamkit.gallery.store_schema.check_identity`).
            embeddings: float32 (N, D), one per sample.
            samples: the kept input of each sample (None: not kept).
            metadata: the identity's JSON-able metadata.
            sample_metadata: one JSON-able dict (or None) per sample.

        Returns:
            (generation before, generation after, new sample ids).

        Raises:
            IdentityExistsError: the identity is already enrolled (nothing is written).
        """
        return self.add_identities([(identity, embeddings, samples, metadata, sample_metadata)])[0]

    def add_identities(self, entries: Sequence[EnrolEntry]) -> list[tuple[int, int, list[int]]]:
        """Enrol several new identities in ONE transaction (a bulk load): all or none.

        Args:
            entries: (identity, embeddings, samples, metadata, sample_metadata) each, as
                for :meth:`add_identity`.

        Returns:
            Per identity, in order: (generation before, after, new sample ids); every
            identity is its own generation, so followers apply them one by one.

        Raises:
            IdentityExistsError: one of them is enrolled already (nothing is written).
        """
        prepared = [enrol_rows(*e) for e in entries]
        check_distinct([p[0] for p in prepared])
        with self._transaction() as cur:
            check_in_transaction(cur, self.model_hash, self.path)
            done = []
            for identity, meta_json, rows in prepared:
                n_old = cur.execute("SELECT COUNT(*) FROM samples WHERE identity_id = ?", (identity,)).fetchone()[0]
                if cur.execute("SELECT 1 FROM identities WHERE id = ?", (identity,)).fetchone() is not None:
                    raise exists_error(identity, n_old)
                now = time.time()
                cur.execute("INSERT INTO identities(id, metadata, created, updated) VALUES (?, ?, ?, ?)", (identity, meta_json, now, now))
                ids = self._insert_sample_rows(cur, rows)
                done.append((*self._bump(cur), ids))
                insert_audit(cur, "enroll", identity, len(ids), {"sample_ids": [ids[0], ids[-1]]})
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
            identity: an enrolled identity.
            embeddings: float32 (N, D), one per sample.
            samples: the kept input of each sample (None: not kept).
            sample_metadata: one JSON-able dict (or None) per sample.

        Returns:
            (generation before, generation after, new sample ids).

        Raises:
            UnknownIdentityError: not enrolled.
        """
        rows = new_sample_rows(identity, embeddings, samples, sample_metadata, "adding samples to")
        with self._transaction() as cur:
            check_in_transaction(cur, self.model_hash, self.path)
            if cur.execute("SELECT 1 FROM identities WHERE id = ?", (identity,)).fetchone() is None:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled; enrol it first")
            ids = self._insert_sample_rows(cur, rows)
            cur.execute("UPDATE identities SET updated = ? WHERE id = ?", (time.time(), identity))
            old, new = self._bump(cur)
            insert_audit(cur, "add_samples", identity, len(ids), {"sample_ids": [ids[0], ids[-1]]})
        return old, new, ids

    def set_metadata(self, identity: str, metadata: dict[str, Any]) -> tuple[int, int]:
        """Replace an identity's metadata.

        Args:
            identity: an enrolled identity.
            metadata: its new JSON-able metadata.

        Returns:
            (generation before, generation after).

        Raises:
            UnknownIdentityError: not enrolled.
        """
        meta_json = json_object(metadata, "identity metadata")
        with self._transaction() as cur:
            n = cur.execute("UPDATE identities SET metadata = ?, updated = ? WHERE id = ?", (meta_json, time.time(), identity)).rowcount
            if n == 0:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled")
            old, new = self._bump(cur)
            insert_audit(cur, "update_metadata", identity, 0)
        return old, new

    def remove_identity(self, identity: str) -> tuple[int, int, int]:
        """Delete an identity and (by cascade) its samples, in one transaction.

        Returns:
            (generation before, generation after, samples removed).

        Raises:
            UnknownIdentityError: not enrolled.
        """
        with self._transaction() as cur:
            n = cur.execute("SELECT COUNT(*) FROM samples WHERE identity_id = ?", (identity,)).fetchone()[0]
            if cur.execute("DELETE FROM identities WHERE id = ?", (identity,)).rowcount == 0:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled")
            old, new = self._bump(cur)
            insert_audit(cur, "remove", identity, int(n))
        return old, new, int(n)

    def replace_embeddings(
        self, sample_ids: np.ndarray, embeddings: np.ndarray, meta_updates: dict[str, Any], *, expected_generation: int
    ) -> tuple[int, int]:
        """Re-embedding: every sample's new embedding and the new model's meta, in ONE
        transaction (the gallery is never half old model, half new).

        Args:
            sample_ids: int64 (N,), every stored sample.
            embeddings: float32 (N, D'), their new embeddings.
            meta_updates: the new model's meta values.
            expected_generation: the generation the samples were read at.

        Returns:
            (generation before, generation after).

        Raises:
            GalleryError: the gallery changed since the samples were read
                (``expected_generation``), or the ids are not exactly the stored samples.
        """
        emb = np.ascontiguousarray(embeddings, dtype="<f4")
        with self._transaction() as cur:
            if read_generation(cur) != expected_generation:
                raise GalleryError(
                    f"gallery {self.path} changed while re-embedding (another process wrote to it); run reembed again"
                )
            stored = cur.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            if stored != len(sample_ids):
                raise GalleryError(f"re-embedding covers {len(sample_ids)} samples but the gallery holds {stored}")
            cur.executemany(
                "UPDATE samples SET embedding = ? WHERE id = ?",
                ((emb[i].tobytes(), int(sample_ids[i])) for i in range(len(sample_ids))),
            )
            write_meta(cur, meta_updates)
            old, new = self._bump(cur)
            insert_audit(cur, "reembed", None, len(sample_ids), {k: meta_updates.get(k) for k in ("model_fingerprint", "model_hash")})
        self.model_hash = meta_updates.get("model_hash", self.model_hash)
        return old, new

    def set_meta(self, updates: dict[str, Any]) -> None:
        """Update meta values in one transaction (bumps the generation)."""
        with self._transaction() as cur:
            write_meta(cur, updates)
            self._bump(cur)
            insert_audit(cur, "set_meta", None, 0, {k: v for k, v in updates.items()})

    def __repr__(self) -> str:
        return f"GalleryStore({str(self.path)!r}{', closed' if self.closed else ''})"
