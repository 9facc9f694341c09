"""Nearest-neighbour search backends of the gallery: exact, and FAISS (flat, HNSW, IVF).

Every index answers ``search(queries, k) -> (distances, rows)`` with distances
*lower = closer* in the index's metric and ``rows`` the positions of the vectors in the
order they were added (-1 where fewer than ``k`` exist):

- :class:`ExactIndex` (:mod:`siamkit.gallery.exact`, importable from here): brute
  force with torch. With ``distance_fn`` it ranks by any distance, e.g. the network's
  own (L1, or a learned pair head, which no vector index can serve); otherwise by
  ``metric``.
- :class:`FaissIndex`: ``kind="flat"`` (exact, FAISS), ``"hnsw"`` (graph, approximate)
  or ``"ivf"`` (inverted lists, approximate).

Metrics: ``"l2"`` (squared Euclidean) and ``"cosine"`` (``1 - x.y`` on L2-normalised
vectors, searched as an inner product). :func:`metric_for_network` says which one serves
a network: cosine for L2-normalised networks and the cosine distance (same ranking as
Euclidean on the unit sphere), L2 for (squared) Euclidean, and None (exact search with
the network's own distance) for L1 and pair-head networks.

:func:`choose_index` picks the kind from the number of vectors: exact up to 100,000, IVF
beyond (thresholds below, chosen from ``bench/bench_search.py``; any call can override it).

Index files are a cache: :meth:`FaissIndex.save` writes the index and a JSON sidecar that
records the state it matches (e.g. the gallery's write generation) and the file's
sha256 (:mod:`siamkit.gallery.index_cache`); :meth:`FaissIndex.load` returns False
(rebuild!) unless the sidecar matches the expected state and the file is intact.

Example:
    >>> import numpy as np
    >>> from siamkit.gallery.search import FaissIndex, ExactIndex
    >>> x = np.random.default_rng(0).standard_normal((1000, 16)).astype("float32")
    >>> exact = ExactIndex(metric="l2").build(x)
    >>> hnsw = FaissIndex(kind="hnsw", metric="l2").build(x)
    >>> d, rows = exact.search(x[:3], 1)
    >>> rows[:, 0].tolist()
    [0, 1, 2]
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import numpy as np

from ..errors import GalleryError
from .exact import METRICS, ExactIndex, as_vectors, check_metric, normalize_rows
from .index_cache import file_intact, read_sidecar, write_index_cache

__all__ = [
    "ExactIndex",
    "FaissIndex",
    "choose_index",
    "metric_for_network",
    "recall_at_k",
    "EXACT_MAX",
    "HNSW_DEFAULTS",
    "IVF_NPROBE",
    "INDEX_KINDS",
    "METRICS",
]

logger = logging.getLogger(__name__)

INDEX_KINDS = ("exact", "flat", "hnsw", "ivf")

#: choose_index: exact search up to this many vectors, IVF beyond. Exact search of 100k
#: 128-d vectors costs 1-2 ms a query on 2 shared cores, needs no build and has perfect
#: recall; beyond, IVF is >= 50x faster than exact at recall@10 >= 0.999 on clustered
#: data, and builds in about a minute at 1M (bench/bench_search.py).
EXACT_MAX = 100_000

#: HNSW parameters when asked for (index="hnsw"): M links per node, efConstruction the
#: build beam, efSearch the query beam. On clustered embeddings HNSW needs M=32 and a wide
#: beam to pass recall@10 0.95 at 1M (bench/bench_search.py), which is why the automatic
#: rule picks IVF.
HNSW_DEFAULTS: dict[str, int] = {"m": 32, "ef_construction": 40, "ef_search": 256}

#: IVF: nlist = the power of two nearest 4 sqrt(n) (1,024 at 100k, 4,096 at 1M; at most
#: n / 39 so that every list has training points), trained on 40 vectors per list;
#: nprobe lists visited per query (recall@10 >= 0.999 on both benchmark data sets).
IVF_NPROBE = 16
IVF_TRAIN_PER_LIST = 40


def choose_index(n: int, *, exact_max: int = EXACT_MAX, supports_faiss: bool = True) -> str:
    """The index kind for ``n`` vectors.

    Rule: ``"exact"`` up to ``exact_max`` vectors (default :data:`EXACT_MAX` = 100,000),
    ``"ivf"`` beyond (nlist ~ 4 sqrt(n), nprobe :data:`IVF_NPROBE`); always ``"exact"``
    when the metric is not one FAISS serves (``supports_faiss=False``: L1 or pair-head
    networks). Why IVF rather than HNSW: gallery embeddings are clustered (by identity),
    and on clustered data IVF's exhaustive coarse step finds the right clusters, while an
    HNSW graph, whose links stay inside clusters, needs a large M, a wide search beam and
    a 3-minute build to pass recall@10 0.95 at 1M (bench/bench_search.py). Override by
    passing ``index="flat" | "hnsw" | "ivf" | "exact"`` to the gallery.

    Args:
        n: the number of vectors.
        exact_max: search exactly up to this many.
        supports_faiss: whether a FAISS metric ranks like the network's distance.

    Returns:
        ``"exact"`` or ``"ivf"``.

    Example:
        >>> choose_index(5_000), choose_index(2_000_000), choose_index(2_000_000, supports_faiss=False)
        ('exact', 'ivf', 'exact')
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not supports_faiss or n <= exact_max:
        return "exact"
    return "ivf"


