"""Following other processes' writes without reading the whole gallery again.

A store that records what each write did (``changes_since``, as
:class:`~siamkit.gallery.pg_store.PgGalleryStore` does) lets a handle that is behind
apply those writes to its in-memory view and search indexes, as it applies its own
(:class:`~siamkit.gallery.cache.GalleryCache` ``added`` / ``removed`` / ``retagged``):
an enrolment elsewhere appends to the ``"best"`` index instead of rebuilding it. When the
writes cannot be followed (a re-embedding, too many, pruned, or samples since removed)
the handle reloads the snapshot as before. A SQLite store has no ``changes_since``: a
handle reloads after another process's write, as it always did.
"""

from __future__ import annotations

from typing import Any

__all__ = ["follow_changes"]


def follow_changes(cache: Any, store: Any, generation: int, embedding_dim: int) -> bool:
    """Bring ``cache``'s view up to the store's writes, if the store can say what they were.

    Args:
        cache: the handle's :class:`~siamkit.gallery.cache.GalleryCache` (its view set).
        store: the gallery's store.
        generation: the store's generation just read.
        embedding_dim: the embeddings' size.

    Returns:
        True when the view now matches the store's generation (else reload it).
    """
    since = getattr(store, "changes_since", None)
    view = cache.view
    if since is None or view is None or view.generation > generation:
        return False
    found = since(view.generation, embedding_dim)
    if found is None:
        return False
    now, changes = found
    for c in changes:
        if c.action == "add":
            cache.added(c.generation - 1, c.generation, c.identity, c.sample_ids, c.embeddings)
        elif c.action == "remove":
            cache.removed(c.generation - 1, c.generation, c.identity)
        else:
            cache.retagged(c.generation - 1, c.generation)
        if cache.view is None or cache.view.generation != c.generation:
            return False
    return cache.view.generation == now
