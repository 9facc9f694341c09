"""Stage 1 of :class:`~siamkit.gallery.two_stage.TwoStageIndex` as any FAISS index
factory string over the short prefix, e.g. ``"IVF4096,SQ8"`` (inverted lists of 8-bit
scalar-quantised prefixes: 1 byte per value, so a 32-value prefix costs 32 bytes per
entry to scan, 1/16 of the 512 bytes of a full 128-value float vector). Stage 1 only
proposes candidates; stage 2 re-ranks them exactly, so a lossy code here costs recall
only through the candidates it misses.

Example:
    >>> import numpy as np
    >>> from siamkit.gallery.coarse import FactoryIndex
    >>> x = np.random.default_rng(0).standard_normal((3000, 16)).astype("float32")
    >>> idx = FactoryIndex("IVF16,SQ8", metric="l2", nprobe=16).build(x)
    >>> idx.search(x[:2], 1)[1][:, 0].tolist()
    [0, 1]
"""

from __future__ import annotations

import numpy as np

from ..errors import GalleryError
from .exact import check_metric

__all__ = ["FactoryIndex"]

#: vectors per list used to train the coarse quantizer (as FaissIndex)
TRAIN_PER_LIST = 40


class FactoryIndex:
    """A FAISS ``index_factory`` index with the FaissIndex calls stage 1 needs.

    Args:
        factory: the FAISS factory string (e.g. ``"IVF4096,SQ8"``, ``"IVF1024,Flat"``).
        metric: ``"cosine"`` (inner product; the caller normalises) or ``"l2"``.
        nprobe: lists visited per query (IVF indexes; None: FAISS's default 1).
        seed: of the training sample.

    Attributes (after build):
        index_: the FAISS index.
    """

    def __init__(self, factory: str, *, metric: str = "cosine", nprobe: int | None = None, seed: int = 0) -> None:
        check_metric(metric)
        if not isinstance(factory, str) or not factory:
            raise GalleryError(f"a FAISS factory string is needed, got {factory!r}")
        self.factory, self.metric, self.nprobe, self.seed = factory, metric, nprobe, seed

    def build(self, vectors: np.ndarray) -> FactoryIndex:
        """Train (on at most 40 vectors per list) and fill the index. Returns self.

        Raises:
            GalleryError: a factory string FAISS does not take.
        """
        import faiss

        metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        try:
            index = faiss.index_factory(vectors.shape[1], self.factory, metric)
        except RuntimeError as e:
            raise GalleryError(f"FAISS does not take the factory string {self.factory!r}: {str(e).splitlines()[0]}") from None
        if not index.is_trained:
            ivf = faiss.try_extract_index_ivf(index)
            size = min(len(vectors), TRAIN_PER_LIST * (ivf.nlist if ivf is not None else 256))
            rng = np.random.default_rng(self.seed)
            index.train(vectors[np.sort(rng.choice(len(vectors), size, replace=False))])
        index.add(vectors)
        self.index_ = index
        self.set_search_params(nprobe=self.nprobe)
        return self

    def set_search_params(self, *, nprobe: int | None = None) -> None:
        """Set the lists visited per query (IVF indexes only).

        Args:
            nprobe: lists per query (None: unchanged).
        """
        import faiss

        if nprobe is None:
            return
        self.nprobe = int(nprobe)
        ivf = faiss.try_extract_index_ivf(self.index_) if hasattr(self, "index_") else None
        if ivf is not None:
            ivf.nprobe = self.nprobe

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows per query.

        Args:
            queries: prefix vectors (normalised by the caller for cosine).
            k: rows per query.

        Returns:
            FAISS's (scores, rows): inner products for cosine, squared L2 otherwise; -1 rows where fewer.

        Shapes: queries (Q, d) -> (Q, k), (Q, k).
        """
        return self.index_.search(np.ascontiguousarray(queries, np.float32), k)

    def memory_bytes(self) -> int:
        """The index's size as FAISS serialises it."""
        import faiss

        return int(faiss.serialize_index(self.index_).nbytes)
