"""The record an enrolment answers with, also when another process removed the identity
between the enrolment's commit and the read that follows it.

A write that committed was acknowledged: its caller must hear so (HTTP 201), not "not
enrolled" (404) because a delete from another instance came in between. The record is
then what this write stored, with the times of now and without the metadata (it is gone
with the identity).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from ..errors import UnknownIdentityError
from .results import IdentityRecord, SampleInfo

__all__ = ["record_after_write"]


def record_after_write(gallery: Any, identity: str, ids: Sequence[int], kept: Sequence[Any]) -> IdentityRecord:
    """The identity's record, read after a write that added samples ``ids``.

    Args:
        gallery: the :class:`~siamkit.gallery.Gallery`.
        identity: the identity written.
        ids: the samples the write added.
        kept: their kept inputs (:class:`~siamkit.gallery.store_schema.StoredSample` or None).

    Returns:
        The stored record, or (removed since by another process) the record of this write.
    """
    try:
        return gallery.get(identity)
    except UnknownIdentityError:
        now = time.time()
        samples = [
            SampleInfo(id=int(i), metadata={}, created=now, has_input=k is not None, format=None if k is None else k.format)
            for i, k in zip(ids, kept)
        ]
        return IdentityRecord(identity=identity, metadata={}, n_samples=len(samples), created=now, updated=now, samples=samples)
