"""The open-set ("unknown") threshold of identification, fitted on held-out identities.

A pair threshold is the wrong operating point for 1:N identification: a probe of someone
who was never enrolled gets a chance to fall under it against every enrolled sample.
:func:`fit_open_set_threshold` simulates galleries on a held-out split instead: the
identities are cut into ``n_rotations`` groups; in each rotation one group is never
enrolled (its images are *unknown* probes) and the others are enrolled with
``enrol_per_identity`` images each (their other images are *known* probes). The threshold
is fitted on the unknown probes' best-of-gallery distances (the "best sample" rule) so
that at most ``target_far`` of them are accepted; DIR (detection and identification rate)
at it is measured on the known probes (:mod:`siamkit.evaluation.openset`).

The result, an :class:`OpenSetThreshold`, is stored in ``calibration.json`` beside the
pair threshold (:attr:`Calibrator.identification_
<siamkit.calibration.Calibrator>`), and ``Gallery.identify`` uses it when present.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import CalibrationError, DataError
from ..evaluation.curve import as_distances, to_numpy
from ..evaluation.openset import best_of_gallery, open_set_threshold
from ..evaluation.verification import min_negatives_for_far

__all__ = ["OpenSetThreshold", "OpenSetTrials", "open_set_trials", "fit_open_set_threshold"]


@dataclass(frozen=True)
class OpenSetTrials:
    """Best-of-gallery outcomes of simulated galleries (pooled over rotations).

    Attributes:
        known_d, known_correct: per known probe, the best candidate's distance and
            whether it is the right identity.
        unknown_d: per unknown probe, the best candidate's distance.
        n_enrolled: identities enrolled in each rotation.
    """

    known_d: np.ndarray
    known_correct: np.ndarray
    unknown_d: np.ndarray
    n_enrolled: list[int]


@dataclass(frozen=True)
class OpenSetThreshold:
    """The identification ("unknown") threshold and how it was fitted.

    Attributes:
        threshold: accept the best candidate when its distance <= threshold.
        target_far: the false alarm rate it was fitted for (unknown probes accepted).
        far: the false alarm rate it reaches on the fit probes.
        dir: the detection and identification rate it reaches on the fit known probes.
        n_unknown_probes, n_known_probes: probes it was fitted / measured on.
        n_enrolled: identities enrolled per simulated gallery (mean over rotations; a
            larger gallery gives an unknown probe more chances to be accepted).
        enrol_per_identity: images enrolled per identity (None: half of each identity's).
        n_rotations: simulated galleries.
        scoring: the scoring rule of the best-of-gallery distances (``"best"``).
        fitted_on: the split's name.
    """

    threshold: float
    target_far: float
    far: float
    dir: float
    n_unknown_probes: int
    n_known_probes: int
    n_enrolled: float
    enrol_per_identity: int | None
    n_rotations: int
    scoring: str
    fitted_on: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> OpenSetThreshold:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            KeyError / TypeError / ValueError: a missing or invalid field (the
                calibration reader turns these into a ModelFileError).
        """
        if not isinstance(data, dict):
            raise TypeError("identification must be an object")
        thr = float(data["threshold"])
        if not np.isfinite(thr):
            raise ValueError(f"identification.threshold must be finite, got {thr}")
        epi = data.get("enrol_per_identity")
        return cls(
            threshold=thr, target_far=float(data["target_far"]), far=float(data["far"]), dir=float(data["dir"]),
            n_unknown_probes=int(data["n_unknown_probes"]), n_known_probes=int(data["n_known_probes"]),
            n_enrolled=float(data["n_enrolled"]), enrol_per_identity=None if epi is None else int(epi),
            n_rotations=int(data["n_rotations"]), scoring=str(data["scoring"]), fitted_on=str(data["fitted_on"]),
        )


def _rotation_groups(classes: np.ndarray, n_rotations: int, seed: int) -> list[np.ndarray]:
    perm = np.random.default_rng(seed).permutation(classes)
    return [g for g in np.array_split(perm, n_rotations) if g.size]


def open_set_trials(
    distances: Any,
    labels: Any,
    *,
    gallery_fraction: float = 0.75,
    enrol_per_identity: int | None = None,
    seed: int = 0,
) -> OpenSetTrials:
    """Simulate open-set galleries on a labelled split and score every probe.

    Args:
        distances: every sample's distance to every sample (lower = closer).
        labels: every sample's identity.
        gallery_fraction: share of the identities enrolled in each gallery; the
            identities are cut into ``round(1 / (1 - gallery_fraction))`` groups, each
            never enrolled once, so that every image is an unknown probe once.
        enrol_per_identity: images enrolled per identity (None: half of its images,
            at least 1); the rest are known probes.
        seed: the seed of the groups and of which images are enrolled.

    Shapes:
        distances (N, N), labels (N,).

    Returns:
        :class:`OpenSetTrials`, pooled over the rotations.

    Raises:
        DataError: bad shapes, fewer than 2 identities, or a bad gallery fraction.
    """
    d = as_distances(distances)
    y = to_numpy(labels).reshape(-1)
    if d.ndim != 2 or d.shape != (y.size, y.size):
        raise DataError(f"distances must be (N, N) for N labels, got {d.shape} for {y.size}")
    if not 0.0 < float(gallery_fraction) < 1.0:
        raise DataError(f"gallery_fraction must be in (0, 1), got {gallery_fraction}")
    if enrol_per_identity is not None and enrol_per_identity < 1:
        raise DataError(f"enrol_per_identity must be >= 1, got {enrol_per_identity}")
    classes = np.unique(y)
    if classes.size < 2:
        raise DataError(f"open-set calibration needs at least 2 identities, got {classes.size}")
    n_rot = int(min(classes.size, max(2, round(1.0 / (1.0 - float(gallery_fraction))))))
    rng = np.random.default_rng(seed + 1)
    enrol_rows: dict[Any, np.ndarray] = {}
    probe_rows: dict[Any, np.ndarray] = {}
    for c in classes:
        rows = rng.permutation(np.flatnonzero(y == c))
        k = enrol_per_identity if enrol_per_identity is not None else max(1, rows.size // 2)
        enrol_rows[c], probe_rows[c] = rows[:k], rows[k:]
    kd, kc, ud, n_enr = [], [], [], []
    for unknown in _rotation_groups(classes, n_rot, seed):
        enrolled = [c for c in classes if c not in set(unknown.tolist())]
        g_rows = np.concatenate([enrol_rows[c] for c in enrolled])
        k_rows = np.concatenate([probe_rows[c] for c in enrolled])
        u_rows = np.flatnonzero(np.isin(y, unknown))
        best_k, lab_k = best_of_gallery(d[np.ix_(k_rows, g_rows)], y[g_rows])
        best_u, _ = best_of_gallery(d[np.ix_(u_rows, g_rows)], y[g_rows])
        kd.append(best_k)
        kc.append(lab_k == y[k_rows])
        ud.append(best_u)
        n_enr.append(len(enrolled))
    return OpenSetTrials(np.concatenate(kd), np.concatenate(kc), np.concatenate(ud), n_enr)


def fit_open_set_threshold(
    distances: Any,
    labels: Any,
    *,
    target_far: float = 1e-2,
    gallery_fraction: float = 0.75,
    enrol_per_identity: int | None = None,
    seed: int = 0,
    split_name: str = "validation",
) -> OpenSetThreshold:
    """Fit the identification threshold on simulated galleries of a held-out split.

    Args:
        distances: every sample's distance to every sample (lower = closer).
        labels: every sample's identity.
        target_far: share of never-enrolled probes that may be accepted.
        gallery_fraction: see :func:`open_set_trials`.
        enrol_per_identity: see :func:`open_set_trials`.
        seed: see :func:`open_set_trials`.
        split_name: the split's name (recorded).

    Shapes:
        distances (N, N), labels (N,).

    Returns:
        The :class:`OpenSetThreshold`.

    Raises:
        CalibrationError: fewer unknown probes than ``ceil(1/target_far)`` (the message
            says how many are needed), or no known probe to measure DIR on.
        DataError: see :func:`open_set_trials`.
    """
    far = float(target_far)
    if not 0.0 < far < 1.0:
        raise CalibrationError(f"target_far must be in (0, 1), got {target_far}")
    n = int(np.asarray(to_numpy(labels)).size)
    need = min_negatives_for_far(far)
    if n < need:
        raise CalibrationError(
            f"an identification threshold at FAR {far:g} needs at least {need} never-enrolled probe images "
            f"(every image is one once), the split has {n}: use a larger validation split or a larger --target-far"
        )
    trials = open_set_trials(distances, labels, gallery_fraction=gallery_fraction,
                             enrol_per_identity=enrol_per_identity, seed=seed)
    if trials.known_d.size == 0:
        raise CalibrationError("no known probe left: every image of the enrolled identities was enrolled "
                               "(lower --enrol-samples or use identities with more images)")
    thr, realised = open_set_threshold(trials.unknown_d, far)
    hit = float(np.mean(trials.known_correct & (trials.known_d <= thr)))
    return OpenSetThreshold(
        threshold=thr, target_far=far, far=realised, dir=hit,
        n_unknown_probes=int(trials.unknown_d.size), n_known_probes=int(trials.known_d.size),
        n_enrolled=float(np.mean(trials.n_enrolled)), enrol_per_identity=enrol_per_identity,
        n_rotations=len(trials.n_enrolled), scoring="best", fitted_on=split_name,
    )
