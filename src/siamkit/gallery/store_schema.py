"""What a gallery file holds: its SQLite schema, the checks on opening it, and the rules
for what may go in its rows (identity names, metadata JSON, kept inputs).

:class:`~siamkit.gallery.store.GalleryStore` does the reading and writing; this module is
the file format. Schema (version :data:`SCHEMA_VERSION`)::

    schema_version(version INTEGER)
    meta(key TEXT PRIMARY KEY, value TEXT)            -- JSON values
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
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..errors import GalleryError, GalleryFileError

__all__ = [
    "SCHEMA_VERSION",
    "MAX_IDENTITY_LENGTH",
    "REQUIRED_META",
    "StoredSample",
    "MAX_METADATA_DEPTH",
    "MAX_METADATA_BYTES",
    "check_identity",
    "check_metadata",
    "json_object",
    "sample_rows",
    "read_meta",
    "read_generation",
    "write_meta",
    "insert_audit",
    "create_schema",
    "check_schema",
    "new_sample_rows",
    "identity_record",
    "identity_detail",
    "stored_samples",
    "audit_record",
]

SCHEMA_VERSION = 1
MAX_IDENTITY_LENGTH = 256
#: how deep metadata may nest (the top-level object is depth 1)
MAX_METADATA_DEPTH = 8
#: the most bytes of a metadata object's compact JSON (UTF-8)
MAX_METADATA_BYTES = 64 * 1024
_MAX_KEY_LENGTH = 256
_IDENTITY_PUNCTUATION = frozenset("_-.@+ ")

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

#: meta keys every gallery file has
REQUIRED_META = ("gallery_id", "generation", "model_hash", "embedding_dim", "distance", "scoring")


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


def check_identity(identity: Any) -> str:
    """Validate an identity name, so that every enrolled identity can also be named in a
    URL path and a command line.

    The rule: a string of 1..256 characters, each a letter or digit (any script) or one of
    ``_ - . @ +`` and space; no leading or trailing space; not ``.`` or ``..``; not the
    reserved word ``"unknown"``. Hence no ``/``, no control characters, no lone surrogates.

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
    bad = sorted({ch for ch in identity if not (ch.isalnum() or ch in _IDENTITY_PUNCTUATION)})
    if bad:
        raise GalleryError(
            f"identity {identity!r} contains {''.join(bad)[:20]!r}: an identity may hold letters, digits, "
            "'_', '-', '.', '@', '+' and spaces"
        )
    if identity in (".", ".."):
        raise GalleryError(f"{identity!r} cannot be an identity (it is a path segment)")
    if identity == "unknown":
        raise GalleryError("'unknown' is reserved: it is what identify() answers for a non-enrolled person")
    return identity


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise GalleryError(f"{what} holds a lone surrogate (not valid UTF-8 text)") from None