def metric_for_network(network: Any) -> str | None:
    """The vector-index metric that ranks like ``network``'s distance, or None when only
    exact search with the network's own distance is right (pair head, L1)."""
    if getattr(network, "pair_head", None) is not None:
        return None
    name = network.distance.name
    if name == "l1":
        return None
    if network.normalize or name == "cosine":
        return "cosine"
    if name in ("euclidean", "sqeuclidean"):
        return "l2"
    return None


# --------------------------------------------------------------------------- FAISS


def _faiss() -> Any:
    try:
        import faiss  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise GalleryError(f"FAISS is not installed (pip install faiss-cpu): {e}") from None
    return faiss


def _auto_nlist(n: int) -> int:
    nlist = 2 ** max(0, round(math.log2(max(1.0, 4.0 * math.sqrt(max(n, 1))))))
    return int(max(1, min(nlist, n // 39 if n >= 39 else 1)))


class FaissIndex:
    """A FAISS index: ``kind="flat"`` (exact), ``"hnsw"`` or ``"ivf"`` (approximate).

    Args:
        kind: ``"flat"`` (IndexFlat), ``"hnsw"`` (IndexHNSWFlat) or ``"ivf"``
            (IndexIVFFlat with a flat coarse quantizer).
        metric: ``"l2"`` (squared Euclidean) or ``"cosine"`` (inner product on
            L2-normalised vectors; distances are ``1 - x.y``).
        m, ef_construction, ef_search: HNSW links per node, build beam, search beam
            (default :data:`HNSW_DEFAULTS`).
        nlist, nprobe: IVF lists (None: the power of two nearest ``4 sqrt(n)``) and
            lists visited per query (None: :data:`IVF_NPROBE`, at most nlist).
        train_size: IVF: vectors used to train the coarse quantizer (None:
            ``min(n, 40 nlist)``); seed: of that sample.

    Attributes (after build):
        index_: the FAISS index. build_seconds_: time of the last build.
    """

    def __init__(
        self,
        *,
        kind: str = "hnsw",
        metric: str = "l2",
        m: int | None = None,
        ef_construction: int | None = None,
        ef_search: int | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        train_size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.kind = kind
        self.metric = metric
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.nlist = nlist
        self.nprobe = nprobe
        self.train_size = train_size
        self.seed = seed

    # ----------------------------------------------------------------- build

    def _check(self) -> None:
        if self.kind not in ("flat", "hnsw", "ivf"):
            raise GalleryError(f"FAISS index kind must be flat, hnsw or ivf, got {self.kind!r}")
        check_metric(self.metric)
        for name in ("m", "ef_construction", "ef_search", "nlist", "nprobe", "train_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise GalleryError(f"{name} must be a positive integer, got {v!r}")

    def _faiss_metric(self) -> int:
        faiss = _faiss()
        return faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2

    def _prep(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(normalize_rows(a), dtype=np.float32) if self.metric == "cosine" else a

    def build_params(self, n: int | None = None) -> dict[str, Any]:
        """The parameters the index structure depends on (defaults filled in; IVF's
        automatic nlist needs ``n``, or the built index)."""
        p: dict[str, Any] = {"kind": self.kind, "metric": self.metric}
        if self.kind == "hnsw":
            p["m"] = self.m or HNSW_DEFAULTS["m"]
            p["ef_construction"] = self.ef_construction or HNSW_DEFAULTS["ef_construction"]
        elif self.kind == "ivf":
            if hasattr(self, "index_"):
                p["nlist"] = int(self.index_.nlist)
            else:
                p["nlist"] = self.nlist or (_auto_nlist(n) if n is not None else None)
        return p

    def search_params(self) -> dict[str, Any]:
        """The query-time parameters (efSearch, nprobe): changeable without a rebuild."""
        if self.kind == "hnsw":
            return {"ef_search": self.ef_search or HNSW_DEFAULTS["ef_search"]}
        if self.kind == "ivf":
            nlist = int(self.index_.nlist) if hasattr(self, "index_") else (self.nlist or None)
            nprobe = self.nprobe or IVF_NPROBE
            return {"nprobe": min(nprobe, nlist) if nlist else nprobe}
        return {}

    def resolved_params(self, n: int | None = None) -> dict[str, Any]:
        """Build and search parameters together."""
        return {**self.build_params(n), **self.search_params()}

    def build(self, vectors: Any) -> FaissIndex:
        """Build the index on ``vectors`` (N, D) (IVF: also trains it). Returns self."""
        self._check()
        faiss = _faiss()
        a = self._prep(as_vectors(vectors))
        n, d = a.shape
        t0 = time.perf_counter()
        p = self.build_params(n)
        metric = self._faiss_metric()
        if self.kind == "flat":
            index = faiss.IndexFlat(d, metric)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, p["m"], metric)
            index.hnsw.efConstruction = p["ef_construction"]
        else:
            nlist = p["nlist"]
            quantizer = faiss.IndexFlat(d, metric)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, metric)
            index.own_fields = True
            quantizer.this.disown()
            train = a
            size = self.train_size or min(n, IVF_TRAIN_PER_LIST * nlist)
            if n == 0:
                raise GalleryError("an IVF index needs vectors to train on")
            if size < n:
                rng = np.random.default_rng(self.seed)
                train = a[np.sort(rng.choice(n, size, replace=False))]
            index.cp.seed = self.seed
            index.train(train)
        if n:
            index.add(a)
        self.index_ = index
        self.dim_ = d
        self._apply_search_params()
        self.build_seconds_ = time.perf_counter() - t0
        return self

    def _apply_search_params(self) -> None:
        sp = self.search_params()
        if self.kind == "hnsw":
            self.index_.hnsw.efSearch = int(sp["ef_search"])
        elif self.kind == "ivf":
            self.index_.nprobe = int(sp["nprobe"])

    @property
    def ntotal(self) -> int:
        return int(self.index_.ntotal) if hasattr(self, "index_") else 0

    def add(self, vectors: Any) -> None:
        """Append vectors (IVF: assigned with the existing quantizer)."""
        a = self._prep(as_vectors(vectors))
        if not hasattr(self, "index_"):
            self.build(a)
            return
        if a.shape[1] != self.dim_:
            raise GalleryError(f"vectors have {a.shape[1]} dimensions, the index {self.dim_}")
        if a.shape[0]:
            self.index_.add(a)

    def outgrown(self, n: int) -> bool:
        """True when an IVF index with an automatic nlist was trained for far fewer
        vectors than ``n`` (the automatic nlist for n is at least twice the current one,
        i.e. about 4x the vectors): its lists are then too long; rebuild it."""
        if self.kind != "ivf" or self.nlist is not None or not hasattr(self, "index_"):
            return False
        return _auto_nlist(n) >= 2 * int(self.index_.nlist)

    def vectors(self) -> np.ndarray:
        """The stored vectors (N, D) (normalised for cosine), reconstructed from the index."""
        if self.ntotal == 0:
            return np.zeros((0, getattr(self, "dim_", 0)), dtype=np.float32)
        if self.kind == "ivf":
            self.index_.make_direct_map()
        return np.asarray(self.index_.reconstruct_n(0, self.ntotal), dtype=np.float32)

    def remove(self, rows: Any) -> None:
        """Remove vectors by row: rebuilds the index on the rest (rows renumbered in order).

        HNSW graphs do not support deletion; a rebuild keeps the graph's quality.
        """
        keep = np.ones(self.ntotal, dtype=bool)
        keep[np.asarray(rows, dtype=np.int64)] = False
        rest = self.vectors()[keep]
        self.build(rest)

    def set_search_params(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change HNSW's efSearch or IVF's nprobe on a built index.

        Args:
            ef_search: HNSW's search beam (None: unchanged).
            nprobe: IVF lists visited per query (None: unchanged).
        """
        if ef_search is not None:
            self.ef_search = ef_search
        if nprobe is not None:
            self.nprobe = nprobe
        self._check()
        if hasattr(self, "index_"):
            self._apply_search_params()

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest vectors of each query (approximate for hnsw / ivf).

        Args:
            queries: the query vectors.
            k: neighbours per query.

        Returns:
            (distances, rows): lower = closer (squared L2, or ``1 - x.y``); rows are the
            positions of the vectors in the order they were added.

        Shapes: queries (Q, D) -> distances float32 (Q, k), rows int64 (Q, k) (-1 and
        +inf where nothing was found).
        """
        q = self._prep(as_vectors(queries, "queries"))
        nq = q.shape[0]
        if not hasattr(self, "index_") or self.ntotal == 0 or nq == 0 or k < 1:
            return np.full((nq, max(k, 0)), np.inf, np.float32), np.full((nq, max(k, 0)), -1, np.int64)
        if q.shape[1] != self.dim_:
            raise GalleryError(f"queries have {q.shape[1]} dimensions, the index {self.dim_}")
        if self.kind == "hnsw":
            # FAISS's HNSW beam must be at least k wide to return k results
            self.index_.hnsw.efSearch = max(int(self.search_params()["ef_search"]), k)
        d, rows = self.index_.search(q, k)
        d = np.asarray(d, dtype=np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        if self.metric == "cosine":
            d = 1.0 - d
        d[rows < 0] = np.inf
        return d, rows

    def memory_bytes(self) -> int:
        """Size of the serialised index (vectors + graph / lists)."""
        return int(_faiss().serialize_index(self.index_).nbytes)

    # ----------------------------------------------------------------- cache files

    def save(self, path: str | os.PathLike[str], *, state: dict[str, Any]) -> None:
        """Write the index to ``path`` and a sidecar ``path + ".json"`` recording
        ``state`` (what the index matches), the parameters and the file's sha256
        (:func:`~siamkit.gallery.index_cache.write_index_cache`: both atomic; a crash
        between the two renames leaves a sidecar that :meth:`load` treats as stale).

        Args:
            path: the index file.
            state: what the index matches (JSON-able), compared by :meth:`load`.
        """
        faiss = _faiss()
        record = {"state": state, "params": self.build_params(self.ntotal), "ntotal": self.ntotal, "dim": self.dim_}
        write_index_cache(path, lambda tmp: faiss.write_index(self.index_, tmp), record)

    def load(self, path: str | os.PathLike[str], *, state: dict[str, Any]) -> bool:
        """Load the cached index at ``path`` if its sidecar matches ``state`` and these
        parameters and the file is intact; never raises for a bad cache.

        Args:
            path: the index file.
            state: what the index must match (as given to :meth:`save`).

        Returns:
            True when loaded; False (the caller rebuilds) when the files are missing,
            stale, damaged or from other parameters.
        """
        self._check()
        try:
            record = read_sidecar(path)
            if record is None or not self._record_matches(record, state, path):
                return False
            if not file_intact(path, record):
                logger.warning("index cache %s is damaged (size or checksum); rebuilding", path)
                return False
            index = _faiss().read_index(str(path))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            logger.info("index cache %s unusable (%s); rebuilding", path, e)
            return False
        if int(index.ntotal) != int(record["ntotal"]) or int(index.d) != int(record["dim"]):
            return False
        self.index_ = index
        self.dim_ = int(index.d)
        self.build_seconds_ = 0.0
        self._apply_search_params()
        return True

    def _record_matches(self, record: dict[str, Any], state: dict[str, Any], path: Any) -> bool:
        """Whether a sidecar is of ``state`` and of this index's build parameters."""
        if record.get("state") != json.loads(json.dumps(state)):
            logger.info("index cache %s is stale (another gallery state); rebuilding", path)
            return False
        want = self.build_params(int(record["ntotal"]))
        if self.kind == "ivf" and self.nlist is None:
            want["nlist"] = record["params"].get("nlist")  # automatic: whatever it was built with
        if record.get("params") != want:
            logger.info("index cache %s was built with other parameters; rebuilding", path)
            return False
        return True


def recall_at_k(approx_rows: np.ndarray, exact_rows: np.ndarray, k: int) -> float:
    """Mean fraction of each query's true ``k`` nearest found among the approximate ``k``.

    Args:
        approx_rows: the rows an approximate index returned (-1: none).
        exact_rows: the true nearest rows (-1: none).
        k: how many neighbours count.

    Returns:
        The mean recall (NaN without queries).

    Shapes: (Q, >=k), (Q, >=k) -> float.
    """
    a = np.asarray(approx_rows)[:, :k]
    e = np.asarray(exact_rows)[:, :k]
    if a.shape[0] == 0:
        return float("nan")
    hits = [(len(set(a[i].tolist()) & set(e[i].tolist()) - {-1})) / max(1, int((e[i] >= 0).sum())) for i in range(a.shape[0])]
    return float(np.mean(hits))
