"""Ranking identities for a probe, and the calibrated decisions on the ranking.

The *scoring rule* says how an identity is compared with a probe: ``"best"`` = the
distance to its closest sample; ``"mean"`` = the distance to the mean template of its
samples. A search index only proposes candidates; every distance reported is recomputed
with the network, pair by pair (:func:`paired_distances`), exactly as a
:class:`~siamkit.verify.Verifier` computes it, so the calibrated threshold means the same
thing here. ``identify`` is open-set: :func:`decide` answers ``"unknown"`` when the best
candidate is above the threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..calibration import Calibrator
from ..errors import GalleryError
from .exact import ExactIndex
from .results import UNKNOWN, Candidate, GalleryVerification, Identification
from .snapshot import SnapshotView

__all__ = [
    "SCORING_RULES",
    "Ranked",
    "check_rule",
    "check_k",
    "paired_distances",
    "query_chunks",
    "best_per_identity",
    "rank",
    "candidates",
    "decide",
    "verification",
]

SCORING_RULES = ("best", "mean")
#: one probe's ranking: (identity code, distance, closest row or None) closest first
Ranked = list[tuple[int, float, int | None]]


def check_rule(rule: str | None) -> str:
    """``rule`` when it is a scoring rule (:data:`SCORING_RULES`), else GalleryError."""
    if rule not in SCORING_RULES:
        raise GalleryError(f"scoring must be one of {list(SCORING_RULES)}, got {rule!r}")
    return str(rule)


def check_k(k: Any) -> int:
    """``k`` as an int when it is a positive integer, else GalleryError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise GalleryError(f"k must be a positive integer, got {k!r}")
    return int(k)


