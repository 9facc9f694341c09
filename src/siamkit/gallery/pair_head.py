"""A learned pair head that re-ranks a gallery search's closest candidates.

A small cross network on two embeddings (``[|a - b|, a * b]``, symmetric in the pair)
-> one logit "same identity", trained on embeddings of the TRAINING identities: every
anchor's same-class rows are the positives, its closest rows of other classes (the
negatives a search actually returns) the negatives. As OML's Siamese re-ranker, it is
applied only to the top of a search: :meth:`PairHeadReranker.rerank` orders the first
``top`` candidates of each query by ``distance - blend * logit`` (``blend`` 0: the head
is off; chosen on held-out identities by :meth:`PairHeadReranker.choose_blend`). The head
works on the full (normalised) embeddings; :class:`~siamkit.gallery.two_stage.TwoStageIndex`
takes it as ``reranker=``. Stored as safetensors + JSON (:meth:`save` / :meth:`load`).

``bench/bench_pair_head.py`` measures R@1 on Omniglot with and without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from .._atomic import write_json_atomic
from ..errors import GalleryError
from ..io import load_state_dict, save_state_dict
from ..versioned import read_versioned_json
from .exact import as_vectors, normalize_rows

__all__ = ["PairHeadReranker", "pair_features", "recall_at_1"]

FORMAT = "siamkit-pair-head"
VERSION = 1
BLENDS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def pair_features(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The head's input for pairs (a_i, b_i): ``[|a - b|, a * b]``.

    Args:
        a: one side of each pair.
        b: the other side (same shape).

    Shapes:
        (..., D), (..., D) -> (..., 2D).

    Returns:
        The features (symmetric: swapping a and b gives the same).
    """
    return torch.cat([(a - b).abs(), a * b], dim=-1)


