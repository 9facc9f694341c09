"""Bulk enrolment: many new identities, one transaction per batch.

:func:`enroll_many` embeds a batch of identities in one network call and writes the
batch with the store's ``add_identities`` (one transaction: a batch is written whole or
not at all; batches before a refused one stay). Each identity is still its own
generation, so other processes follow a bulk load incrementally. ``siamkit gallery
enroll-folder`` is its command line. The handle's view is not updated in place: its
next query reloads (SQLite) or follows the written changes (PostgreSQL).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ..errors import GalleryError
from .bulk_rows import check_distinct
from .inputs import embed_batch, prepare_inputs
from .store_schema import check_identity

__all__ = ["enroll_many", "BULK_BATCH"]

#: identities per transaction by default
BULK_BATCH = 1000


def _chunks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def enroll_many(gallery: Any, items: Iterable[tuple[str, Any]], *, batch: int = BULK_BATCH) -> int:
    """Enrol new identities in batches (one transaction and one embedding call per batch).

    Args:
        gallery: an open :class:`~siamkit.gallery.Gallery` with its model.
        items: (identity, inputs) pairs; inputs as for :meth:`~siamkit.gallery.Gallery.enroll`
            (image paths, or uint8 images (N, C, H, W) / one image).
        batch: identities per transaction.

    Returns:
        The number of identities enrolled.

    Raises:
        GalleryError: no model, a bad batch size, or a name twice in one batch.
        IdentityExistsError: an identity is enrolled already (its batch is not written;
            the batches before it are).
        GalleryModelChangedError: another process re-embedded the gallery.
    """
    net = gallery.network
    if net is None:
        raise GalleryError("enroll_many needs a model: open the gallery with one")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise GalleryError(f"batch must be a positive integer, got {batch!r}")
    keep = gallery.settings.keep_inputs
    done = 0
    for chunk in _chunks(items, batch):
        names = [check_identity(name) for name, _ in chunk]
        check_distinct(names)
        prepared = [prepare_inputs(inputs, net, what=f"samples of {name!r}") for name, inputs in chunk]
        emb = embed_batch(net, torch.cat([x for x, _ in prepared]), gallery.settings.batch_size).numpy()
        bounds = np.cumsum([0] + [x.shape[0] for x, _ in prepared])
        entries = [
            (name, emb[bounds[i] : bounds[i + 1]], list(stored) if keep else [None] * len(stored), None, None)
            for i, (name, (_, stored)) in enumerate(zip(names, prepared))
        ]
        gallery.store.add_identities(entries)
        done += len(entries)
    return done
