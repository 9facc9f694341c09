"""Where a gallery's records live: the storage interface and the choice of backend.

A gallery is stored either in one SQLite file (:class:`~siamkit.gallery.store.GalleryStore`,
the embedded default) or in a PostgreSQL database shared by several processes and
machines (:class:`~siamkit.gallery.pg_store.PgGalleryStore`, for a location
``postgresql://user@host:port/db``). Both implement :class:`GalleryBackend`; the
:class:`~siamkit.gallery.Gallery` facade, its cache and the re-embedding code use nothing
else. Search never runs in the database: every process builds its own index from
:meth:`GalleryBackend.snapshot` and keeps it current by the write generation.

A backend that can say what changed between two generations (``changes_since``, see
:mod:`siamkit.gallery.follow`) lets a process follow other processes' writes without
reading every embedding again; one that can push changes (``subscribe``) lets it follow
them before the next query asks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from .._pg import DATABASE_SCHEMES, is_database_url
from .snapshot import Snapshot
from .store_schema import StoredSample

__all__ = ["GalleryBackend", "DATABASE_SCHEMES", "is_database_url", "gallery_location", "open_store"]



@runtime_checkable
class GalleryBackend(Protocol):
    """What the gallery needs of its storage. Every write is one transaction, bumps the
    write generation, appends an audit event, and returns the generation before and after
    it (so a handle can tell whether anybody else wrote in between)."""

    #: names the gallery in messages (a file path, or a URL without its password)
    path: Path | str
    #: the model hash every write of embeddings must find stored (None: not checked);
    #: set from ``init_meta`` on opening and by ``replace_embeddings`` (see model_guard)
    model_hash: str | None

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...

    def meta(self) -> dict[str, Any]: ...

    def generation(self) -> int: ...

    def snapshot(self, embedding_dim: int) -> Snapshot: ...

    def has_identity(self, identity: str) -> bool: ...

    def list_identities(self) -> list[dict[str, Any]]: ...

    def get_identity(self, identity: str) -> dict[str, Any]: ...

    def count(self) -> tuple[int, int]: ...

    def iter_stored_samples(self, batch: int = 256) -> Iterator[list[tuple[int, StoredSample | None]]]: ...

    def stored_sample(self, sample_id: int) -> tuple[str, StoredSample | None] | None: ...

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]: ...

    def integrity_check(self) -> str: ...

    def add_identity(
        self,
        identity: str,
        embeddings: np.ndarray,
        samples: Sequence[StoredSample | None],
        *,
        metadata: dict[str, Any] | None = None,
        sample_metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> tuple[int, int, list[int]]:
        """Enrol a new identity (IdentityExistsError if it exists).

        Args:
            identity: its name; embeddings: float32 (N, D); samples: the kept inputs;
            metadata: the identity's; sample_metadata: one dict (or None) per sample.

        Returns:
            (generation before, generation after, the new sample ids, increasing).
        """
        ...

    def add_identities(self, entries: Sequence[Any]) -> list[tuple[int, int, list[int]]]:
        """Enrol several new identities in one transaction (all or none).

        Args:
            entries: (identity, embeddings, samples, metadata, sample_metadata) each.

        Returns:
            Per identity: (generation before, after, its new sample ids); one generation each.
        """
        ...

    def add_samples(
        self,
        identity: str,
        embeddings: np.ndarray,
        samples: Sequence[StoredSample | None],
        *,
        sample_metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> tuple[int, int, list[int]]:
        """Add samples to an enrolled identity (UnknownIdentityError if not).

        Args:
            identity: its name; embeddings: float32 (N, D); samples: the kept inputs;
            sample_metadata: one dict (or None) per sample.

        Returns:
            (generation before, generation after, the new sample ids, increasing).
        """
        ...

    def set_metadata(self, identity: str, metadata: dict[str, Any]) -> tuple[int, int]:
        """Replace an identity's metadata.

        Args:
            identity: an enrolled identity; metadata: its new metadata.

        Returns:
            (generation before, generation after).
        """
        ...

    def remove_identity(self, identity: str) -> tuple[int, int, int]: ...

    def replace_embeddings(
        self, sample_ids: np.ndarray, embeddings: np.ndarray, meta_updates: dict[str, Any], *, expected_generation: int
    ) -> tuple[int, int]:
        """Every sample's new embedding and the new model's meta, in one transaction.

        Args:
            sample_ids: every stored sample; embeddings: their new embeddings;
            meta_updates: the new model's meta; expected_generation: the generation they were read at.

        Returns:
            (generation before, generation after).
        """
        ...

    def set_meta(self, updates: dict[str, Any]) -> None: ...


def gallery_location(value: str) -> Path | str:
    """Parse a ``--gallery`` value: a PostgreSQL URL as given (a Path would fold its
    ``//``), anything else a file path.

    Args:
        value: the text given.

    Returns:
        The URL string, or a Path.
    """
    return value if is_database_url(value) else Path(value)


def open_store(
    location: str | os.PathLike[str],
    *,
    create: bool,
    init_meta: dict[str, Any] | None,
    timeout: float,
) -> GalleryBackend:
    """Open the store a location names: a PostgreSQL URL or a SQLite file.

    Args:
        location: ``postgresql://user@host:port/db`` or a file path.
        create: create the gallery when missing (needs ``init_meta``).
        init_meta: a new gallery's meta values.
        timeout: seconds to wait for a lock (SQLite) or a connection (PostgreSQL).

    Returns:
        The open store.
    """
    if is_database_url(location):
        from .pg_store import PgGalleryStore  # psycopg is optional: imported only for a URL

        return PgGalleryStore.open(str(location), create=create, init_meta=init_meta, timeout=timeout)
    from .store import GalleryStore

    return GalleryStore.open(location, create=create, init_meta=init_meta, timeout=timeout)
