"""The in-memory view of a gallery: every sample's embedding at one write generation, and
what queries derive from it (the rows of each identity, mean templates, name -> code).

A :class:`Snapshot` is what :meth:`~siamkit.gallery.store.GalleryStore.snapshot` reads in
one transaction. A :class:`SnapshotView` wraps it for searching and computes the derived
arrays once, on first use. After its own write a gallery derives the next view from the
current one (:meth:`SnapshotView.with_samples`, :meth:`SnapshotView.without_identity`)
instead of reading the whole file again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Snapshot", "SnapshotView"]


@dataclass
class Snapshot:
    """A consistent view of every sample's embedding at one generation.

    Attributes:
        generation: the write generation this view is of.
        sample_ids: int64 (N,), increasing (new samples always get larger ids).
        codes: int64 (N,), index into ``identities`` of each sample.
        identities: identity names; ``identities[codes[i]]`` owns sample i. Ordered by
            enrolment (SQLite rowid), so a newly enrolled identity is appended.
        embeddings: float32 (N, D).
    """

    generation: int
    sample_ids: np.ndarray
    codes: np.ndarray
    identities: list[str]
    embeddings: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


class SnapshotView:
    """A :class:`Snapshot` ready for searching.

    Args:
        snap: the snapshot (its embeddings are copied into a tensor).
        normalize: re-normalise mean templates (the network L2-normalises embeddings).

    Attributes:
        snap: the snapshot. embeddings: float32 tensor (N, D) of its embeddings.
    """

    def __init__(self, snap: Snapshot, *, normalize: bool = False) -> None:
        self.snap = snap
        self.normalize = normalize
        self.embeddings = torch.from_numpy(np.array(snap.embeddings, dtype=np.float32, copy=True))
        self._rows: list[np.ndarray] | None = None
        self._templates: torch.Tensor | None = None
        self._code_of: dict[str, int] | None = None

    @property
    def generation(self) -> int:
        return self.snap.generation

    @property
    def n_identities(self) -> int:
        return len(self.snap.identities)

    def code(self, identity: str) -> int | None:
        """The code of an identity (its index in ``snap.identities``), None: not enrolled."""
        if self._code_of is None:
            self._code_of = {name: i for i, name in enumerate(self.snap.identities)}
        return self._code_of.get(identity)

    def rows(self) -> list[np.ndarray]:
        """Per identity code: the rows of its samples (increasing)."""
        if self._rows is None:
            codes = self.snap.codes
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(self.n_identities + 1))
            self._rows = [order[bounds[i] : bounds[i + 1]] for i in range(self.n_identities)]
        return self._rows

    def templates(self) -> torch.Tensor:
        """Per identity code: the mean of its samples' embeddings (re-normalised when
        ``normalize``).

        Shapes: -> float32 (identities, D).
        """
        if self._templates is None:
            n_id, d = self.n_identities, self.embeddings.shape[1]
            codes = torch.from_numpy(self.snap.codes)
            sums = torch.zeros(n_id, d, dtype=torch.float64)
            sums.index_add_(0, codes, self.embeddings.double())
            counts = torch.bincount(codes, minlength=n_id).clamp_min(1)
            t = (sums / counts[:, None]).float()
            if self.normalize:
                t = torch.nn.functional.normalize(t, dim=1)
            self._templates = t
        return self._templates

    def vectors(self, rule: str) -> torch.Tensor:
        """What the scoring rule searches: every sample (``"best"``) or the templates."""
        return self.embeddings if rule == "best" else self.templates()

    def with_samples(self, generation: int, identity: str, sample_ids: list[int], embeddings: np.ndarray) -> SnapshotView:
        """The view after adding samples of ``identity`` (appended when new).

        Args:
            generation: the generation of the write that added them.
            identity: their identity.
            sample_ids: their new ids (larger than every existing one).
            embeddings: float32 (len(sample_ids), D).

        Returns:
            A new view (this one is unchanged).
        """
        snap = self.snap
        names = list(snap.identities)
        code = self.code(identity)
        if code is None:
            names.append(identity)
            code = len(names) - 1
        new = Snapshot(
            generation,
            np.concatenate([snap.sample_ids, np.asarray(sample_ids, dtype=np.int64)]),
            np.concatenate([snap.codes, np.full(len(sample_ids), code, dtype=np.int64)]),
            names,
            np.concatenate([snap.embeddings, embeddings.astype(np.float32)]),
        )
        return SnapshotView(new, normalize=self.normalize)

    def without_identity(self, generation: int, code: int) -> SnapshotView:
        """The view after removing the identity ``code`` and its samples.

        Args:
            generation: the generation of the write that removed it.
            code: its code in this view.

        Returns:
            A new view (later identities' codes move down by one).
        """
        snap = self.snap
        keep = snap.codes != code
        codes = snap.codes[keep]
        codes = codes - (codes > code)
        names = snap.identities[:code] + snap.identities[code + 1 :]
        return SnapshotView(Snapshot(generation, snap.sample_ids[keep], codes, names, snap.embeddings[keep]), normalize=self.normalize)
