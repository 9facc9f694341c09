"""A gallery's search indexes: one per scoring rule, each tagged with the write
generation it matches.

``"best"`` searches every sample's embedding, ``"mean"`` the identities' templates. An
index is kept while the gallery's view stays at its generation; a gallery's own
enrolment appends to the ``"best"`` index instead of rebuilding it
(:meth:`SearchIndexes.carry_best`). HNSW and IVF indexes are loaded from and saved to
cache files next to the gallery (:mod:`siamkit.gallery.index_cache`); exact and flat
indexes cost nothing to rebuild.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..inference import network_pairwise
from .exact import ExactIndex
from .index_cache import CACHED_KINDS, cache_path, cache_state
from .search import FaissIndex, choose_index, metric_for_network
from .settings import GallerySettings
from .snapshot import SnapshotView

__all__ = ["SearchIndexes", "exact_network_index"]

logger = logging.getLogger(__name__)


def exact_network_index(network: Any, vectors: torch.Tensor) -> ExactIndex:
    """An exact index ranking ``vectors`` by the network's own distance.

    Args:
        network: the model (its distance, or its pair head).
        vectors: the embeddings (N, D).

    Returns:
        The built index.
    """
    return ExactIndex(distance_fn=lambda q, x: network_pairwise(network, q, x)).build(vectors)


class SearchIndexes:
    """The search index of each scoring rule of one gallery handle.

    Args:
        gallery_path: the gallery file (cache files are named after it).

    Attributes:
        entries: rule -> (index, the generation it matches).
        dirty: rules whose index changed since it was loaded or saved.
    """

    def __init__(self, gallery_path: Path) -> None:
        self.gallery_path = gallery_path
        self.entries: dict[str, tuple[Any, int]] = {}
        self.dirty: set[str] = set()

    def clear(self) -> None:
        """Forget every index (the view they were built from is gone)."""
        self.entries = {}
        self.dirty = set()

    def get(
        self, rule: str, view: SnapshotView, network: Any, settings: GallerySettings, meta: dict[str, Any]
    ) -> tuple[Any, str]:
        """The index of ``rule``'s vectors: kept from before, loaded from the cache, or built.

        Args:
            rule: ``"best"`` (samples) or ``"mean"`` (templates).
            view: the gallery's current view.
            network: the model.
            settings: the handle's settings (index kind, parameters, caching).
            meta: the gallery's meta (gallery_id, model_hash: what a cache must match).

        Returns:
            (index, index kind).
        """
        vectors = view.vectors(rule)
        n = int(vectors.shape[0])
        metric = metric_for_network(network)
        kind = settings.index
        if kind == "auto":
            kind = choose_index(n, exact_max=settings.exact_max, supports_faiss=metric is not None)
        have = self.entries.get(rule)
        if have is not None and have[1] == view.generation and have[0].kind == kind:
            if not (isinstance(have[0], FaissIndex) and have[0].outgrown(n)):
                return have[0], kind
        if kind == "exact":
            index: Any = exact_network_index(network, vectors)
        else:
            assert metric is not None
            index = self._load_or_build(rule, kind, metric, vectors, view, network, settings, meta)
        self.entries[rule] = (index, view.generation)
        self.dirty.discard(rule)
        return index, kind

    def _load_or_build(
        self, rule: str, kind: str, metric: str, vectors: torch.Tensor, view: SnapshotView, network: Any,
        settings: GallerySettings, meta: dict[str, Any],
    ) -> Any:
        n = int(vectors.shape[0])
        index = FaissIndex(kind=kind, metric=metric, **(settings.index_params or {}))
        path = cache_path(self.gallery_path, rule, kind)
        state = cache_state(meta, view.generation, rule)
        cached = settings.cache_index and kind in CACHED_KINDS
        if cached and index.load(path, state=state) and index.ntotal == n and not index.outgrown(n):
            return index
        if n == 0:
            return exact_network_index(network, vectors)
        index.build(vectors.numpy())
        logger.info("built a %s index of %d vectors in %.1f s", kind, n, index.build_seconds_)
        if cached:
            try:
                index.save(path, state=state)
            except OSError as e:
                logger.warning("could not write the index cache %s: %s", path, e)
        return index

    def carry_best(self, old: int, new: int, embeddings: np.ndarray) -> None:
        """After the gallery's own enrolment (generation ``old`` -> ``new``): keep the
        ``"best"`` index, with the new samples appended, and forget the others.

        Args:
            old: the generation before the write.
            new: the generation after it.
            embeddings: float32 (M, D), the new samples' embeddings.
        """
        best = self.entries.get("best")
        was_dirty = "best" in self.dirty
        self.clear()
        if best is not None and best[1] == old:
            index = best[0]
            index.add(embeddings)
            self.entries["best"] = (index, new)
            if index.kind in CACHED_KINDS or was_dirty:
                self.dirty.add("best")

    def retag(self, old: int, new: int) -> None:
        """A write that changed no vectors (metadata): indexes of ``old`` match ``new``.

        Args:
            old: the generation before the write.
            new: the generation after it.
        """
        for rule, (idx, gen) in list(self.entries.items()):
            if gen == old:
                self.entries[rule] = (idx, new)

    def save_dirty(self, generation: int, meta: dict[str, Any]) -> None:
        """Write the cache files of changed HNSW / IVF indexes that match ``generation``.

        Args:
            generation: the gallery file's current generation.
            meta: the gallery's meta (what the cache records).
        """
        for rule in list(self.dirty):
            idx, gen = self.entries.get(rule, (None, -1))
            if idx is not None and gen == generation and idx.kind in CACHED_KINDS:
                idx.save(cache_path(self.gallery_path, rule, idx.kind), state=cache_state(meta, generation, rule))
        self.dirty = set()
