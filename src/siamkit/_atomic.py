"""The one atomic write for every file siamkit writes.

A write goes to a temporary file in the target's folder, is flushed and ``fsync``-ed, and
then renamed over the target with :func:`os.replace` (atomic on POSIX and Windows); the
folder is ``fsync``-ed after the rename where the platform allows it, so the new name
survives a power cut. A reader sees the old file or the new one, never half of either; a
failed write leaves the old file and no temporary behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "fsync_dir"]


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder (makes a rename inside it durable); a no-op where unsupported."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def _default_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's, else 0o666
    less the umask (``mkstemp`` alone would make every file 0600)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsync-ed and renamed over
    ``path``, on any exception removed. For writers that need a file name (safetensors,
    FAISS, ``np.savez``).

    Args:
        path: the file to (re)place.
        mode: permission bits of the new file (e.g. ``0o600`` for secrets); default: the
            replaced file's mode, or what the umask gives a new file.

    Returns:
        A context manager yielding the temporary :class:`~pathlib.Path` to write.
    """
    path = Path(path)
    final_mode = _default_mode(path) if mode is None else mode
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, final_mode)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Args:
        path: the file to (re)place; its folder must exist.
        data: the new content.
        mode: permission bits (see :func:`atomic_path`).
    """
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably.

    Args:
        path: the file to (re)place; its folder must exist.
        text: the new content.
    """
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as indented, key-sorted JSON, atomically and durably.

    Args:
        path: the file to (re)place; its folder must exist.
        data: anything :func:`json.dumps` accepts.
    """
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