def _mlp(dim: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def _training_pairs(e: np.ndarray, y: np.ndarray, negatives: int, positives: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchor rows, other rows, label) of every training pair (see the module docstring)."""
    et = torch.from_numpy(e)
    yt = torch.from_numpy(y)
    a_rows, b_rows, lab = [], [], []
    for s in range(0, len(e), 1024):
        sim = et[s : s + 1024] @ et.T
        same = yt[s : s + 1024, None] == yt[None, :]
        neg = sim.masked_fill(same, -np.inf).topk(negatives, dim=1).indices.numpy()
        for i in range(neg.shape[0]):
            a = s + i
            pos = np.flatnonzero(y == y[a])
            pos = pos[pos != a]
            if len(pos) > positives:
                pos = rng.choice(pos, positives, replace=False)
            a_rows += [a] * (len(pos) + negatives)
            b_rows += list(pos) + list(neg[i])
            lab += [1.0] * len(pos) + [0.0] * negatives
    return np.asarray(a_rows), np.asarray(b_rows), np.asarray(lab, np.float32)


def recall_at_1(rows: np.ndarray, gallery_labels: Any, query_labels: Any) -> float:
    """The fraction of queries whose first row has the query's label.

    Args:
        rows: the ranked gallery rows per query (-1: none).
        gallery_labels: the label of each gallery row.
        query_labels: the label of each query.

    Shapes:
        rows (Q, k) with k >= 1; labels (G,), (Q,).

    Returns:
        R@1 in [0, 1].
    """
    g, q = np.asarray(gallery_labels), np.asarray(query_labels)
    top = rows[:, 0]
    return float(np.mean((top >= 0) & (g[np.maximum(top, 0)] == q)))


class PairHeadReranker:
    """A learned pair head over the top candidates of a search (see the module docstring).

    Args:
        hidden: width of the head's two hidden layers.
        negatives: the closest other-class rows per training anchor.
        positives: same-class rows per training anchor (at most).
        epochs: passes over the training pairs.
        lr: Adam's learning rate.
        batch_size: pairs per step.
        top: candidates per query the head re-orders.
        blend: the weight of the logit in ``distance - blend * logit`` (0: the head is off).
        seed: seeds pair sampling and the head's initialisation.

    Attributes (after fit):
        head_ (nn.Module), dim_ (int): the embedding size it was trained on.
        train_loss_ (float): the last epoch's mean loss.
    """

    def __init__(self, *, hidden: int = 128, negatives: int = 10, positives: int = 4, epochs: int = 20, lr: float = 1e-3,
                 batch_size: int = 2048, top: int = 10, blend: float = 0.1, seed: int = 0) -> None:
        for name, v in (("hidden", hidden), ("negatives", negatives), ("positives", positives), ("epochs", epochs),
                        ("batch_size", batch_size), ("top", top)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise GalleryError(f"{name} must be a positive integer, got {v!r}")
        if not blend >= 0:
            raise GalleryError(f"blend must be >= 0, got {blend!r}")
        self.hidden, self.negatives, self.positives, self.epochs = hidden, negatives, positives, epochs
        self.lr, self.batch_size, self.top, self.blend, self.seed = float(lr), batch_size, top, float(blend), seed

    def fit(self, embeddings: Any, labels: Any) -> PairHeadReranker:
        """Train the head on the training identities' embeddings.

        Args:
            embeddings: one row per image (normalised here).
            labels: the identity of each row (at least 2 identities, some with 2+ rows).

        Returns:
            self.

        Shapes: embeddings (N, D), labels (N,).

        Raises:
            GalleryError: mismatched lengths, one identity, or no identity with two rows.
        """
        e = normalize_rows(as_vectors(embeddings, "embeddings")).astype(np.float32)
        y = np.asarray(labels)
        if y.shape != (len(e),):
            raise GalleryError(f"{len(y)} labels for {len(e)} embeddings")
        counts = np.unique(y, return_counts=True)[1]
        if len(counts) < 2 or counts.max() < 2:
            raise GalleryError("the pair head needs 2+ identities and some identity with 2+ embeddings")
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        a, b, lab = _training_pairs(e, y, min(self.negatives, int(len(e) - counts.max())), self.positives, rng)
        feats = pair_features(torch.from_numpy(e[a]), torch.from_numpy(e[b]))
        target = torch.from_numpy(lab)
        pos_weight = torch.tensor((lab == 0).sum() / max(1.0, (lab == 1).sum()))
        self.dim_ = e.shape[1]
        self.head_ = _mlp(self.dim_, self.hidden)
        opt = torch.optim.Adam(self.head_.parameters(), lr=self.lr, weight_decay=1e-4)
        for _ in range(self.epochs):
            perm = torch.randperm(len(target))
            total = 0.0
            for s in range(0, len(perm), self.batch_size):
                idx = perm[s : s + self.batch_size]
                loss = F.binary_cross_entropy_with_logits(self.head_(feats[idx])[:, 0], target[idx], pos_weight=pos_weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self.train_loss_ = total / len(perm)
        self.head_.eval()
        return self

    def _check(self) -> None:
        if not hasattr(self, "head_"):
            raise GalleryError("the pair head is not trained; call fit() or load() first")

    def logits(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """The head's "same identity" logit of each query with each of its candidates.

        Args:
            queries: normalised query embeddings.
            candidates: normalised candidate embeddings per query.

        Shapes: queries (Q, D), candidates (Q, C, D) -> (Q, C).

        Returns:
            The logits (higher = more likely the same identity).
        """
        self._check()
        if queries.shape[-1] != self.dim_ or candidates.shape[-1] != self.dim_:
            raise GalleryError(f"the pair head was trained on {self.dim_}-value embeddings, got {queries.shape[-1]}")
        q = torch.from_numpy(np.ascontiguousarray(queries, np.float32))[:, None, :].expand(-1, candidates.shape[1], -1)
        with torch.no_grad():
            return self.head_(pair_features(q, torch.from_numpy(np.ascontiguousarray(candidates, np.float32))))[..., 0].numpy()

    def rerank(self, queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray, distances: np.ndarray,
               blend: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Re-order the first ``top`` rows of each query by ``distance - blend * logit``.

        Args:
            queries: normalised query embeddings.
            vectors: the normalised gallery embeddings (the rows index them).
            rows: a search's ranked rows (-1: none), at least ``top`` per query or fewer.
            distances: their distances (lower = closer).
            blend: overrides the fitted / given ``blend``.

        Shapes: queries (Q, D), vectors (N, D), rows and distances (Q, k) -> (Q, k), (Q, k).

        Returns:
            (distances, rows) in the new order; the distances stay the search's.
        """
        w = self.blend if blend is None else float(blend)
        t = min(self.top, rows.shape[1])
        if w == 0 or t < 2:
            return distances, rows
        head_r, head_d = rows[:, :t], distances[:, :t]
        valid = head_r >= 0
        cand = np.take(vectors, np.where(valid, head_r, 0).ravel(), axis=0).reshape(*head_r.shape, -1)
        key = np.where(valid, head_d - w * self.logits(queries, cand), np.inf)
        order = np.argsort(key, axis=1, kind="stable")
        out_r, out_d = rows.copy(), distances.copy()
        out_r[:, :t] = np.take_along_axis(head_r, order, 1)
        out_d[:, :t] = np.take_along_axis(head_d, order, 1)
        return out_d, out_r

    def choose_blend(self, queries: Any, query_labels: Any, gallery: Any, gallery_labels: Any,
                     blends: tuple[float, ...] = BLENDS) -> dict[float, float]:
        """Set ``blend`` to the value of ``blends`` with the best R@1 on held-out identities.

        Exact cosine search of the queries in the gallery, its top ``top`` re-ordered by
        each blend; ties go to the smaller blend (0 = off).

        Args:
            queries: held-out query embeddings (identities the head was not trained on).
            query_labels: their identities.
            gallery: held-out gallery embeddings.
            gallery_labels: their identities.
            blends: the values tried.

        Returns:
            blend -> R@1 (``self.blend`` is set to the best).
        """
        q = normalize_rows(as_vectors(queries, "queries")).astype(np.float32)
        g = normalize_rows(as_vectors(gallery, "gallery")).astype(np.float32)
        dist = 1.0 - q @ g.T
        t = min(self.top, g.shape[0])
        rows = np.argsort(dist, axis=1)[:, :t]
        d = np.take_along_axis(dist, rows, 1)
        scores = {float(b): recall_at_1(self.rerank(q, g, rows, d, blend=b)[1], gallery_labels, query_labels) for b in blends}
        self.blend = max(scores, key=lambda b: (scores[b], -b))
        return scores

    def save(self, folder: str | Path) -> Path:
        """Write ``pair_head.safetensors`` + ``pair_head.json`` into ``folder``. Returns the folder."""
        self._check()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_state_dict(self.head_.state_dict(), folder / "pair_head.safetensors")
        write_json_atomic(folder / "pair_head.json", {"format": FORMAT, "format_version": VERSION,
                                                      "siamkit_version": __version__, "dim": self.dim_,
                                                      "hidden": self.hidden, "top": self.top, "blend": self.blend})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> PairHeadReranker:
        """Read what :meth:`save` wrote.

        Raises:
            ModelFileError: a missing or damaged file (also of another format or version).
        """
        folder = Path(folder)
        meta = read_versioned_json(folder / "pair_head.json", fmt=FORMAT, version=VERSION, what="pair head")
        out = cls(hidden=int(meta["hidden"]), top=int(meta["top"]), blend=float(meta["blend"]))
        out.dim_ = int(meta["dim"])
        out.head_ = _mlp(out.dim_, out.hidden)
        out.head_.load_state_dict(load_state_dict(folder / "pair_head.safetensors"))
        out.head_.eval()
        return out
