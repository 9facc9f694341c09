"""Rows of a PostgreSQL gallery to and from siamkit's values: the snapshot and the
changes a follower applies, the meta of a new gallery, URLs without passwords, and
driver messages cut to one line. :mod:`siamkit.gallery.pg_store` reads and writes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .._pg import first_line, redact_url
from ..errors import GalleryFileError
from .pg_schema import KEEP_CHANGES, NOTIFY_CHANNEL, check_meta, init_meta_rows, migrate
from .snapshot import Snapshot

__all__ = ["Change", "finish_write", "gallery_id_of", "redact_url", "first_line", "write_meta", "init_database", "read_snapshot", "read_changes", "rows_to_snapshot", "rows_to_changes"]


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


def write_meta(cur: Any, updates: dict[str, Any]) -> None:
    """Set meta values (JSON-encoded) inside the caller's transaction.

    Args:
        cur: a cursor inside a write transaction.
        updates: key -> JSON-able value.
    """
    for k, v in updates.items():
        cur.execute(
            "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (k, json.dumps(v)),
        )


def init_database(con: Any, where: str, init_meta: dict[str, Any] | None) -> None:
    """Migrate the tables and, for a new gallery, write its meta (one transaction).

    Args:
        con: an autocommit connection.
        where: names the database in messages.
        init_meta: a new gallery's meta (None: the gallery must exist).

    Raises:
        GalleryFileError: no gallery (without ``init_meta``), newer schema, damaged meta.
    """
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


def rows_to_snapshot(gen: int, names: list[str], rows: list[Any], dim: int, where: str) -> Snapshot:
    """Sample rows -> the :class:`~siamkit.gallery.snapshot.Snapshot`.

    Args:
        gen: the generation they were read at.
        names: every identity, in enrolment (seq) order.
        rows: (sample id, identity seq, embedding bytes), by sample id.
        dim: the embedding size.
        where: names the database in messages.

    Returns:
        The snapshot (codes index ``names``).
    """
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


def rows_to_changes(rows: list[Any], found: dict[int, bytes], dim: int) -> list[Change] | None:
    """Change rows and the added samples' embeddings -> :class:`Change` values.

    Args:
        rows: (generation, action, identity, first sample, last sample), in order.
        found: sample id -> embedding bytes of the added samples still stored.
        dim: the embedding size.

    Returns:
        The changes, or None when some added samples are gone (the follower reloads).
    """
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


def read_snapshot(cur: Any, dim: int, where: str) -> Snapshot:
    """Every sample's embedding at the transaction's generation.

    Args:
        cur: a cursor inside a REPEATABLE READ transaction.
        dim: the embedding size.
        where: names the database in messages.

    Returns:
        The snapshot.
    """
    cur.execute("SELECT value FROM meta WHERE key = 'generation'")
    gen = int(json.loads(cur.fetchone()[0]))
    cur.execute("SELECT id FROM identities ORDER BY seq")
    names = [r[0] for r in cur.fetchall()]
    cur.execute("SELECT s.id, i.seq, s.embedding FROM samples s JOIN identities i ON i.id = s.identity_id ORDER BY s.id")
    return rows_to_snapshot(gen, names, cur.fetchall(), dim, where)


#: a follower further behind than this reloads the snapshot instead
MAX_FOLLOW = 1000


def read_changes(cur: Any, generation: int, dim: int) -> tuple[int, list[Change]] | None:
    """The writes after ``generation`` and the samples they added.

    Args:
        cur: a cursor inside a REPEATABLE READ transaction.
        generation: the generation the follower is at.
        dim: the embedding size.

    Returns:
        (the current generation, the changes in order), or None when they cannot be
        followed (a re-embedding, pruned rows, more than :data:`MAX_FOLLOW`, samples since removed).
    """
    cur.execute("SELECT value FROM meta WHERE key = 'generation'")
    now = int(json.loads(cur.fetchone()[0]))
    if now - generation > MAX_FOLLOW:
        return None
    cur.execute(
        "SELECT generation, action, identity_id, first_sample, last_sample FROM changes WHERE generation > %s ORDER BY generation",
        (generation,),
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
    changes = rows_to_changes(rows, found, dim)
    return None if changes is None else (now, changes)


def gallery_id_of(cur: Any) -> str:
    """The gallery's id (meta ``gallery_id``)."""
    cur.execute("SELECT value FROM meta WHERE key = 'gallery_id'")
    return str(json.loads(cur.fetchone()[0]))


