"""What a PostgreSQL gallery holds: its tables, their versioned migrations, and the
checks on opening one.

:class:`~siamkit.gallery.pg_store.PgGalleryStore` does the reading and writing; the
rules for rows (identity names, metadata, kept inputs) are SQLite's, in
:mod:`siamkit.gallery.store_schema`. The tables mirror the SQLite file's::

    schema_version(version INTEGER PRIMARY KEY, applied DOUBLE PRECISION)  -- one row per migration
    meta(key TEXT PRIMARY KEY, value TEXT)                                 -- JSON values
    identities(id TEXT PRIMARY KEY, seq BIGSERIAL, metadata TEXT, created, updated)
    samples(id BIGSERIAL PRIMARY KEY, identity_id TEXT REFERENCES identities ON DELETE CASCADE,
            embedding BYTEA, sample BYTEA, sample_format TEXT, sample_shape TEXT, metadata TEXT, created)
    audit(id BIGSERIAL PRIMARY KEY, time, action, identity_id, n_samples, detail)
    changes(generation BIGINT PRIMARY KEY, action TEXT, identity_id TEXT,
            first_sample BIGINT, last_sample BIGINT)                      -- what each write did

``changes`` is what lets another process follow a write without reading every embedding
again (:mod:`siamkit.gallery.follow`): ``add`` (samples ``first_sample..last_sample`` of
an identity), ``remove``, ``meta`` (no embedding changed) or ``reset`` (re-embedding:
reload everything). Only the newest :data:`KEEP_CHANGES` rows are kept.

A migration is a list of statements applied in one transaction under an advisory lock,
so two processes opening a new database at once apply it once. A database whose version
is newer than :data:`PG_SCHEMA_VERSION` is refused.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from .. import __version__
from .._pg import apply_migrations
from ..errors import GalleryFileError
from .store_schema import REQUIRED_META

__all__ = ["PG_SCHEMA_VERSION", "MIGRATIONS", "KEEP_CHANGES", "NOTIFY_CHANNEL", "migrate", "init_meta_rows", "check_meta"]

#: the advisory lock key that serialises migrations ("siamkit" in ASCII)
_MIGRATION_LOCK = 0x7369616D6B6974
#: the LISTEN / NOTIFY channel of gallery writes (payload: "<gallery_id>:<generation>")
NOTIFY_CHANNEL = "siamkit_gallery"
#: change rows kept (older followers reload everything)
KEEP_CHANGES = 10_000

#: version -> the statements that bring the previous version to it
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE identities (id TEXT PRIMARY KEY, seq BIGSERIAL UNIQUE, metadata TEXT NOT NULL DEFAULT '{}', "
        "created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE samples (id BIGSERIAL PRIMARY KEY, "
        "identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE, embedding BYTEA NOT NULL, "
        "sample BYTEA, sample_format TEXT, sample_shape TEXT, metadata TEXT NOT NULL DEFAULT '{}', "
        "created DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX samples_identity ON samples(identity_id)",
        "CREATE TABLE audit (id BIGSERIAL PRIMARY KEY, time DOUBLE PRECISION NOT NULL, action TEXT NOT NULL, "
        "identity_id TEXT, n_samples INTEGER, detail TEXT NOT NULL DEFAULT '{}')",
        "CREATE TABLE changes (generation BIGINT PRIMARY KEY, action TEXT NOT NULL, identity_id TEXT, "
        "first_sample BIGINT, last_sample BIGINT)",
    ),
}
PG_SCHEMA_VERSION = max(MIGRATIONS)


def migrate(cur: Any, where: str) -> int:
    """Bring the database's gallery tables to :data:`PG_SCHEMA_VERSION`.

    Args:
        cur: a cursor inside a transaction (the caller commits).
        where: names the database in messages.

    Returns:
        The version found before migrating (0: a database without gallery tables).

    Raises:
        GalleryFileError: the database was written by a newer siamkit.
    """
    def newer(found: int, known: int) -> GalleryFileError:
        return GalleryFileError(
            f"{where} has gallery schema version {found}, written by a newer siamkit; "
            f"this siamkit ({__version__}) reads version {known}"
        )

    return apply_migrations(cur, MIGRATIONS, table="schema_version", lock_key=_MIGRATION_LOCK, newer=newer)


def init_meta_rows(init_meta: dict[str, Any]) -> list[tuple[str, str]]:
    """The meta rows of a new gallery.

    Args:
        init_meta: the model's meta values (model_hash, embedding_dim, distance, scoring, ...).

    Returns:
        (key, JSON value) rows, with a new gallery_id and generation 0.
    """
    meta = {"gallery_id": uuid.uuid4().hex, "generation": 0, "siamkit_version": __version__, "created": time.time(), **init_meta}
    return [(k, json.dumps(v)) for k, v in meta.items()]


def check_meta(meta: dict[str, Any], where: str) -> None:
    """Refuse a database whose gallery meta is incomplete.

    Args:
        meta: the decoded meta values.
        where: names the database in messages.

    Raises:
        GalleryFileError: required keys are missing.
    """
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise GalleryFileError(f"{where} is damaged: its meta table lacks {missing}")
