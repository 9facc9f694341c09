"""API keys for the HTTP service: hashed at rest, two roles, a FastAPI dependency.

Design:

- A key is ``sk_<key id>_<secret>``: the key id (8 hex characters) is public and only
  selects the record; the secret is 32 random bytes (``secrets.token_urlsafe``). The
  plaintext key is shown once, by ``siamkit keys add``, and never stored.
- The keys file (JSON, written atomically with mode 0600) holds per key: id, name, role,
  a random 16-byte salt and ``scrypt(secret, salt, n=2**14, r=8, p=1)`` (32 bytes).
  Verifying compares with :func:`hmac.compare_digest` (constant time).
- scrypt costs ~20-50 ms by design, too slow to pay on every request, so a verified key
  is remembered in memory under ``HMAC-SHA256(process secret, key)`` (a random secret
  made at start-up: the cache never holds the key, and entries die with the process).
  An unknown key id runs scrypt too (against a dummy record), so that it takes as long as
  a wrong secret: the time of a refusal does not tell whether the key id exists. A
  refused key is remembered (by its HMAC) for :data:`FAILED_TTL_S` seconds, so that
  repeating a wrong key does not cost a scrypt each time.
- A store loaded from a file re-reads it when its mtime, size or inode changes (looked at
  most every :data:`RELOAD_INTERVAL_S` seconds, on authentication), so ``siamkit keys
  revoke`` / ``add`` take effect in a running service within about a second. A file that
  became unreadable or invalid is logged and the last good keys are kept.
- Roles: ``read`` (verify, identify, list) and ``admin`` (also every mutating call:
  enrol, add samples, delete, feedback). ``admin`` includes ``read``.
- The key is sent as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``.
  Missing or invalid -> 401 ``unauthorized``; valid but too weak a role -> 403
  ``forbidden``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .._atomic import atomic_path
from ..errors import KeyFileError

__all__ = ["ROLES", "ApiKeyRecord", "KeyStore", "Principal", "KeyFileError", "generate_key", "hash_secret"]

logger = logging.getLogger(__name__)

ROLES = ("read", "admin")
#: seconds a refused key is remembered (no scrypt for its repeats)
FAILED_TTL_S = 10.0
#: at most this often a file-backed store looks whether its file changed
RELOAD_INTERVAL_S = 0.5
FORMAT = "siamkit-api-keys"
FORMAT_VERSION = 1
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_KEY_RE = re.compile(r"^sk_([0-9a-f]{8})_([A-Za-z0-9_-]{20,100})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")


def hash_secret(secret: str, salt: bytes, *, n: int = _SCRYPT["n"], r: int = _SCRYPT["r"], p: int = _SCRYPT["p"]) -> bytes:
    """scrypt of a key's secret part.

    Args:
        secret: the secret part of the key (after ``sk_<id>_``).
        salt: the key's random salt.
        n: scrypt's cost.
        r: scrypt's block size.
        p: scrypt's parallelism.

    Returns:
        The 32-byte hash.
    """
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=64 * 1024 * 1024)


def generate_key() -> tuple[str, str, str]:
    """A new key: (key id, secret, full key ``sk_<id>_<secret>``)."""
    key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"sk_{key_id}_{secret}"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name, id and role."""

    name: str
    key_id: str
    role: str

    def has(self, role: str) -> bool:
        return self.role == "admin" or self.role == role


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    name: str
    role: str
    salt: bytes
    hash: bytes
    created: float
    kdf: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "role": self.role, "salt": self.salt.hex(), "hash": self.hash.hex(),
            "created": self.created, "kdf": {"name": "scrypt", **self.kdf},
        }

    @classmethod
    def from_json(cls, d: Any) -> "ApiKeyRecord":
        try:
            kdf = dict(d["kdf"])
            if kdf.pop("name") != "scrypt":
                raise ValueError("only scrypt keys are supported")
            rec = cls(
                id=str(d["id"]), name=str(d["name"]), role=str(d["role"]), salt=bytes.fromhex(d["salt"]),
                hash=bytes.fromhex(d["hash"]), created=float(d["created"]),
                kdf={k: int(kdf[k]) for k in ("n", "r", "p")},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise KeyFileError(f"a key record is invalid: {e}") from None
        if rec.role not in ROLES or not re.fullmatch(r"[0-9a-f]{8}", rec.id) or len(rec.hash) != 32:
            raise KeyFileError(f"key record {rec.id!r} is invalid (role {rec.role!r})")
        return rec


class KeyStore:
    """The API keys of a service (loaded from a keys file, or built in memory).

    Args:
        records: the key records.
        path: the file they came from (None: in memory).
        cache_size: how many verified keys are remembered (by their HMAC, see the module doc).
    """

    def __init__(self, records: list[ApiKeyRecord] | None = None, *, path: Path | None = None, cache_size: int = 1024) -> None:
        self.path = path
        self._by_id = {r.id: r for r in (records or [])}
        self._cache_secret = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, Principal] = OrderedDict()
        self._cache_size = cache_size
        self._failed: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()
        self._dummy = ApiKeyRecord("00000000", "dummy", "read", secrets.token_bytes(16), bytes(32), 0.0, dict(_SCRYPT))
        self._file_state = _file_state(path) if path is not None else None
        self._next_check = time.monotonic() + RELOAD_INTERVAL_S

    def __len__(self) -> int:
        return len(self._by_id)

    def close(self) -> None:
        """Nothing for a file or in-memory store (a database's closes its connections)."""

    @property
    def records(self) -> list[ApiKeyRecord]:
        return list(self._by_id.values())

    # ----------------------------------------------------------------- files

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "KeyStore":
        """Read a keys file.

        Raises:
            KeyFileError: missing, not JSON, wrong format, or an invalid record.
        """
        return cls(_read_records(Path(path)), path=Path(path))

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """Re-read the keys file when it changed (at most every :data:`RELOAD_INTERVAL_S`
        seconds unless ``force``); True when the keys were replaced. An in-memory store
        never reloads; an unreadable or invalid file is logged and the keys are kept."""
        if self.path is None:
            return False
        now = time.monotonic()
        with self._lock:
            if not force and now < self._next_check:
                return False
            self._next_check = now + RELOAD_INTERVAL_S
            state = _file_state(self.path)
            if state == self._file_state:
                return False
            try:
                records = _read_records(self.path)
            except KeyFileError as e:
                logger.error("keeping the %d keys loaded before: %s", len(self._by_id), e)
                return False
            self._file_state = state
            self._by_id = {r.id: r for r in records}
            self._cache.clear()
            self._failed.clear()
        logger.info("keys file %s changed: %d keys loaded", self.path, len(records))
        return True


    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the keys file atomically, readable by its owner only (0600)."""
        path = Path(path or self.path or "")
        if not str(path):
            raise KeyFileError("no keys file path")
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, "keys": [r.to_json() for r in self._by_id.values()]}
        if not path.parent.is_dir():
            raise KeyFileError(f"folder {path.parent} of the keys file does not exist")
        with atomic_path(path, mode=0o600) as tmp:
            tmp.chmod(0o600)  # before the secrets' hashes are written
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        self.path = path
        with self._lock:
            self._file_state = _file_state(path)  # what this store holds: no reload of it
        return path

    def add(self, name: str, role: str) -> str:
        """Create a key.

        Args:
            name: the key's name (1-64 characters: letters, digits, space, ``._@-``).
            role: ``read`` or ``admin``.

        Returns:
            The plaintext key (show it once, it is not stored).

        Raises:
            KeyFileError: an invalid role or name, or the name is taken.
        """
        if role not in ROLES:
            raise KeyFileError(f"role must be one of {list(ROLES)}, got {role!r}")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise KeyFileError(
                f"key name {name!r} must be 1-64 characters: letters, digits, space, '.', '_', '@', '-'"
            )
        if any(r.name == name for r in self._by_id.values()):
            raise KeyFileError(f"a key named {name!r} already exists; revoke it first or choose another name")
        while True:
            key_id, secret, key = generate_key()
            if key_id not in self._by_id:
                break
        salt = secrets.token_bytes(16)
        self._by_id[key_id] = ApiKeyRecord(key_id, name, role, salt, hash_secret(secret, salt), time.time(), dict(_SCRYPT))
        return key

    def revoke(self, name_or_id: str) -> bool:
        """Remove a key by name or id; True when one was removed."""
        for r in list(self._by_id.values()):
            if name_or_id in (r.name, r.id):
                del self._by_id[r.id]
                with self._lock:
                    self._cache.clear()
                    self._failed.clear()
                return True
        return False

    # ----------------------------------------------------------------- checking

    def authenticate(
        self, key: str | None, *, before_kdf: Callable[[str], None] | None = None, on_failure: Callable[[str], None] | None = None
    ) -> Principal | None:
        """The principal of a presented key, or None (missing, malformed, unknown, wrong).

        Args:
            key: the presented key.
            before_kdf: called with the key id just before the (slow) KDF runs, i.e. for
                a key in neither cache; it may raise to refuse the check (a rate limit).
            on_failure: called with the key id when the KDF refused the key.

        Returns:
            The key's principal, or None.
        """
        if not key or len(key) > 200:
            return None
        m = _KEY_RE.fullmatch(key.strip())
        if m is None:
            return None
        self.reload_if_changed()
        key_id, secret = m.group(1), m.group(2)
        tag = hmac.new(self._cache_secret, key.strip().encode(), hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            rec = self._by_id.get(key_id)
            hit = self._cache.get(tag) if rec is not None else None
            if hit is not None:
                self._cache.move_to_end(tag)
                return hit
            failed_at = self._failed.get(tag)
            if failed_at is not None and now - failed_at < FAILED_TTL_S:
                return None
        if before_kdf is not None:
            before_kdf(key_id)
        # an unknown id pays the same scrypt as a wrong secret (no timing oracle on ids)
        check = rec if rec is not None else self._dummy
        ok = hmac.compare_digest(hash_secret(secret, check.salt, **check.kdf), check.hash) and rec is not None
        if not ok:
            if on_failure is not None:
                on_failure(key_id)
            with self._lock:
                self._failed[tag] = now
                self._failed.move_to_end(tag)
                while len(self._failed) > self._cache_size:
                    self._failed.popitem(last=False)
            return None
        p = Principal(rec.name, rec.id, rec.role)
        with self._lock:
            self._cache[tag] = p
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return p


def _read_records(path: Path) -> list[ApiKeyRecord]:
    """The records of a keys file (raises KeyFileError)."""
    if not path.is_file():
        raise KeyFileError(f"keys file {path} does not exist (create keys with `siamkit keys add`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KeyFileError(f"keys file {path} is not readable JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise KeyFileError(f"{path} is not a siamkit keys file (format {FORMAT!r} version {FORMAT_VERSION})")
    keys = data.get("keys")
    if not isinstance(keys, list):
        raise KeyFileError(f"keys file {path} has no list of keys")
    return [ApiKeyRecord.from_json(k) for k in keys]


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """What tells that a file changed: (mtime_ns, size, inode); None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