def finish_write(
    cur: Any, old: int, action: str, identity: str | None, n: int, detail: dict[str, Any] | None, ids: Sequence[int]
) -> str:
    """The end of every write transaction: bump the generation, record the change (for
    followers), append the audit event, send the NOTIFY (delivered at commit).

    Args:
        cur: the write transaction's cursor (holding the generation row's lock).
        old: the generation the transaction read.
        action: the audit action (enroll, add_samples, remove, update_metadata, reembed, set_meta).
        identity: the identity concerned, or None.
        n: samples concerned.
        detail: JSON-able details for the audit log.
        ids: the samples added (enroll / add_samples).

    Returns:
        The gallery's id.
    """
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
    gid = gallery_id_of(cur)
    cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, f"{gid}:{new}"))
    return gid


def insert_samples(cur: Any, rows: Sequence[tuple[Any, ...]]) -> list[int]:
    """Insert sample rows, pipelined.

    Args:
        cur: a write transaction's cursor.
        rows: (identity, embedding, sample, format, shape, metadata, created) each.

    Returns:
        Their new ids (increasing, in order).
    """
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


def insert_identities(
    cur: Any, old: int, prepared: Sequence[tuple[str, str, list[tuple[Any, ...]]]], insert: Any = None
) -> tuple[str, list[tuple[int, int, list[int]]]]:
    """Enrol new identities inside the caller's write transaction (holding the generation
    row's lock at ``old``): a few pipelined statements for the whole batch, one generation,
    change row and audit event per identity, one NOTIFY (of the last generation).

    Args:
        cur: the write transaction's cursor.
        old: the generation it read.
        prepared: (identity, metadata JSON, sample rows) each (:func:`~siamkit.gallery.bulk_rows.enrol_rows`).
        insert: inserts sample rows, returning their ids (default :func:`insert_samples`).

    Returns:
        (the gallery's id, per identity (generation before, after, new sample ids)).

    Raises:
        IdentityExistsError: one of them is enrolled already (the caller's transaction rolls back).
    """
    from .bulk_rows import exists_error

    names = [p[0] for p in prepared]
    cur.execute("SELECT i.id, COUNT(s.id) FROM identities i LEFT JOIN samples s ON s.identity_id = i.id WHERE i.id = ANY(%s) GROUP BY i.id", (names,))
    found = dict(cur.fetchall())
    if found:
        first = next(n for n in names if n in found)
        raise exists_error(first, int(found[first]))
    now = time.time()
    cur.executemany("INSERT INTO identities(id, metadata, created, updated) VALUES (%s, %s, %s, %s)", [(n, m, now, now) for n, m, _ in prepared])
    ids = (insert or insert_samples)(cur, [r for _, _, rows in prepared for r in rows])
    done, at = [], 0
    for i, (_, _, rows) in enumerate(prepared):
        done.append((old + i, old + i + 1, ids[at : at + len(rows)]))
        at += len(rows)
    new = old + len(prepared)
    cur.execute("UPDATE meta SET value = %s WHERE key = 'generation'", (json.dumps(new),))
    cur.executemany(
        "INSERT INTO changes(generation, action, identity_id, first_sample, last_sample) VALUES (%s, 'add', %s, %s, %s)",
        [(g_new, n, s[0], s[-1]) for n, (_, g_new, s) in zip(names, done)],
    )
    if new // 100 != old // 100:
        cur.execute("DELETE FROM changes WHERE generation <= %s", (new - KEEP_CHANGES,))
    cur.executemany(
        "INSERT INTO audit(time, action, identity_id, n_samples, detail) VALUES (%s, 'enroll', %s, %s, %s)",
        [(now, n, len(s), json.dumps({"sample_ids": [s[0], s[-1]]}, sort_keys=True)) for n, (_, _, s) in zip(names, done)],
    )
    gid = gallery_id_of(cur)
    cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, f"{gid}:{new}"))
    return gid, done
