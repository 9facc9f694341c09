"""SQLite persistence of a gallery: identities, their samples' embeddings, metadata.

One gallery is one SQLite file (the embedded default database: nothing to install or
run). The file is the single source of truth; FAISS index files next to it are caches
rebuilt from it whenever they are missing, stale or unreadable.

Schema (version :data:`SCHEMA_VERSION`)::

    schema_version(version INTEGER)
    meta(key TEXT PRIMARY KEY, value TEXT)            -- JSON values, see below
    identities(id TEXT PRIMARY KEY, metadata TEXT, created REAL, updated REAL)
    samples(id INTEGER PRIMARY KEY AUTOINCREMENT,
            identity_id TEXT REFERENCES identities(id) ON DELETE CASCADE,
            embedding BLOB,        -- float32 little-endian, embedding_dim values
            sample BLOB,           -- the original input, so `reembed` can recompute
            sample_format TEXT,    -- 'uint8' | 'float32' (raw array) | 'file:.ext' (image file bytes)
            sample_shape TEXT,     -- JSON list for raw arrays
            metadata TEXT, created REAL)
    audit(id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, action TEXT,
          identity_id TEXT, n_samples INTEGER, detail TEXT)

``meta`` holds: ``gallery_id`` (random, ties index caches to this file), ``generation``
(bumped by every write transaction: index caches record the generation they match),
``model_fingerprint`` (the weights file's sha256, or null for an unsaved network),
``model_hash`` (sha256 of the network's recipe and weights, what the gallery checks),
``siamkit_version``, ``embedding_dim``, ``distance`` (the network's distance name or
``"pair_head"``), ``normalize``, ``scoring`` (the default rule), ``created``.

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
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .. import __version__
from .._sqlite import immediate_transaction
from ..errors import SiamkitError
from ..errors import GalleryError, GalleryFileError, GalleryLockedError, IdentityExistsError, ModelMismatchError, UnknownIdentityError

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
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: seconds a writer waits for another process's transaction before giving up
DEFAULT_TIMEOUT = 60.0
MAX_IDENTITY_LENGTH = 256


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id TEXT PRIMARY KEY,
    metadata TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    sample BLOB,
    sample_format TEXT,
    sample_shape TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_identity ON samples(identity_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    action TEXT NOT NULL,
    identity_id TEXT,
    n_samples INTEGER,
    detail TEXT NOT NULL DEFAULT '{}'
);
"""

_REQUIRED_META = ("gallery_id", "generation", "model_hash", "embedding_dim", "distance", "scoring")


@dataclass
class StoredSample:
    """The original input of one sample, kept so that ``reembed`` can recompute it.

    Attributes:
        format: ``"uint8"`` or ``"float32"`` (a raw array of ``shape``), or
            ``"file:.png"`` (the bytes of an image file with that suffix).
        data: the bytes.
        shape: the array's shape (raw arrays only).
    """

    format: str
    data: bytes
    shape: tuple[int, ...] | None = None

    def array(self) -> np.ndarray:
        """The raw array (raw formats only)."""
        if self.format not in ("uint8", "float32") or self.shape is None:
            raise GalleryError(f"a sample stored as {self.format!r} is not a raw array")
        return np.frombuffer(self.data, dtype="<f4" if self.format == "float32" else np.uint8).reshape(self.shape)


@dataclass
class Snapshot:
    """A consistent view of every sample's embedding at one generation.

    Attributes:
        generation: the write generation this view is of.
        sample_ids: int64 (N,), increasing (new samples always get larger ids).
        codes: int64 (N,), index into ``identities`` of each sample.
        identities: identity names; ``identities[codes[i]]`` owns sample i. Ordered by
            enrolment (SQLite rowid), so a newly enrolled identity is appended.
        embeddings: float32 (N, D).
    """

    generation: int
    sample_ids: np.ndarray
    codes: np.ndarray
    identities: list[str]
    embeddings: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def _now() -> float:
    return time.time()


