"""Open-set identification metrics: DIR at FAR and the open-set ROC.

An open-set search compares a probe with every enrolled identity and accepts the best
candidate when its distance is ``<= t`` (lower = closer). Two kinds of probes:

- *known* (mated) probes of enrolled identities: ``known_d`` is the best candidate's
  distance and ``known_correct`` whether that candidate is the right identity;
- *unknown* (non-mated) probes of identities that were never enrolled: ``unknown_d`` is
  the best candidate's distance (any acceptance is a false alarm).

At a threshold ``t``:

- FAR (false alarm rate, FRVT's FPIR) = unknown probes accepted / unknown probes;
- DIR (detection and identification rate) = known probes whose best candidate is right
  AND accepted / known probes.

The open-set ROC is DIR against FAR over every threshold; DIR @ FAR ``f`` is its value at
the largest threshold whose FAR is ``<= f`` (as
:func:`siamkit.evaluation.verification.tar_at_far` for pairs).

Example:
    >>> import numpy as np
    >>> from siamkit.evaluation.openset import dir_at_far
    >>> r = dir_at_far([0.1, 0.2, 0.5], [True, False, True], [0.3, 0.6, 0.7, 0.9], far=0.25)
    >>> round(r.dir, 4), r.threshold, r.far
    (0.3333, 0.5, 0.25)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from .curve import ArrayLike, as_distances, to_numpy
from .verification import min_negatives_for_far

__all__ = ["DirAtFar", "best_of_gallery", "open_set_roc", "dir_at_far", "open_set_threshold"]


@dataclass(frozen=True)
class DirAtFar:
    """One open-set operating point.

    Attributes:
        target_far: the false alarm rate asked for.
        dir: detection and identification rate at ``threshold`` (NaN when unresolved).
        far: the false alarm rate actually reached on the unknown probes (<= target_far).
        threshold: accept the best candidate when its distance <= threshold (NaN when
            unresolved; -inf when no threshold reaches the target: accept nothing).
        resolvable: False when there are fewer than ``ceil(1/target_far)`` unknown probes.
        reason: why it is not resolvable.
        n_known, n_unknown: probes of each kind.
    """

    target_far: float
    dir: float
    far: float
    threshold: float
    resolvable: bool
    reason: str | None
    n_known: int
    n_unknown: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_of_gallery(distances: ArrayLike, gallery_labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The best candidate of each probe under the "best sample" rule.

    Args:
        distances: probe-to-enrolled-sample distances, lower = closer.
        gallery_labels: the identity of each enrolled sample.

    Shapes:
        distances (P, G), gallery_labels (G,) -> best_d (P,), best_label (P,).

    Returns:
        ``(best_d, best_label)``: the smallest distance of each probe and the identity of
        that sample (the first such sample on ties).

    Raises:
        DataError: shapes that do not fit, or an empty gallery.
    """
    d = as_distances(distances)
    lab = to_numpy(gallery_labels)
    if d.ndim != 2 or lab.ndim != 1 or d.shape[1] != lab.shape[0]:
        raise DataError(f"distances must be (P, G) and gallery_labels (G,), got {d.shape} and {lab.shape}")
    if d.shape[1] == 0:
        raise DataError("the gallery is empty: no enrolled sample to compare with")
    j = np.argmin(d, axis=1)
    return d[np.arange(d.shape[0]), j], lab[j]