def check_metadata(value: Any, what: str = "metadata") -> dict[str, Any]:
    """Validate a metadata object: the one rule for what the gallery stores (library, CLI
    and service alike).

    A dict (None: empty) nested at most :data:`MAX_METADATA_DEPTH` levels deep, with
    non-empty string keys of at most 256 characters, values that JSON holds (dicts, lists,
    strings, finite numbers, booleans, null), every string valid UTF-8 (no lone
    surrogates), at most :data:`MAX_METADATA_BYTES` bytes as compact JSON.

    Args:
        value: the metadata.
        what: names the value in messages.

    Returns:
        The metadata (an empty dict for None).

    Raises:
        GalleryError: naming what is wrong.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GalleryError(f"{what} must be a dict (a JSON object), got {type(value).__name__}")
    stack: list[tuple[Any, int]] = [(value, 1)]  # iterative: a deep value cannot exhaust the stack
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list, tuple)) and depth > MAX_METADATA_DEPTH:
            raise GalleryError(f"{what} nests deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise GalleryError(f"{what} keys must be strings, got {k!r}"[:300])
                if not k or len(k) > _MAX_KEY_LENGTH:
                    raise GalleryError(f"{what} keys must be 1..{_MAX_KEY_LENGTH} characters long")
                _check_text(k, f"a key of {what}")
                stack.append((v, depth + 1))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, str):
            _check_text(node, f"a value of {what}")
        elif isinstance(node, float):
            if not np.isfinite(node):
                raise GalleryError(f"{what} must be JSON-serialisable: numbers must be finite")
        elif node is not None and not isinstance(node, (bool, int)):
            raise GalleryError(f"{what} must be JSON-serialisable, it holds a {type(node).__name__}")
    size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise GalleryError(f"{what} is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return value


def json_object(value: Any, what: str) -> str:
    """Serialise a metadata dict after :func:`check_metadata`.

    Args:
        value: a dict with string keys (None: an empty dict).
        what: names the value in messages.

    Returns:
        Compact, key-sorted JSON.

    Raises:
        GalleryError: see :func:`check_metadata`.
    """
    value = check_metadata(value, what)
    try:
        return json.dumps(value, allow_nan=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as e:  # pragma: no cover - check_metadata refuses these
        raise GalleryError(f"{what} must be JSON-serialisable (numbers finite): {e}") from None


def sample_rows(
    identity: str,
    embeddings: np.ndarray,
    samples: Sequence[StoredSample | None],
    sample_metadata: Sequence[dict[str, Any] | None] | None,
) -> list[tuple[Any, ...]]:
    """The ``samples`` rows of new samples, validated.

    Args:
        identity: their identity.
        embeddings: float32 (N, D).
        samples: the kept input of each (None: not kept).
        sample_metadata: one dict (or None) per sample, or None.

    Returns:
        (identity, embedding, sample, format, shape, metadata, created) per sample.

    Raises:
        GalleryError: the counts differ, or bad metadata.
    """
    emb = np.ascontiguousarray(embeddings, dtype="<f4")
    n = emb.shape[0]
    if len(samples) != n:
        raise GalleryError(f"{n} embeddings but {len(samples)} samples")
    if sample_metadata is None:
        sample_metadata = [None] * n
    if len(sample_metadata) != n:
        raise GalleryError(f"{n} samples but {len(sample_metadata)} sample metadata entries")
    now = time.time()
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
                json_object(sample_metadata[i], f"metadata of sample {i}"),
                now,
            )
        )
    return rows


def read_meta(con: sqlite3.Connection | sqlite3.Cursor) -> dict[str, Any]:
    """Every meta value, JSON-decoded."""
    return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta").fetchall()}


def read_generation(con: sqlite3.Connection | sqlite3.Cursor) -> int:
    """The write generation (bumped by every write transaction)."""
    return int(json.loads(con.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]))


def write_meta(cur: sqlite3.Cursor, updates: dict[str, Any]) -> None:
    """Set meta values (JSON-encoded), inside the caller's write transaction.

    Args:
        cur: a cursor inside a write transaction.
        updates: key -> JSON-able value.
    """
    for k, v in updates.items():
        cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, json.dumps(v)))


def insert_audit(
    cur: sqlite3.Cursor, action: str, identity: str | None, n: int, detail: dict[str, Any] | None = None, *, sort_keys: bool = True
) -> None:
    """Append one audit event.

    Args:
        cur: a cursor inside the write transaction the event belongs to.
        action: what happened (create, enroll, add_samples, remove, reembed, ...).
        identity: the identity concerned, or None.
        n: samples concerned.
        detail: JSON-able details (None: none).
        sort_keys: write ``detail``'s keys sorted.
    """
    cur.execute(
        "INSERT INTO audit(time, action, identity_id, n_samples, detail) VALUES (?, ?, ?, ?, ?)",
        (time.time(), action, identity, n, json.dumps(detail or {}, sort_keys=sort_keys)),
    )


def create_schema(cur: sqlite3.Cursor, init_meta: dict[str, Any]) -> None:
    """Create the tables and, unless another process just did, the version and meta rows.

    Args:
        cur: a cursor inside a write transaction (racing creators queue on it).
        init_meta: the meta values of the new gallery (model_hash, embedding_dim, ...).
    """
    for stmt in _SCHEMA.split(";"):
        if stmt.strip():
            cur.execute(stmt)
    if cur.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
        cur.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
    if cur.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0:
        meta = {"gallery_id": uuid.uuid4().hex, "generation": 0, "siamkit_version": __version__, "created": time.time(), **init_meta}
        cur.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        detail = {k: init_meta.get(k) for k in ("model_fingerprint", "distance", "scoring")}
        insert_audit(cur, "create", None, 0, detail, sort_keys=False)


def check_schema(con: sqlite3.Connection, path: Path) -> None:
    """Refuse a file whose schema this siamkit does not read, or whose meta is incomplete.

    Args:
        con: the open connection.
        path: names the file in messages.

    Raises:
        GalleryFileError: no version, a newer (or older) version, or missing meta keys.
    """
    row = con.execute("SELECT MAX(version) FROM schema_version").fetchone()
    version = row[0] if row else None
    if version is None:
        raise GalleryFileError(f"{path} has no schema version: not a complete siamkit gallery")
    if version > SCHEMA_VERSION:
        raise GalleryFileError(
            f"{path} has gallery schema version {version}, written by a newer siamkit; "
            f"this siamkit ({__version__}) reads version {SCHEMA_VERSION}"
        )
    if version < SCHEMA_VERSION:  # pragma: no cover - no older versions exist yet
        raise GalleryFileError(f"{path} has an old gallery schema version {version}")
    missing = [k for k in REQUIRED_META if k not in read_meta(con)]
    if missing:
        raise GalleryFileError(f"{path} is damaged: its meta table lacks {missing}")


# --------------------------------------------------------------------------- rows <-> records (both backends)


def new_sample_rows(
    identity: str,
    embeddings: np.ndarray,
    samples: Sequence[StoredSample | None],
    sample_metadata: Sequence[dict[str, Any] | None] | None,
    what: str,
) -> list[tuple[Any, ...]]:
    """:func:`sample_rows`, refusing none.

    Args:
        identity: their identity.
        embeddings: float32 (N, D).
        samples: the kept input of each (None: not kept).
        sample_metadata: one dict (or None) per sample, or None.
        what: the write, for the message (``"enrolling"``, ``"adding samples to"``).

    Returns:
        The rows.

    Raises:
        GalleryError: no samples, or see :func:`sample_rows`.
    """
    rows = sample_rows(identity, embeddings, samples, sample_metadata)
    if not rows:
        raise GalleryError(f"{what} {identity!r} needs at least one sample")
    return rows


def identity_record(row: Sequence[Any]) -> dict[str, Any]:
    """(id, metadata JSON, created, updated, sample count) -> a record dict."""
    return {"identity": row[0], "metadata": json.loads(row[1]), "created": row[2], "updated": row[3], "n_samples": int(row[4])}


def identity_detail(row: Sequence[Any], samples: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """An identity's record with its samples.

    Args:
        row: (id, metadata JSON, created, updated).
        samples: (id, metadata JSON, created, has input, format) per sample.

    Returns:
        The record dict (``samples``: one dict each).
    """
    return {
        **identity_record((*row[:4], len(samples))),
        "samples": [
            {"id": int(s[0]), "metadata": json.loads(s[1]), "created": s[2], "has_input": bool(s[3]), "format": s[4]}
            for s in samples
        ],
    }


def stored_samples(rows: Sequence[Sequence[Any]]) -> list[tuple[int, StoredSample | None]]:
    """(id, data, format, shape JSON) rows -> (id, kept input or None)."""
    return [
        (int(sid), None if data is None else StoredSample(fmt, bytes(data), tuple(json.loads(shape)) if shape else None))
        for sid, data, fmt, shape in rows
    ]


def audit_record(row: Sequence[Any]) -> dict[str, Any]:
    """(id, time, action, identity, n_samples, detail JSON) -> an audit event dict."""
    return {"id": row[0], "time": row[1], "action": row[2], "identity": row[3], "n_samples": row[4], "detail": json.loads(row[5])}
