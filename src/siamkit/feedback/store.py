"""The feedback store: reported mistakes and an audit log, in one SQLite file.

Where it lives: its own SQLite file, by default next to the gallery
(``GALLERY.feedback.sqlite``; ``--feedback FILE`` chooses another). It may also be the
gallery file itself: its tables (``feedback``, ``service_audit``,
``feedback_meta``) do not clash with the gallery's. A separate file is the default
because (1) the gallery's schema and version checks belong to
:mod:`siamkit.gallery.store`, (2) ``siamkit finetune --feedback DB`` can take the
feedback to a training machine without copying the enrolled identities, and (3)
re-embedding the gallery for a new model never rewrites the feedback.

Schema (version 1)::

    feedback_meta(key TEXT PRIMARY KEY, value TEXT)          -- schema_version
    feedback(id INTEGER PRIMARY KEY AUTOINCREMENT,
             created REAL,          -- when (server time, Unix seconds)
             actor TEXT,            -- who: the API key's name (or the CLI user)
             reporter TEXT,         -- who, as the reporter wrote it (optional)
             kind TEXT,             -- 'verify' | 'identify' | 'identity_verify'
             identity TEXT,         -- identity_verify: the claimed identity
             image_a BLOB, image_a_format TEXT,   -- the probe / first image (validated bytes)
             image_b BLOB, image_b_format TEXT,   -- verify: the second image
             predicted TEXT,        -- JSON: what the system said
             truth TEXT,            -- JSON: what is true ({"same": b} or {"identity": s})
             note TEXT, model_fingerprint TEXT,
             status TEXT)           -- 'new' | 'used' (by a fine-tune) | 'rejected'
                                    -- | 'held' (contradicted by another report: review it)
    service_audit(id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, actor TEXT,
                  action TEXT, target TEXT, detail TEXT)   -- every enrol, add, delete, feedback

Every write is one ``BEGIN IMMEDIATE`` transaction in WAL mode with
``synchronous=FULL``: a feedback row and its audit row are written together or not at all.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from .._sqlite import connect, immediate_transaction
from ..errors import FeedbackError, FeedbackLockedError

__all__ = ["FeedbackStore", "FeedbackRecord", "FeedbackError", "KINDS", "STATUSES", "SCHEMA_VERSION", "default_feedback_path"]

SCHEMA_VERSION = 1
KINDS = ("verify", "identify", "identity_verify")
STATUSES = ("new", "used", "rejected", "held")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    actor TEXT NOT NULL,
    reporter TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('verify', 'identify', 'identity_verify')),
    identity TEXT,
    image_a BLOB NOT NULL,
    image_a_format TEXT NOT NULL,
    image_b BLOB,
    image_b_format TEXT,
    predicted TEXT NOT NULL DEFAULT '{}',
    truth TEXT NOT NULL,
    note TEXT,
    model_fingerprint TEXT,
    status TEXT NOT NULL DEFAULT 'new'
);
CREATE INDEX IF NOT EXISTS feedback_status ON feedback(status);
CREATE TABLE IF NOT EXISTS service_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
"""


def default_feedback_path(gallery: str | Path) -> Path:
    """``GALLERY.feedback.sqlite`` next to the gallery file."""
    g = Path(gallery)
    return g.with_name(g.name + ".feedback.sqlite")


@dataclass
class FeedbackRecord:
    """One reported mistake (images as bytes of a validated image file)."""

    id: int
    created: float
    actor: str
    reporter: str | None
    kind: str
    identity: str | None
    image_a: bytes
    image_a_format: str
    image_b: bytes | None
    image_b_format: str | None
    predicted: dict[str, Any]
    truth: dict[str, Any]
    note: str | None
    model_fingerprint: str | None
    status: str

    @property
    def confirmation(self) -> bool:
        """True when the report confirms what the system said (a correct accept or reject,
        or a correct identification) rather than a mistake: ``predicted`` agrees with
        ``truth``. Confirmed matches are the template updates of
        :func:`siamkit.gallery.adapt.adapt_gallery`; a report with no prediction is a mistake
        report, never a confirmation."""
        return _confirms(self.kind, self.predicted, self.truth)

    def summary(self) -> dict[str, Any]:
        """Everything but the image bytes (JSON-able)."""
        d = asdict(self)
        d.pop("image_a")
        d.pop("image_b")
        d["has_image_b"] = self.image_b is not None
        return d


