"""A gallery re-embedded by another process: noticing it, on both backends.

Every handle embeds with the model it was opened with. When another process re-embeds
the gallery with a new model (``siamkit gallery reembed``, ``siamkit finetune
--reembed-gallery``), the stored embeddings are the new model's and the handle's model no
longer compares with them. Then:

- a query of the handle (:class:`~siamkit.gallery.cache.GalleryCache` ``fresh``) reads the
  stored model hash whenever it reloads the view (the generation moved and the writes
  could not be followed, as after every re-embedding) and raises
  :class:`~siamkit.errors.GalleryModelChangedError` instead of searching new embeddings
  with old-model probes. The hash is read before the snapshot (no large read in vain) and
  after it (a re-embedding that committed in between is caught: it commits its embeddings
  and its meta together);
- a write (enrol, add samples) checks the stored hash inside its own transaction
  (:func:`check_in_transaction`), after the write lock, so old-model embeddings never
  enter a re-embedded gallery;
- :meth:`siamkit.gallery.Gallery.adopt_model` switches the handle to the new model (the
  view and indexes are rebuilt from the database); the HTTP service tries that with its
  model folder and answers 503 ``gallery_model_changed`` until it can.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import GalleryModelChangedError

__all__ = ["check_in_transaction", "check_stored_model", "changed_error"]


def changed_error(where: Any, stored: dict[str, Any] | str, this: str) -> GalleryModelChangedError:
    """The error for a handle whose model is no longer the gallery's.

    Args:
        where: the gallery (path or redacted URL).
        stored: the gallery's meta now (or its model hash).
        this: the handle's model hash.

    Returns:
        The error, naming both models and the way out.
    """
    now = stored if isinstance(stored, str) else (stored.get("model_fingerprint") or stored.get("model_hash"))
    return GalleryModelChangedError(
        f"gallery {where} was re-embedded with another model ({now}) since this handle opened it with model "
        f"{this}: their embeddings are not comparable. Reopen it with the gallery's model (Gallery.adopt_model; "
        "a service reloads its --model folder once that holds the new model)"
    )


def check_stored_model(store: Any, meta: dict[str, Any]) -> None:
    """Raise unless the gallery still records the model a handle embeds with.

    Args:
        store: the gallery's store.
        meta: the handle's meta (its ``model_hash`` is the handle's model's).

    Raises:
        GalleryModelChangedError: another process re-embedded the gallery.
    """
    this = meta.get("model_hash")
    if this is None:
        return
    now = store.meta()
    if now.get("model_hash") != this:
        raise changed_error(store.path, now, meta.get("model_fingerprint") or this)


def check_in_transaction(cur: Any, expected: str | None, where: Any) -> None:
    """Inside a write transaction (after its lock): raise unless the gallery's model is
    still ``expected``. Works on a SQLite and a psycopg cursor (``execute`` returns the cursor).

    Args:
        cur: the write transaction's cursor.
        expected: the model hash the writer embedded with (None: no check).
        where: the gallery, for the message.

    Raises:
        GalleryModelChangedError: another process re-embedded the gallery (nothing is written).
    """
    if expected is None:
        return
    row = cur.execute("SELECT value FROM meta WHERE key = 'model_hash'").fetchone()
    stored = None if row is None else json.loads(row[0])
    if stored != expected:
        raise changed_error(where, str(stored), expected)
