"""A gallery handle's in-memory state: the view of the file and its search indexes, kept
in step with writes.

The file is the truth. The view (:class:`~siamkit.gallery.snapshot.SnapshotView`) is
reloaded whenever the file's write generation moved on (another handle or process
wrote); after the handle's own write, when nothing else wrote in between, the next view
is derived from the current one and the ``"best"`` index is kept (appended to) instead
of being rebuilt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .follow import follow_changes
from .indexes import SearchIndexes
from .model_guard import check_stored_model
from .settings import GallerySettings
from .snapshot import SnapshotView

__all__ = ["GalleryCache"]


class GalleryCache:
    """The view and indexes of one gallery handle (the caller holds its lock).

    Args:
        gallery_path: the gallery file (index cache files are named after it).

    Attributes:
        view: the current view, None until read (or after a write it cannot follow).
        search: the :class:`~siamkit.gallery.indexes.SearchIndexes`.
    """

    def __init__(self, gallery_path: Path) -> None:
        self.view: SnapshotView | None = None
        self.search = SearchIndexes(gallery_path)

    def reset(self, view: SnapshotView | None = None) -> None:
        """Replace the view (None: reload on next use); the indexes go with the old one."""
        self.view = view
        self.search.clear()

    def fresh(self, store: Any, network: Any, meta: dict[str, Any]) -> SnapshotView:
        """The view, reloaded if the file's generation moved on since it was read.

        Args:
            store: the :class:`~siamkit.gallery.store.GalleryStore`.
            network: the model (None: the stored embedding size is used).
            meta: the gallery's meta (embedding_dim).

        Returns:
            The current view.
        """
        gen = store.generation()
        dim = int(meta["embedding_dim"]) if network is None else network.embedding_dim
        if self.view is not None and self.view.generation != gen and follow_changes(self, store, gen, dim):
            return self.view
        if self.view is None or self.view.generation != gen:
            check_stored_model(store, meta)  # re-embedded by another process? (model_guard)
            normalize = network is not None and bool(network.normalize)
            view = SnapshotView(store.snapshot(dim), normalize=normalize)
            check_stored_model(store, meta)  # ... while the snapshot was read
            self.reset(view)
        assert self.view is not None
        return self.view

    def index(self, rule: str, network: Any, settings: GallerySettings, meta: dict[str, Any]) -> tuple[Any, str]:
        """The search index of ``rule`` for the current view (see
        :meth:`~siamkit.gallery.indexes.SearchIndexes.get`).

        Args:
            rule: the scoring rule.
            network: the model.
            settings: the handle's settings.
            meta: the gallery's meta.

        Returns:
            (index, index kind).
        """
        assert self.view is not None
        return self.search.get(rule, self.view, network, settings, meta)

    def added(self, old: int, new: int, identity: str, ids: list[int], embeddings: np.ndarray) -> None:
        """Follow the handle's own write of new samples (generation ``old`` -> ``new``).

        Args:
            old: the generation before the write.
            new: the generation after it.
            identity: the samples' identity.
            ids: their new sample ids.
            embeddings: float32 (len(ids), D).
        """
        view = self.view
        if view is None or old != view.generation:
            self.reset()
            return
        self.view = view.with_samples(new, identity, ids, embeddings)
        self.search.carry_best(old, new, embeddings)

    def removed(self, old: int, new: int, identity: str) -> None:
        """Follow the handle's own removal of ``identity``.

        Args:
            old: the generation before the write.
            new: the generation after it.
            identity: the removed identity.
        """
        view = self.view
        code = view.code(identity) if view is not None else None
        if view is not None and old == view.generation and code is not None:
            self.reset(view.without_identity(new, code))
        else:
            self.reset()

    def retagged(self, old: int, new: int) -> None:
        """Follow a write that changed no embeddings (metadata).

        Args:
            old: the generation before the write.
            new: the generation after it.
        """
        if self.view is not None and old == self.view.generation:
            self.view.snap.generation = new
            self.search.retag(old, new)

    def save(self, store: Any, settings: GallerySettings, meta: dict[str, Any]) -> None:
        """Write the cache files of changed indexes, unless another process wrote since.

        Args:
            store: the gallery's store.
            settings: the handle's settings (``cache_index``).
            meta: the gallery's meta.
        """
        view = self.view
        if not self.search.dirty or view is None or not settings.cache_index:
            return
        if store.generation() != view.generation:
            return  # someone else wrote: our index no longer matches the file
        self.search.save_dirty(view.generation, meta)
