"""Gallery: enrol identities, verify against the record (1:1), identify (1:N, open set).

Persistence is one SQLite file (:mod:`siamkit.gallery.store`); search is exact or FAISS
(:mod:`siamkit.gallery.search`); :class:`Gallery` ties them to a model.

Example:
    >>> from siamkit.gallery import Gallery                  # doctest: +SKIP
    >>> with Gallery.open("staff.db", "runs/faces/model") as g:   # doctest: +SKIP
    ...     g.enroll("alice", ["alice1.png", "alice2.png"])
    ...     print(g.identify("probe.png", k=5).decision)
"""

from __future__ import annotations

from .gallery import (
    SCORING_RULES,
    UNKNOWN,
    Candidate,
    Gallery,
    GalleryVerification,
    Identification,
    IdentityRecord,
    SampleInfo,
    model_hash,
)
from .search import EXACT_MAX, ExactIndex, FaissIndex, choose_index, metric_for_network, recall_at_k
from .store import (
    GalleryError,
    GalleryFileError,
    GalleryStore,
    IdentityExistsError,
    ModelMismatchError,
    UnknownIdentityError,
)

__all__ = [
    "Candidate",
    "EXACT_MAX",
    "ExactIndex",
    "FaissIndex",
    "Gallery",
    "GalleryError",
    "GalleryFileError",
    "GalleryStore",
    "GalleryVerification",
    "Identification",
    "IdentityExistsError",
    "IdentityRecord",
    "ModelMismatchError",
    "SCORING_RULES",
    "SampleInfo",
    "UNKNOWN",
    "UnknownIdentityError",
    "choose_index",
    "metric_for_network",
    "model_hash",
    "recall_at_k",
]