def _confirms(kind: str, predicted: dict[str, Any], truth: dict[str, Any]) -> bool:
    """Does a report's ``predicted`` agree with its ``truth`` (see ``FeedbackRecord.confirmation``)?"""
    if kind == "identify":
        return "identity" in predicted and predicted.get("identity") == truth.get("identity")
    return "same" in predicted and bool(predicted.get("same")) == bool(truth.get("same"))


def _check_truth(kind: str, truth: dict[str, Any], identity: str | None, has_b: bool) -> None:
    if kind not in KINDS:
        raise FeedbackError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if kind == "verify":
        if not has_b:
            raise FeedbackError("verify feedback needs two images (image_a and image_b)")
        if not isinstance(truth.get("same"), bool):
            raise FeedbackError("verify feedback needs the truth {'same': true|false}")
    elif kind == "identity_verify":
        if has_b:
            raise FeedbackError("identity_verify feedback takes one image (the probe)")
        if not identity:
            raise FeedbackError("identity_verify feedback needs the claimed identity")
        if not isinstance(truth.get("same"), bool):
            raise FeedbackError("identity_verify feedback needs the truth {'same': true|false}")
    else:
        if has_b:
            raise FeedbackError("identify feedback takes one image (the probe)")
        if not isinstance(truth.get("identity"), str) or not truth["identity"]:
            raise FeedbackError("identify feedback needs the truth {'identity': NAME} ('unknown' for nobody enrolled)")


