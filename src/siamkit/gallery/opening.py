"""Opening a gallery's store: the backend a location names, the model check, the
handle's settings, and (for a shared database) following other processes' writes.

:meth:`siamkit.gallery.Gallery.open` calls :func:`open_checked_store`, then
:func:`watch_changes` on the new handle.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from ..errors import SiamkitError
from .backend import GalleryBackend, is_database_url, open_store
from .model import check_same_model
from .settings import GallerySettings

__all__ = ["open_checked_store", "watch_changes"]

logger = logging.getLogger(__name__)


def open_checked_store(
    location: str | os.PathLike[str],
    init_meta: dict[str, Any] | None,
    opts: GallerySettings,
    *,
    create: bool,
    timeout: float,
    check_model: bool,
) -> tuple[GalleryBackend, GallerySettings]:
    """Open the store at ``location`` and refuse it when it was built with another model.

    Args:
        location: a SQLite file or a ``postgresql://`` URL.
        init_meta: the model's meta values (None: opened without a model).
        opts: the handle's settings as given.
        create: create the gallery when missing.
        timeout: seconds to wait for a lock or a connection.
        check_model: refuse another model (False only for migration).

    Returns:
        (the open store, the settings completed from the stored meta: the default
        scoring rule; no index cache files for a database).

    Raises:
        ModelMismatchError: the gallery was built with another model (the store is closed).
    """
    store = open_store(location, create=create, init_meta=init_meta, timeout=timeout)
    try:
        meta = store.meta()
        if init_meta is not None and check_model:
            check_same_model(meta, init_meta, store.path)  # type: ignore[arg-type]
        opts = replace(opts, scoring=opts.scoring or meta.get("scoring", "best"), index_params=dict(opts.index_params or {}))
        if is_database_url(location):  # index files beside a database would be shared by nobody
            opts = replace(opts, cache_index=False)
    except BaseException:
        store.close()
        raise
    return store, opts


def watch_changes(gallery: Any) -> None:
    """Let a handle on a shared database follow other processes' writes as they commit
    (the store's ``subscribe``; nothing for a SQLite file).

    Args:
        gallery: the open :class:`~siamkit.gallery.Gallery` (with a model).
    """
    subscribe = getattr(gallery.store, "subscribe", None)
    if subscribe is None or gallery.network is None:
        return

    def changed(generation: int | None) -> None:
        try:
            gallery.refresh()
        except SiamkitError as e:  # the next query reports it
            logger.debug("gallery refresh after a change failed: %s", e)

    subscribe(changed)
