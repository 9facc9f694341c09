"""Gallery: enrol identities, verify against the record (1:1), identify (1:N, open set).

Persistence is one SQLite file (:mod:`siamkit.gallery.store`) or a PostgreSQL database
(:mod:`siamkit.gallery.pg_store`); search is exact or FAISS
(:mod:`siamkit.gallery.search`); :class:`Gallery` ties them to a model. The parts:

- ``gallery``: the :class:`Gallery` facade (open, enrol, verify, identify, reembed).
- ``model``: which model (:func:`model_hash`, resolving a Verifier / network / folder,
  the "opened with the model it was built with" check).
- ``settings``: :class:`GallerySettings`, a handle's options (scoring, index, caching).
- ``inputs``: image paths / arrays -> the model's input batch and the kept inputs; kept
  inputs -> embeddings again (re-embedding).
- ``cache``: a handle's in-memory state, kept in step with writes: ``snapshot`` (the
  view of every embedding) and ``indexes`` (a search index per scoring rule, cached in
  files by ``index_cache``).
- ``ranking``: ranking by the best / mean rule, calibrated open-set decisions.
- ``results``: what the gallery answers (:class:`Identification`, ...).
- ``backend``: the storage interface (:class:`~siamkit.gallery.backend.GalleryBackend`)
  and the choice of backend by location; ``opening``: opening one with the model check.
- ``store`` / ``store_schema``: the SQLite file and its format.
- ``pg_store`` / ``pg_schema`` / ``pg_rows`` / ``pg_listen``: a PostgreSQL database shared
  by several processes (``postgresql://...``), its migrations, LISTEN / NOTIFY; ``follow``:
  applying other processes' writes to a handle's view and index.
- ``search`` / ``exact``: the search indexes (:class:`FaissIndex`, :class:`ExactIndex`).

Example:
    >>> from siamkit.gallery import Gallery                  # doctest: +SKIP
    >>> with Gallery.open("staff.db", "runs/faces/model") as g:   # doctest: +SKIP
    ...     g.enroll("alice", ["alice1.png", "alice2.png"])
    ...     print(g.identify("probe.png", k=5).decision)
"""

from __future__ import annotations

from .gallery import Gallery
from .model import model_hash
from .ranking import SCORING_RULES
from .results import UNKNOWN, Candidate, GalleryVerification, Identification, IdentityRecord, SampleInfo
from .search import EXACT_MAX, ExactIndex, FaissIndex, choose_index, metric_for_network, recall_at_k
from .settings import GallerySettings
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
    "GallerySettings",
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