def paired_distances(network: Any, q: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """The network's distances of one query to vectors, pair by pair, exactly as a
    Verifier computes a pair.

    Args:
        network: the :class:`~siamkit.network.SiameseNetwork`.
        q: the query embedding.
        vectors: the embeddings to compare it with.

    Returns:
        The distances (lower = closer).

    Shapes:
        q (1, D), vectors (M, D) -> (M,).
    """
    with torch.no_grad():
        if vectors.shape[0] == 0:
            return vectors.new_zeros(0)
        return network.embedding_distance(q.expand(vectors.shape[0], -1), vectors).float()


def query_chunks(n_queries: int, n_rows: int, max_elems: int = 1 << 24) -> list[slice]:
    """Slices of the queries such that a chunk's distance matrix holds about ``max_elems``.

    Args:
        n_queries: queries.
        n_rows: vectors each query is compared with.
        max_elems: distances per chunk.

    Returns:
        Consecutive slices covering ``range(n_queries)``.
    """
    step = max(1, max_elems // max(1, n_rows))
    return [slice(i, min(n_queries, i + step)) for i in range(0, n_queries, step)]


def best_per_identity(rows: np.ndarray, d: np.ndarray, codes: np.ndarray, k: int) -> Ranked:
    """The closest row of each identity, and the ``k`` closest identities.

    Args:
        rows: the rows compared.
        d: their distances.
        codes: every row's identity code.
        k: identities to return.

    Returns:
        (code, distance, row), closest first.
    """
    order = np.argsort(d, kind="stable")
    c_sorted = codes[rows[order]]
    _, first = np.unique(c_sorted, return_index=True)
    best = order[first]
    best = best[np.argsort(d[best], kind="stable")][:k]
    return [(int(codes[rows[j]]), float(d[j]), int(rows[j])) for j in best]


def rank(index: Any, view: SnapshotView, network: Any, q: torch.Tensor, k: int, rule: str) -> list[Ranked]:
    """Per query: the ``k`` closest identities by ``rule``.

    Args:
        index: the rule's search index (over samples for best, templates for mean).
        view: the gallery's view the index was built from (at least one identity).
        network: the model (exact distances).
        q: query embeddings.
        k: identities per query (at most the identities enrolled).
        rule: ``"best"`` or ``"mean"``.

    Returns:
        Per query: [(identity code, distance, best row or None)] closest first.

    Shapes:
        q (Q, D).
    """
    k = min(k, view.n_identities)
    if rule == "mean":
        return _rank_templates(index, view, network, q, k)
    return _rank_samples(index, view, network, q, k)


def _rank_templates(index: Any, view: SnapshotView, network: Any, q: torch.Tensor, k: int) -> list[Ranked]:
    n_id = view.n_identities
    out: list[Ranked] = []
    if isinstance(index, ExactIndex):
        for s in query_chunks(q.shape[0], n_id):
            v, c = torch.topk(index.distances(q[s].numpy()), k, dim=1, largest=False, sorted=True)
            out += [[(int(c[i, j]), float(v[i, j]), None) for j in range(k)] for i in range(v.shape[0])]
        return out
    templates = view.templates()
    _, cand = index.search(q.numpy(), min(n_id, max(2 * k, k + 16)))
    for i in range(q.shape[0]):
        codes = np.unique(cand[i][cand[i] >= 0])
        d = paired_distances(network, q[i : i + 1], templates[torch.from_numpy(codes)]).numpy()
        order = np.argsort(d, kind="stable")[:k]
        out.append([(int(codes[j]), float(d[j]), None) for j in order])
    return out


def _rank_samples(index: Any, view: SnapshotView, network: Any, q: torch.Tensor, k: int) -> list[Ranked]:
    codes = view.snap.codes
    out: list[Ranked] = []
    if isinstance(index, ExactIndex):
        every = np.arange(index.ntotal)
        for s in query_chunks(q.shape[0], index.ntotal):
            d_all = index.distances(q[s].numpy()).numpy()
            out += [best_per_identity(every, d_all[i], codes, k) for i in range(d_all.shape[0])]
        return out
    s_max = int(np.bincount(codes).max()) if codes.size else 1
    rows_of = view.rows()
    for i in range(q.shape[0]):
        cand_codes = _candidate_codes(index, q[i : i + 1], codes, k, s_max)
        # exact distances to every sample of the candidate identities
        cand_rows = np.concatenate([rows_of[c] for c in cand_codes]) if len(cand_codes) else np.zeros(0, np.int64)
        d = paired_distances(network, q[i : i + 1], view.embeddings[torch.from_numpy(cand_rows)]).numpy()
        out.append(best_per_identity(cand_rows, d, codes, k))
    return out


def _candidate_codes(index: Any, q1: torch.Tensor, codes: np.ndarray, k: int, s_max: int) -> np.ndarray:
    """The identities among an approximate index's nearest samples of one query,
    widening the search until there are ``k`` of them (or every sample is found)."""
    n = index.ntotal
    kk = min(n, min(4096, max(k * s_max, 4 * k, 32)))
    while True:
        _, rows = index.search(q1.numpy(), kk)
        rows = rows[0][rows[0] >= 0]
        cand_codes = np.unique(codes[rows])
        if len(cand_codes) >= k or kk >= n:
            return cand_codes
        kk = min(n, kk * 2)


def candidates(ranked: Ranked, view: SnapshotView, network: Any) -> list[Candidate]:
    """One probe's ranking as :class:`Candidate` objects (names, display scores, sample ids).

    Args:
        ranked: the probe's ranking (see :func:`rank`).
        view: the view it was ranked in.
        network: the model (its display score of a distance).

    Returns:
        The candidates, closest first.
    """
    names, sample_ids = view.snap.identities, view.snap.sample_ids
    dists = torch.tensor([d for _, d, _ in ranked], dtype=torch.float64)
    scores = network.distance_to_score(dists).tolist() if ranked else []
    return [
        Candidate(names[c], float(d), float(scores[i]), None if row is None else int(sample_ids[row]))
        for i, (c, d, row) in enumerate(ranked)
    ]


def decide(cands: list[Candidate], rule: str, kind: str, calibrator: Calibrator | None) -> Identification:
    """The open-set decision on one probe's candidates.

    Args:
        cands: the candidates, closest first (empty: an empty gallery).
        rule: the scoring rule used.
        kind: the index kind used.
        calibrator: the model's calibration (None: rank only, no decision).

    Returns:
        The :class:`Identification`: the best identity, ``"unknown"`` above the
        threshold, None without a calibration.
    """
    if calibrator is None:
        return Identification(
            cands, None, None, None, None, rule, kind,
            note="the model is not calibrated: candidates are ranked, but there is no threshold to decide "
            "between them and 'unknown' (run `siamkit calibrate`)",
        )
    thr = float(calibrator.threshold_)
    if not cands:
        return Identification(cands, UNKNOWN, True, thr, None, rule, kind, note="the gallery is empty")
    top = cands[0]
    conf = float(calibrator.confidence([top.distance])[0])
    known = bool(calibrator.decide([top.distance])[0])
    return Identification(cands, top.identity if known else UNKNOWN, not known, thr, conf, rule, kind)


def verification(
    identity: str, code: int, q: torch.Tensor, view: SnapshotView, network: Any, calibrator: Calibrator | None, rule: str
) -> GalleryVerification:
    """1:1: the probe against one enrolled identity.

    Args:
        identity: the claimed identity.
        code: its code in ``view``.
        q: the probe's embedding.
        view: the gallery's view.
        network: the model.
        calibrator: the model's calibration (None: no decision).
        rule: the scoring rule.

    Returns:
        The :class:`GalleryVerification`.

    Shapes:
        q (1, D).
    """
    rows = view.rows()[code]
    d_rows = paired_distances(network, q, view.embeddings[torch.from_numpy(rows)])
    j = int(torch.argmin(d_rows))
    sample_id, sample_d = int(view.snap.sample_ids[rows[j]]), float(d_rows[j])
    dist = sample_d if rule == "best" else float(paired_distances(network, q, view.templates()[code : code + 1])[0])
    score = float(network.distance_to_score(torch.tensor([dist], dtype=torch.float64))[0])
    same = conf = thr = None
    if calibrator is not None:
        same = bool(calibrator.decide([dist])[0])
        conf = float(calibrator.confidence([dist])[0])
        thr = float(calibrator.threshold_)
    return GalleryVerification(
        identity=identity, distance=dist, score=score, same=same, confidence=conf, threshold=thr,
        sample_id=sample_id, sample_distance=sample_d, n_samples=int(len(rows)), scoring=rule,
    )
