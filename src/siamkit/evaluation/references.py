"""Writer-dependent verification: decide from K enrolled references, as banks do.

A *trial* is one writer with K of its genuine signatures enrolled as references; every
other genuine signature of that writer is a questioned "same", every skilled forgery of
it a questioned "different". A questioned signature's distance to the writer is its K
distances to the references combined by a *rule*:

- ``"best"``: the smallest (the closest reference);
- ``"mean"``: the mean of the K distances;
- ``"learned"``: a logistic regression on the closest, mean and farthest distance, fitted on
  held-out writers' trials (:mod:`siamkit.evaluation.reference_rule`; it lives in the
  reference calibration, so :func:`combine` takes only the fixed rules).

The same rules decide ``siamkit gallery verify --rule`` (:mod:`siamkit.gallery.references`),
and the threshold of a rule is fitted on held-out writers' trials
(:func:`siamkit.gallery.references.fit_reference_calibration`). Distances of any kind can
be combined (a model's, raw pixels', a shortcut probe's): the caller passes a function of
index pairs.

Example:
    >>> import torch
    >>> from siamkit.evaluation.references import combine
    >>> combine(torch.tensor([[0.2, 0.6], [0.5, 0.1]]), "mean")
    tensor([0.4000, 0.3000])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import DataError
from .signatures import per_writer_eer
from .verification import verification_report

__all__ = [
    "ALL_RULES", "REFERENCE_RULES", "ReferenceTrials", "combine", "reference_trials", "trial_distance_matrix", "trial_distances",
    "writer_dependent_report",
]

logger = logging.getLogger(__name__)

#: how the K distances to the references become one
REFERENCE_RULES = ("best", "mean")
#: the fixed rules and the learned one (fitted with the reference calibration)
ALL_RULES = (*REFERENCE_RULES, "learned")


def combine(distances: torch.Tensor, rule: str) -> torch.Tensor:
    """One distance per questioned sample from its distances to the K references.

    Args:
        distances: row i = questioned sample i against each reference.
        rule: ``"best"`` (min) or ``"mean"``.

    Shapes:
        distances (M, K) -> (M,).

    Returns:
        The combined distances.

    Raises:
        DataError: an unknown rule or no reference.
    """
    if rule not in REFERENCE_RULES:
        raise DataError(f"unknown reference rule {rule!r}; choose one of {', '.join(REFERENCE_RULES)}")
    if distances.ndim != 2 or distances.shape[1] == 0:
        raise DataError(f"need distances to at least one reference, got shape {tuple(distances.shape)}")
    return distances.min(dim=1).values if rule == "best" else distances.mean(dim=1)


@dataclass
class ReferenceTrials:
    """Trials of writer-dependent verification (indices into one image set).

    Attributes:
        refs: int64 (T, K): the references of each trial.
        trial: int64 (M,): the trial of each questioned sample.
        questioned: int64 (M,): the questioned sample.
        same: bool (M,): genuine (True) or skilled forgery (False).
        writer: int64 (M,): the writer label of the trial.
    """

    refs: torch.Tensor
    trial: torch.Tensor
    questioned: torch.Tensor
    same: torch.Tensor
    writer: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.refs.shape[1])


def reference_trials(
    writer_labels: torch.Tensor, is_genuine: torch.Tensor, k: int, *, draws: int = 1, seed: int = 0
) -> ReferenceTrials:
    """Per writer and draw: K random genuine references; the writer's other genuine
    signatures and all its skilled forgeries are questioned.

    Args:
        writer_labels: int (N,), writer of each image (a forgery: the imitated writer).
        is_genuine: bool (N,).
        k: references per trial (>= 1).
        draws: reference draws per writer.
        seed: seeds the draws.

    Returns:
        :class:`ReferenceTrials`; writers with fewer than ``k + 1`` genuine signatures
        are skipped (with a warning).

    Raises:
        DataError: ``k`` or ``draws`` below 1, or no writer has enough signatures.
    """
    if k < 1 or draws < 1:
        raise DataError(f"need k >= 1 references and draws >= 1, got k={k}, draws={draws}")
    writer_labels, is_genuine = torch.as_tensor(writer_labels), torch.as_tensor(is_genuine)
    g = torch.Generator().manual_seed(seed)
    refs, trial, quest, same, writer = [], [], [], [], []
    for w in writer_labels.unique().tolist():
        gen = (is_genuine & (writer_labels == w)).nonzero(as_tuple=True)[0]
        forg = (~is_genuine & (writer_labels == w)).nonzero(as_tuple=True)[0]
        if gen.numel() < k + 1:
            logger.warning("writer %d has %d genuine signature(s): too few for %d references + 1 questioned", w, gen.numel(), k)
            continue
        for _ in range(draws):
            perm = gen[torch.randperm(gen.numel(), generator=g)]
            q = torch.cat([perm[k:], forg])
            trial.append(torch.full((q.numel(),), len(refs), dtype=torch.long))
            refs.append(perm[:k])
            quest.append(q)
            same.append(torch.cat([torch.ones(perm.numel() - k, dtype=torch.bool), torch.zeros(forg.numel(), dtype=torch.bool)]))
            writer.append(torch.full((q.numel(),), int(w), dtype=torch.long))
    if not refs:
        raise DataError(f"no writer has the {k + 1} genuine signatures that {k} reference(s) + 1 questioned need")
    return ReferenceTrials(torch.stack(refs), torch.cat(trial), torch.cat(quest), torch.cat(same), torch.cat(writer))


def trial_distances(
    trials: ReferenceTrials, pair_distance: Callable[[torch.Tensor, torch.Tensor], Any], rule: str
) -> torch.Tensor:
    """The combined distance of every questioned sample to its trial's references.

    Args:
        trials: from :func:`reference_trials`.
        pair_distance: ``(a, b) -> distances`` of index pairs (a model's, raw pixels', a
            probe's; a tensor or an array).
        rule: ``"best"`` or ``"mean"``.

    Shapes:
        -> (M,) float64, M = questioned samples.

    Returns:
        The distances, lower = more likely genuine.
    """
    return combine(trial_distance_matrix(trials, pair_distance), rule)


def trial_distance_matrix(trials: ReferenceTrials, pair_distance: Callable[[torch.Tensor, torch.Tensor], Any]) -> torch.Tensor:
    """The distances of every questioned sample to each of its trial's K references.

    Args:
        trials: from :func:`reference_trials`.
        pair_distance: ``(a, b) -> distances`` of index pairs (a tensor or an array).

    Shapes:
        -> (M, K) float64.

    Returns:
        The distances (what a rule combines).
    """
    k = trials.k
    a = trials.questioned.repeat_interleave(k)
    b = trials.refs[trials.trial].reshape(-1)
    out = pair_distance(a, b)
    d = out.detach().double() if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out, dtype=np.float64))
    return d.reshape(-1, k)


def writer_dependent_report(
    trials: ReferenceTrials, distances: torch.Tensor, names: Sequence[str] | None = None, fars: Sequence[float] = (1e-2,)
) -> dict[str, Any]:
    """Pooled ROC AUC / EER and the per-writer EER of combined distances.

    Args:
        trials: the trials.
        distances: :func:`trial_distances` of them.
        names: writer names by label.
        fars: false accept rates for TAR@FAR.

    Returns:
        ``{"k", "roc_auc", "eer", "tar_at_far", "per_writer_eer": {mean, sd, worst, ...},
        "questioned", "trials"}``.
    """
    d, s = distances.double().numpy(), trials.same.numpy()
    rep = verification_report(d, s, fars, include_curves=False)
    pw = per_writer_eer(d, s, trials.writer.numpy(), names)
    return {"k": trials.k, "roc_auc": rep["roc_auc"], "eer": rep["eer"], "tar_at_far": rep["tar_at_far"],
            "per_writer_eer": {k: pw.get(k) for k in ("mean", "sd", "worst", "worst_writer", "n_writers")},
            "questioned": int(s.size), "trials": int(trials.refs.shape[0])}
