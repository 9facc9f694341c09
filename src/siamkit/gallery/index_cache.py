"""Search-index cache files: an index file and its JSON sidecar, next to the gallery.

The gallery file is the source of truth; an index file is a cache of the index built
from it. The sidecar ``<index file>.json`` records what the index matches (``state``:
the gallery's id, write generation, model hash and the scoring rule's content), its
parameters, and the index file's size and sha256, so that a reader can tell a stale or
damaged cache (rebuild) from a good one. Both files are written atomically
(:mod:`siamkit._atomic`); the sidecar is replaced first, so a crash between the two
renames leaves a sidecar that does not match the index file: stale, rebuilt.

The sidecar is not one of siamkit's versioned JSON files (it carries no
``format_version``): anything unexpected in it means "rebuild", never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from .._atomic import atomic_path, write_text_atomic

__all__ = ["FORMAT", "CACHED_KINDS", "cache_path", "cache_state", "sidecar_path", "write_index_cache", "read_sidecar", "file_intact"]

#: the sidecar's "format" value
FORMAT = "siamkit-gallery-index"
#: index kinds worth caching (flat / exact indexes cost nothing to rebuild)
CACHED_KINDS = ("hnsw", "ivf")


def cache_path(gallery_path: str | os.PathLike[str], rule: str, kind: str) -> Path:
    """The index file of a gallery's ``rule`` index of ``kind``.

    Args:
        gallery_path: the gallery's SQLite file.
        rule: the scoring rule whose vectors the index holds (best: samples, mean: templates).
        kind: the index kind (hnsw, ivf).

    Returns:
        ``<gallery>.<rule>-<kind>.faiss``.
    """
    return Path(f"{gallery_path}.{rule}-{kind}.faiss")


def cache_state(meta: dict[str, Any], generation: int, rule: str) -> dict[str, Any]:
    """What a gallery index matches: recorded in the sidecar, compared on loading.

    Args:
        meta: the gallery's meta (gallery_id, model_hash).
        generation: the write generation the index was built at.
        rule: the scoring rule whose vectors it holds.

    Returns:
        The state dict.
    """
    return {"gallery_id": meta["gallery_id"], "generation": int(generation), "model_hash": meta["model_hash"], "content": rule}


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar of an index file: ``path + ".json"``."""
    return Path(str(path) + ".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_index_cache(path: str | os.PathLike[str], write: Callable[[str], None], record: dict[str, Any]) -> None:
    """Write an index file and its sidecar, atomically.

    Args:
        path: the index file.
        write: writes the index to the file name it is given (e.g. ``faiss.write_index``).
        record: the sidecar's content (state, params, ntotal, dim); ``format``, ``size``
            and ``sha256`` are added.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        write(str(tmp))
        full = {"format": FORMAT, **record, "size": os.path.getsize(tmp), "sha256": _sha256(tmp)}
        write_text_atomic(sidecar_path(path), json.dumps(full, sort_keys=True))


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar of the index file ``path``, None when it is not an index sidecar.

    Args:
        path: the index file.

    Returns:
        The parsed sidecar, or None.

    Raises:
        OSError: unreadable; ValueError: not JSON (the caller rebuilds for both).
    """
    record = json.loads(sidecar_path(path).read_text())
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    return record


def file_intact(path: str | os.PathLike[str], record: dict[str, Any]) -> bool:
    """Whether the index file has the size and sha256 its sidecar records.

    Args:
        path: the index file.
        record: its sidecar.

    Returns:
        True when both match.

    Raises:
        OSError: the file is missing or unreadable; KeyError: the sidecar lacks them.
    """
    return os.path.getsize(path) == record["size"] and _sha256(Path(path)) == record["sha256"]