def _check(known_d: ArrayLike, known_correct: ArrayLike, unknown_d: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kd = as_distances(known_d, name="known_d").reshape(-1)
    kc = to_numpy(known_correct).reshape(-1)
    ud = as_distances(unknown_d, name="unknown_d").reshape(-1)
    if kc.shape != kd.shape:
        raise DataError(f"known_d and known_correct must have equal lengths, got {kd.size} and {kc.size}")
    if kc.dtype != bool:
        if not np.isin(kc, (0, 1)).all():
            raise DataError("known_correct must be boolean (or 0/1)")
        kc = kc.astype(bool)
    if kd.size == 0 or ud.size == 0:
        raise DataError(f"open-set metrics need known and unknown probes, got {kd.size} known and {ud.size} unknown")
    return kd, kc, ud


def open_set_roc(known_d: ArrayLike, known_correct: ArrayLike, unknown_d: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The open-set ROC: FAR and DIR at every distinct threshold.

    Args:
        known_d: best-candidate distance of each known (enrolled) probe.
        known_correct: whether that best candidate is the right identity.
        unknown_d: best-candidate distance of each unknown (never enrolled) probe.

    Shapes:
        known_d (K,), known_correct (K,), unknown_d (U,) -> three arrays (T+1,).

    Returns:
        ``(far, dir, thresholds)``: ``thresholds[0] = -inf`` (accept nothing), then every
        distinct distance increasing; both rates are non-decreasing.
    """
    kd, kc, ud = _check(known_d, known_correct, unknown_d)
    values, inv = np.unique(np.concatenate([kd, ud]), return_inverse=True)
    hits = np.bincount(inv[: kd.size], weights=kc.astype(np.float64), minlength=values.size)
    alarms = np.bincount(inv[kd.size :], minlength=values.size)
    tp = np.concatenate([[0], np.cumsum(hits)]).astype(np.int64)
    fp = np.concatenate([[0], np.cumsum(alarms)]).astype(np.int64)
    return fp / ud.size, tp / kd.size, np.concatenate([[-np.inf], values])


def dir_at_far(known_d: ArrayLike, known_correct: ArrayLike, unknown_d: ArrayLike, far: float) -> DirAtFar:
    """Detection and identification rate at the largest threshold whose FAR is <= ``far``.

    Args:
        known_d: best-candidate distance of each known probe.
        known_correct: whether that best candidate is the right identity.
        unknown_d: best-candidate distance of each unknown probe.
        far: the false alarm rate allowed, in (0, 1].

    Shapes:
        known_d (K,), known_correct (K,), unknown_d (U,).

    Returns:
        :class:`DirAtFar`; unresolved (NaN) with fewer than ``ceil(1/far)`` unknown probes.
    """
    need = min_negatives_for_far(far)
    fars, dirs, thr = open_set_roc(known_d, known_correct, unknown_d)
    n_k, n_u = int(np.asarray(known_d).size), int(np.asarray(unknown_d).size)
    if n_u < need:
        reason = f"FAR {far:g} needs at least {need} unknown probes to be resolved, got {n_u}"
        return DirAtFar(float(far), float("nan"), float("nan"), float("nan"), False, reason, n_k, n_u)
    fp = np.rint(fars * n_u).astype(np.int64)
    k = int(np.flatnonzero(fp / n_u <= far)[-1])
    return DirAtFar(float(far), float(dirs[k]), float(fars[k]), float(thr[k]), True, None, n_k, n_u)


def open_set_threshold(unknown_d: ArrayLike, far: float) -> tuple[float, float]:
    """The largest threshold on best-candidate distances whose false alarm rate on the
    unknown probes is <= ``far`` (the open-set operating point).

    Args:
        unknown_d: best-candidate distance of each unknown probe.
        far: the false alarm rate allowed, in (0, 1].

    Shapes:
        unknown_d (U,).

    Returns:
        ``(threshold, realised_far)``: accept when distance <= threshold. The threshold
        is the middle of the gap between the last unknown distance it accepts and the
        first it must reject (every threshold in that gap has the same FAR on these
        probes), the largest unknown distance when ``far`` allows all of them, or just
        under the smallest when it allows none.

    Raises:
        DataError: fewer than ``ceil(1/far)`` unknown probes, or bad distances.
    """
    u = np.sort(as_distances(unknown_d, name="unknown_d").reshape(-1))
    need = min_negatives_for_far(far)
    if u.size < need:
        raise DataError(f"an open-set threshold at FAR {far:g} needs at least {need} unknown probes, got {u.size}")
    values, counts = np.unique(u, return_counts=True)
    fp = np.cumsum(counts)
    ok = np.flatnonzero(fp / u.size <= far)
    if ok.size == 0:
        return float(np.nextafter(values[0], -np.inf)), 0.0
    k = int(ok[-1])
    if k + 1 == values.size:
        return float(values[k]), float(fp[k] / u.size)
    # any t in [values[k], values[k+1]) gives the same FAR here: take the middle of the gap
    return float((values[k] + values[k + 1]) / 2.0), float(fp[k] / u.size)