def _json_object(value: Any, what: str) -> str:
    """Serialise a metadata dict, refusing what JSON cannot hold."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise GalleryError(f"{what} must be a dict (a JSON object), got {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise GalleryError(f"{what} keys must be strings, got {bad[0]!r}")
    try:
        return json.dumps(value, allow_nan=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise GalleryError(f"{what} must be JSON-serialisable (numbers finite): {e}") from None


def check_identity(identity: Any) -> str:
    """Validate an identity name: a non-empty string without control characters or
    surrounding spaces, at most 256 characters, not the reserved word ``"unknown"``.

    Raises:
        GalleryError: naming what is wrong.
    """
    if not isinstance(identity, str):
        raise GalleryError(f"an identity must be a string, got {type(identity).__name__} {identity!r}")
    if not identity or not identity.strip():
        raise GalleryError("an identity must be a non-empty string")
    if identity != identity.strip():
        raise GalleryError(f"identity {identity!r} has leading or trailing spaces")
    if len(identity) > MAX_IDENTITY_LENGTH:
        raise GalleryError(f"identity is {len(identity)} characters long; the limit is {MAX_IDENTITY_LENGTH}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in identity):
        raise GalleryError(f"identity {identity!r} contains control characters")
    if identity == "unknown":
        raise GalleryError("'unknown' is reserved: it is what identify() answers for a non-enrolled person")
    return identity


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

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
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
            con = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise GalleryFileError(f"cannot open gallery {path}: {e}") from None
        store = cls(path, con)
        try:
            store._setup(timeout)
            store._init_schema(init_meta if create else None)
        except sqlite3.DatabaseError as e:
            con.close()
            raise GalleryFileError(f"{path} is not a readable siamkit gallery ({e})") from None
        except BaseException:
            con.close()
            raise
        return store

    def _setup(self, timeout: float) -> None:
        con = self._conn()
        con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("gallery %s: WAL journal mode unavailable (got %s)", self.path, mode)
        con.execute("PRAGMA synchronous = FULL")
        con.execute("PRAGMA foreign_keys = ON")

    def _init_schema(self, init_meta: dict[str, Any] | None) -> None:
        con = self._conn()
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not {"meta", "schema_version"} <= tables:
            raise GalleryFileError(f"{self.path} is a SQLite file but not a siamkit gallery (tables: {sorted(tables)})")
        if {"meta", "schema_version"} <= tables:
            self._check_schema()
            return
        if init_meta is None:
            raise GalleryFileError(f"{self.path} is an empty SQLite file, not a siamkit gallery")
        # create, racing safely with another process creating the same file
        with self._transaction() as cur:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    cur.execute(stmt)
            if cur.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                cur.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
            if cur.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0:
                meta = {
                    "gallery_id": uuid.uuid4().hex,
                    "generation": 0,
                    "siamkit_version": __version__,
                    "created": _now(),
                    **init_meta,
                }
                cur.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
                cur.execute(
                    "INSERT INTO audit(time, action, identity_id, n_samples, detail) VALUES (?, 'create', NULL, 0, ?)",
                    (_now(), json.dumps({k: init_meta.get(k) for k in ("model_fingerprint", "distance", "scoring")})),
                )
        self._check_schema()

    def _check_schema(self) -> None:
        con = self._conn()
        row = con.execute("SELECT MAX(version) FROM schema_version").fetchone()
        version = row[0] if row else None
        if version is None:
            raise GalleryFileError(f"{self.path} has no schema version: not a complete siamkit gallery")
        if version > SCHEMA_VERSION:
            raise GalleryFileError(
                f"{self.path} has gallery schema version {version}, written by a newer siamkit; "
                f"this siamkit ({__version__}) reads version {SCHEMA_VERSION}"
            )
        if version < SCHEMA_VERSION:  # pragma: no cover - no older versions exist yet
            raise GalleryFileError(f"{self.path} has an old gallery schema version {version}")
        meta = self.meta()
        missing = [k for k in _REQUIRED_META if k not in meta]
        if missing:
            raise GalleryFileError(f"{self.path} is damaged: its meta table lacks {missing}")

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
        old = int(json.loads(cur.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]))
        cur.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (json.dumps(old + 1),))
        return old, old + 1

    @staticmethod
    def _audit(cur: sqlite3.Cursor, action: str, identity: str | None, n: int, detail: dict[str, Any] | None = None) -> None:
        cur.execute(
            "INSERT INTO audit(time, action, identity_id, n_samples, detail) VALUES (?, ?, ?, ?, ?)",
            (_now(), action, identity, n, json.dumps(detail or {}, sort_keys=True)),
        )

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
            rows = self._conn().execute("SELECT key, value FROM meta").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def generation(self) -> int:
        """The write generation (bumped by every write transaction)."""
        with self._lock:
            row = self._conn().execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(json.loads(row[0]))

    def snapshot(self, embedding_dim: int) -> Snapshot:
        """Every sample's embedding, read in one transaction (a consistent view)."""
        with self._read() as cur:
            gen = int(json.loads(cur.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]))
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
            row = cur.execute("SELECT id, metadata, created, updated FROM identities WHERE id = ?", (identity,)).fetchone()
            if row is None:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled")
            samples = cur.execute(
                "SELECT id, metadata, created, sample IS NOT NULL, sample_format FROM samples "
                "WHERE identity_id = ? ORDER BY id",
                (identity,),
            ).fetchall()
        return {
            "identity": row[0],
            "metadata": json.loads(row[1]),
            "created": row[2],
            "updated": row[3],
            "n_samples": len(samples),
            "samples": [
                {"id": int(s[0]), "metadata": json.loads(s[1]), "created": s[2], "has_input": bool(s[3]), "format": s[4]}
                for s in samples
            ],
        }

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
            out: list[tuple[int, StoredSample | None]] = []
            for sid, data, fmt, shape in rows:
                out.append(
                    (int(sid), None if data is None else StoredSample(fmt, bytes(data), tuple(json.loads(shape)) if shape else None))
                )
            last = int(rows[-1][0])
            yield out

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit events, newest first."""
        sql = "SELECT id, time, action, identity_id, n_samples, detail FROM audit ORDER BY id DESC"
        args: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            args = (int(limit),)
        with self._lock:
            rows = self._conn().execute(sql, args).fetchall()
        return [
            {"id": r[0], "time": r[1], "action": r[2], "identity": r[3], "n_samples": r[4], "detail": json.loads(r[5])}
            for r in rows
        ]

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

    @staticmethod
    def _rows(
        identity: str,
        embeddings: np.ndarray,
        samples: Sequence[StoredSample | None],
        sample_metadata: Sequence[dict[str, Any] | None] | None,
    ) -> list[tuple[Any, ...]]:
        emb = np.ascontiguousarray(embeddings, dtype="<f4")
        n = emb.shape[0]
        if len(samples) != n:
            raise GalleryError(f"{n} embeddings but {len(samples)} samples")
        if sample_metadata is None:
            sample_metadata = [None] * n
        if len(sample_metadata) != n:
            raise GalleryError(f"{n} samples but {len(sample_metadata)} sample metadata entries")
        now = _now()
        rows = []
        for i in range(n):
            s = samples[i]
            rows.append(
                (
                    identity,
                    emb[i].tobytes(),
                    None if s is None else s.data,
                    None if s is None else s.format,
                    None if s is None or s.shape is None else json.dumps(list(s.shape)),
                    _json_object(sample_metadata[i], f"metadata of sample {i}"),
                    now,
                )
            )
        return rows

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

        Returns:
            (generation before, generation after, new sample ids).

        Raises:
            IdentityExistsError: the identity is already enrolled (nothing is written).
        """
        check_identity(identity)
        meta_json = _json_object(metadata, "identity metadata")
        rows = self._rows(identity, embeddings, samples, sample_metadata)
        if not rows:
            raise GalleryError(f"enrolling {identity!r} needs at least one sample")
        with self._transaction() as cur:
            n_old = cur.execute("SELECT COUNT(*) FROM samples WHERE identity_id = ?", (identity,)).fetchone()[0]
            if cur.execute("SELECT 1 FROM identities WHERE id = ?", (identity,)).fetchone() is not None:
                raise IdentityExistsError(
                    f"identity {identity!r} is already enrolled ({n_old} samples); add samples to it with "
                    "add_samples (`siamkit gallery add`), or remove it first"
                )
            now = _now()
            cur.execute("INSERT INTO identities(id, metadata, created, updated) VALUES (?, ?, ?, ?)", (identity, meta_json, now, now))
            ids = self._insert_sample_rows(cur, rows)
            old, new = self._bump(cur)
            self._audit(cur, "enroll", identity, len(ids), {"sample_ids": [ids[0], ids[-1]]})
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
        rows = self._rows(identity, embeddings, samples, sample_metadata)
        if not rows:
            raise GalleryError(f"adding samples to {identity!r} needs at least one sample")
        with self._transaction() as cur:
            if cur.execute("SELECT 1 FROM identities WHERE id = ?", (identity,)).fetchone() is None:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled; enrol it first")
            ids = self._insert_sample_rows(cur, rows)
            cur.execute("UPDATE identities SET updated = ? WHERE id = ?", (_now(), identity))
            old, new = self._bump(cur)
            self._audit(cur, "add_samples", identity, len(ids), {"sample_ids": [ids[0], ids[-1]]})
        return old, new, ids

    def set_metadata(self, identity: str, metadata: dict[str, Any]) -> tuple[int, int]:
        """Replace an identity's metadata."""
        meta_json = _json_object(metadata, "identity metadata")
        with self._transaction() as cur:
            n = cur.execute("UPDATE identities SET metadata = ?, updated = ? WHERE id = ?", (meta_json, _now(), identity)).rowcount
            if n == 0:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled")
            old, new = self._bump(cur)
            self._audit(cur, "update_metadata", identity, 0)
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
            self._audit(cur, "remove", identity, int(n))
        return old, new, int(n)

    def replace_embeddings(
        self, sample_ids: np.ndarray, embeddings: np.ndarray, meta_updates: dict[str, Any], *, expected_generation: int
    ) -> tuple[int, int]:
        """Re-embedding: every sample's new embedding and the new model's meta, in ONE
        transaction (the gallery is never half old model, half new).

        Raises:
            GalleryError: the gallery changed since the samples were read
                (``expected_generation``), or the ids are not exactly the stored samples.
        """
        emb = np.ascontiguousarray(embeddings, dtype="<f4")
        with self._transaction() as cur:
            gen = int(json.loads(cur.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]))
            if gen != expected_generation:
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
            for k, v in meta_updates.items():
                cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, json.dumps(v)))
            old, new = self._bump(cur)
            self._audit(cur, "reembed", None, len(sample_ids), {k: meta_updates.get(k) for k in ("model_fingerprint", "model_hash")})
        return old, new

    def set_meta(self, updates: dict[str, Any]) -> None:
        """Update meta values in one transaction (bumps the generation)."""
        with self._transaction() as cur:
            for k, v in updates.items():
                cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, json.dumps(v)))
            self._bump(cur)
            self._audit(cur, "set_meta", None, 0, {k: v for k, v in updates.items()})

    def __repr__(self) -> str:
        return f"GalleryStore({str(self.path)!r}{', closed' if self.closed else ''})"
