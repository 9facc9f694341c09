"""The answer for one pair (:class:`PairDecision`), shared by the torch
:class:`~siamkit.verify.Verifier` and the torch-free ONNX verifier
(:mod:`siamkit.export.runtime`); needs only the standard library."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PairDecision"]


@dataclass
class PairDecision:
    """The answer for one pair.

    Attributes:
        distance: lower = more similar (a pair-head model: the negative logit).
        score: higher = more similar, in [0, 1]; a display score, not a probability.
        same: the decision at the calibrated threshold (None: model not calibrated).
        confidence: calibrated probability that the pair is the same (None: not calibrated).
        threshold: the calibrated distance threshold (accept when distance <= threshold).
    """

    distance: float
    score: float
    same: bool | None = None
    confidence: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
