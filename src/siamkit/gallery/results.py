"""What the gallery answers: identity records, 1:1 verifications and 1:N identifications.

Plain dataclasses with ``to_dict()`` (what the CLI prints and the service returns).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["UNKNOWN", "SampleInfo", "IdentityRecord", "GalleryVerification", "Candidate", "Identification"]

#: the decision of :meth:`~siamkit.gallery.Gallery.identify` for a probe that matches no
#: enrolled identity
UNKNOWN = "unknown"


@dataclass
class SampleInfo:
    """One enrolled sample: its id, metadata, time, and whether its input is kept."""

    id: int
    metadata: dict[str, Any]
    created: float
    has_input: bool
    format: str | None = None


@dataclass
class IdentityRecord:
    """An enrolled identity (``samples`` is filled by
    :meth:`~siamkit.gallery.Gallery.get`, empty in :meth:`~siamkit.gallery.Gallery.list`)."""

    identity: str
    metadata: dict[str, Any]
    n_samples: int
    created: float
    updated: float
    samples: list[SampleInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GalleryVerification:
    """The answer of :meth:`~siamkit.gallery.Gallery.verify` (1:1 against a record).

    Attributes:
        identity: the claimed identity.
        distance: lower = closer, by the scoring rule (best: to the closest sample;
            mean: to the mean template).
        score: higher = more similar (the network's display score of ``distance``).
        same: the decision at the calibrated threshold (None: model not calibrated).
        confidence: calibrated probability of "same" (None: not calibrated).
        threshold: the calibrated distance threshold (accept when distance <= threshold).
        sample_id: the enrolled sample closest to the probe; sample_distance: its distance.
        n_samples: samples of the identity; scoring: the rule used.
        negative_distance: the probe's distance to the closest confirmed impostor of the
            identity (its negative templates, :mod:`siamkit.gallery.negatives`); None
            when it has none. ``same`` is False when it is not above ``distance``.
    """

    identity: str
    distance: float
    score: float
    same: bool | None
    confidence: float | None
    threshold: float | None
    sample_id: int
    sample_distance: float
    n_samples: int
    scoring: str
    negative_distance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Candidate:
    """One ranked identity of :meth:`~siamkit.gallery.Gallery.identify`.

    Attributes:
        identity, distance (lower = closer), score (higher = more similar),
        sample_id: the identity's closest sample among those compared (None for the
        ``mean`` rule, which compares templates).
    """

    identity: str
    distance: float
    score: float
    sample_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Identification:
    """The answer of :meth:`~siamkit.gallery.Gallery.identify` (1:N, open set).

    Attributes:
        candidates: the best ``k`` identities, closest first.
        decision: the best candidate's identity, ``"unknown"`` when its distance is above
            the calibrated threshold (or the gallery is empty), None when the model is
            not calibrated (see ``note``).
        unknown: True / False, None when not calibrated.
        threshold: the calibrated threshold (None: not calibrated).
        confidence: calibrated probability that the best candidate is the same person.
        scoring: the rule used. index: the search index kind used.
        note: why there is no decision, if there is none.
    """

    candidates: list[Candidate]
    decision: str | None
    unknown: bool | None
    threshold: float | None
    confidence: float | None
    scoring: str
    index: str
    note: str | None = None

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