class FeedbackStore:
    """Reported mistakes and the service's audit log (one SQLite file; thread-safe).

    Use :meth:`open`.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = connection
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True, timeout: float = 30.0) -> "FeedbackStore":
        """Open (and with ``create``, create) a feedback store.

        Args:
            path: the SQLite file (it may be the gallery file itself).
            create: create the file and its tables when missing.
            timeout: seconds to wait for another process's write lock.

        Returns:
            The open store (a context manager that closes it).

        Raises:
            FeedbackError: missing (without ``create``), not SQLite, or a newer schema.
        """
        path = Path(path)
        if path.is_dir():
            raise FeedbackError(f"feedback store {path} is a folder, not a file")
        if not path.exists() and not create:
            raise FeedbackError(f"feedback store {path} does not exist")
        if not path.parent.is_dir():
            raise FeedbackError(f"folder {path.parent} of feedback store {path.name} does not exist")
        try:
            con = connect(path, timeout=timeout)
        except sqlite3.Error as e:
            if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN:
                raise FeedbackError(f"cannot open feedback store {path}: {e}") from None
            raise FeedbackError(f"{path} is not a usable SQLite file ({e})") from None
        store = cls(path, con)
        try:
            store._init_schema()
        except BaseException as e:
            con.close()
            if isinstance(e, sqlite3.DatabaseError):
                raise FeedbackError(f"{path} is not a usable SQLite file ({e})") from None
            raise
        return store

    def _init_schema(self) -> None:
        """Create the tables (if missing) and check the schema version, in one transaction."""
        with self._transaction() as cur:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    cur.execute(stmt)
            row = cur.execute("SELECT value FROM feedback_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                cur.execute("INSERT INTO feedback_meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise FeedbackError(f"{self.path} has feedback schema version {row[0]}, newer than this siamkit reads")

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self) -> "FeedbackStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            if self._con is None:
                raise FeedbackError(f"feedback store {self.path} is closed")
            with immediate_transaction(
                self._con, lambda e: FeedbackLockedError(f"feedback store {self.path} is locked ({e}); try again")
            ) as cur:
                yield cur

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._con is None:
                raise FeedbackError(f"feedback store {self.path} is closed")
            return self._con.execute(sql, args).fetchall()

    @staticmethod
    def _audit_row(cur: sqlite3.Cursor, actor: str, action: str, target: str | None, detail: dict[str, Any] | None) -> None:
        cur.execute(
            "INSERT INTO service_audit(time, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, action, target, json.dumps(detail or {}, sort_keys=True, default=str)),
        )

    # ----------------------------------------------------------------- writes

    def audit(self, actor: str, action: str, target: str | None = None, detail: dict[str, Any] | None = None) -> None:
        """Append one audit entry (enrol, add_samples, delete, ...).

        Args:
            actor: who did it.
            action: what was done.
            target: what it was done to (an identity, a feedback id, a folder).
            detail: JSON-able details.

        Returns:
            None.
        """
        with self._transaction() as cur:
            self._audit_row(cur, actor, action, target, detail)

    def add(
        self,
        *,
        actor: str,
        kind: str,
        image_a: tuple[bytes, str],
        image_b: tuple[bytes, str] | None = None,
        identity: str | None = None,
        predicted: dict[str, Any] | None = None,
        truth: dict[str, Any],
        reporter: str | None = None,
        note: str | None = None,
        model_fingerprint: str | None = None,
    ) -> int:
        """Record a reported mistake and its audit entry (one transaction). Returns its id.

        Args:
            actor: who reports it (the API key's name or the CLI user).
            kind: ``verify``, ``identify`` or ``identity_verify``.
            image_a / image_b: (validated image file bytes, format such as ``"png"``).
            identity: the claimed identity (identity_verify).
            predicted: what the system said.
            truth: ``{"same": bool}`` (verify, identity_verify) or ``{"identity": name}``
                (identify; ``"unknown"`` = the person is not enrolled).
            reporter: who reports it, as they wrote it.
            note: free text.
            model_fingerprint: the model that made the mistake.

        Returns:
            The new row's id.

        Raises:
            FeedbackError: the kind, images and truth do not fit together.
        """
        predicted = dict(predicted or {})
        truth = dict(truth)
        _check_truth(kind, truth, identity, image_b is not None)
        try:
            pj, tj = json.dumps(predicted, sort_keys=True, allow_nan=False), json.dumps(truth, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise FeedbackError(f"predicted / truth must be JSON objects with finite numbers ({e})") from None
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO feedback(created, actor, reporter, kind, identity, image_a, image_a_format, image_b, "
                "image_b_format, predicted, truth, note, model_fingerprint, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new')",
                (
                    time.time(), actor, reporter, kind, identity, sqlite3.Binary(image_a[0]), image_a[1],
                    None if image_b is None else sqlite3.Binary(image_b[0]), None if image_b is None else image_b[1],
                    pj, tj, note, model_fingerprint,
                ),
            )
            fid = int(cur.lastrowid or 0)
            self._audit_row(cur, actor, "feedback", str(fid), {"kind": kind, "identity": identity, "truth": truth})
        return fid

    def set_status(self, ids: list[int], status: str, *, actor: str) -> int:
        """Mark feedback rows ``used`` / ``rejected`` / ``new`` / ``held`` (audited).

        Args:
            ids: the feedback ids.
            status: ``new``, ``used``, ``rejected`` or ``held`` (contradicted, for review).
            actor: who changes them (audited).

        Returns:
            The number of rows changed.

        Raises:
            FeedbackError: an unknown status.
        """
        if status not in STATUSES:
            raise FeedbackError(f"status must be one of {list(STATUSES)}, got {status!r}")
        with self._transaction() as cur:
            n = 0
            for i in ids:
                n += cur.execute("UPDATE feedback SET status = ? WHERE id = ?", (status, int(i))).rowcount
            self._audit_row(cur, actor, f"feedback_{status}", None, {"ids": [int(i) for i in ids]})
        return n

    # ----------------------------------------------------------------- reads

    _COLS = (
        "id, created, actor, reporter, kind, identity, image_a, image_a_format, image_b, image_b_format, "
        "predicted, truth, note, model_fingerprint, status"
    )

    def _record(self, row: tuple[Any, ...]) -> FeedbackRecord:
        r = list(row)
        r[6] = bytes(r[6])
        r[8] = None if r[8] is None else bytes(r[8])
        r[10] = json.loads(r[10])
        r[11] = json.loads(r[11])
        return FeedbackRecord(*r)

    def get(self, feedback_id: int) -> FeedbackRecord:
        rows = self._query(f"SELECT {self._COLS} FROM feedback WHERE id = ?", (int(feedback_id),))
        if not rows:
            raise FeedbackError(f"no feedback with id {feedback_id}")
        return self._record(rows[0])

    def list(self, *, status: str | None = None, limit: int | None = None, offset: int = 0) -> list[FeedbackRecord]:
        """Feedback rows, oldest first (optionally only one status).

        Args:
            status: only rows of this status (None = all).
            limit: at most this many rows (None = all).
            offset: skip this many rows first.

        Returns:
            The records.
        """
        sql = f"SELECT {self._COLS} FROM feedback"
        args: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        sql += " ORDER BY id LIMIT ? OFFSET ?"
        args += (-1 if limit is None else int(limit), int(offset))
        return [self._record(r) for r in self._query(sql, args)]

    def count(self, status: str | None = None) -> int:
        if status is None:
            return int(self._query("SELECT COUNT(*) FROM feedback")[0][0])
        return int(self._query("SELECT COUNT(*) FROM feedback WHERE status = ?", (status,))[0][0])

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit entries, newest first."""
        rows = self._query(
            "SELECT id, time, actor, action, target, detail FROM service_audit ORDER BY id DESC LIMIT ?",
            (-1 if limit is None else int(limit),),
        )
        return [
            {"id": r[0], "time": r[1], "actor": r[2], "action": r[3], "target": r[4], "detail": json.loads(r[5])}
            for r in rows
        ]

    def stats(self, *, top: int = 10) -> dict[str, Any]:
        """Counts of reports by status, by kind, by reporter and by identity.

        Args:
            top: how many identities (the most reported first) to list.

        Returns:
            ``{"total", "by_status", "by_kind", "by_kind_status", "reporters",
            "top_identities": [[name, n], ...], "finetunes", "confirmations"}`` (JSON-able;
            every status and kind present, zero when none; ``confirmations``: reports that
            confirm what the system said, the rest are mistakes).
        """
        by_status = {s: 0 for s in STATUSES}
        by_kind = {k: 0 for k in KINDS}
        by_kind_status: dict[str, dict[str, int]] = {k: {s: 0 for s in STATUSES} for k in KINDS}
        for kind, status, n in self._query("SELECT kind, status, COUNT(*) FROM feedback GROUP BY kind, status"):
            by_status[status] = by_status.get(status, 0) + int(n)
            by_kind[kind] = by_kind.get(kind, 0) + int(n)
            by_kind_status.setdefault(kind, {})[status] = int(n)
        idents = self._query(
            "SELECT COALESCE(identity, json_extract(truth, '$.identity')) AS who, COUNT(*) FROM feedback "
            "WHERE who IS NOT NULL GROUP BY who ORDER BY COUNT(*) DESC, who LIMIT ?",
            (int(top),),
        )
        reporters = int(self._query("SELECT COUNT(DISTINCT actor) FROM feedback")[0][0])
        finetunes = int(self._query("SELECT COUNT(*) FROM service_audit WHERE action = 'finetune'")[0][0])
        confirmations = sum(_confirms(k, json.loads(p), json.loads(t)) for k, p, t in self._query("SELECT kind, predicted, truth FROM feedback"))
        return {
            "total": sum(by_status.values()),
            "by_status": by_status,
            "by_kind": by_kind,
            "by_kind_status": by_kind_status,
            "reporters": reporters,
            "top_identities": [[str(w), int(n)] for w, n in idents],
            "finetunes": finetunes,
            "confirmations": int(confirmations),
        }
