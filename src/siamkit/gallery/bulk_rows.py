"""The rows of an enrolment, shared by both stores' ``add_identity`` / ``add_identities``
(one identity, or a bulk load in one transaction)."""

from __future__ import annotations

from typing import Any, Sequence, Tuple

import numpy as np

from ..errors import GalleryError, IdentityExistsError
from .store_schema import StoredSample, check_identity, json_object, new_sample_rows

__all__ = ["EnrolEntry", "check_distinct", "enrol_rows", "exists_error"]

#: (identity, embeddings (N, D) float32, kept samples, metadata, sample_metadata)
EnrolEntry = Tuple[str, np.ndarray, Sequence[StoredSample | None], "dict[str, Any] | None", "Sequence[dict[str, Any] | None] | None"]


def enrol_rows(
    identity: str,
    embeddings: np.ndarray,
    samples: Sequence[StoredSample | None],
    metadata: dict[str, Any] | None = None,
    sample_metadata: Sequence[dict[str, Any] | None] | None = None,
) -> tuple[str, str, list[tuple[Any, ...]]]:
    """Check one enrolment and build its rows (before any transaction starts).

    Args:
        identity: the new identity's name.
        embeddings: float32 (N, D), one per sample.
        samples: the kept input of each sample (None: not kept).
        metadata: the identity's JSON-able metadata.
        sample_metadata: one JSON-able dict (or None) per sample.

    Returns:
        (identity, its metadata as JSON, its sample rows).
    """
    check_identity(identity)
    meta_json = json_object(metadata, "identity metadata")
    return identity, meta_json, new_sample_rows(identity, embeddings, samples, sample_metadata, "enrolling")


def exists_error(identity: str, n_old: int) -> IdentityExistsError:
    """The error for enrolling an identity that is enrolled already.

    Args:
        identity: its name.
        n_old: its samples.

    Returns:
        The error, naming the ways out.
    """
    return IdentityExistsError(
        f"identity {identity!r} is already enrolled ({n_old} samples); add samples to it with "
        "add_samples (`siamkit gallery add`), or remove it first"
    )


def check_distinct(names: Sequence[str]) -> None:
    """Refuse a batch that names one identity twice (GalleryError)."""
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise GalleryError(f"an identity is named twice in one batch: {n!r}")
        seen.add(n)
