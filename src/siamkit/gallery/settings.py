"""How a gallery handle searches and enrols: scoring rule, search index, caching, batches.

One :class:`GallerySettings` per :class:`~siamkit.gallery.Gallery` handle;
:meth:`Gallery.open <siamkit.gallery.Gallery.open>` takes its fields as keyword
arguments and checks them against the model (:meth:`GallerySettings.check`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import GalleryError
from .model import distance_name
from .ranking import check_rule
from .search import EXACT_MAX, INDEX_KINDS, metric_for_network

__all__ = ["GallerySettings", "INDEX_PARAM_KEYS"]

#: the FAISS parameters ``index_params`` may hold
INDEX_PARAM_KEYS = ("m", "ef_construction", "ef_search", "nlist", "nprobe", "train_size", "seed")


@dataclass
class GallerySettings:
    """The options of one gallery handle.

    Attributes:
        scoring: ``"best"`` or ``"mean"`` (see :mod:`siamkit.gallery.gallery`); None on
            opening = the gallery's stored default (``"best"`` for a new gallery).
        index: ``"auto"`` (:func:`~siamkit.gallery.search.choose_index`), ``"exact"``,
            ``"flat"``, ``"hnsw"`` or ``"ivf"``.
        index_params: FAISS parameters (m, ef_construction, ef_search, nlist, nprobe,
            train_size, seed).
        exact_max: ``index="auto"`` searches exactly up to this many entries.
        keep_inputs: store each sample's input (needed by ``reembed``).
        cache_index: keep HNSW / IVF indexes in files next to the gallery.
        batch_size: inputs embedded per batch.
    """

    scoring: str | None = None
    index: str = "auto"
    index_params: dict[str, Any] | None = None
    exact_max: int = EXACT_MAX
    keep_inputs: bool = True
    cache_index: bool = True
    batch_size: int = 256

    def check(self, network: Any) -> None:
        """Refuse options that are unknown, or impossible for ``network``.

        Args:
            network: the gallery's model (None: no model-dependent checks).

        Raises:
            GalleryError: a bad scoring rule, index kind or index parameter, or an
                approximate index for a network only exact search serves.
        """
        if self.scoring is not None:
            check_rule(self.scoring)
        if self.index not in ("auto",) + INDEX_KINDS:
            raise GalleryError(f"index must be one of {['auto', *INDEX_KINDS]}, got {self.index!r}")
        bad = sorted(set(self.index_params or {}) - set(INDEX_PARAM_KEYS))
        if bad:
            raise GalleryError(f"unknown index parameter(s) {bad}; known: {list(INDEX_PARAM_KEYS)}")
        if network is not None and metric_for_network(network) is None and self.index not in ("auto", "exact"):
            raise GalleryError(
                f"this model compares embeddings with {distance_name(network)!r}, which only exact search "
                f"serves; index={self.index!r} is not possible (use 'auto' or 'exact')"
            )
