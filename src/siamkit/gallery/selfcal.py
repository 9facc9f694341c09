"""A gallery's own calibration, and the thresholds its decisions use.

Every sample of an enrolled identity compared with every OTHER enrolled identity is a
known impostor trial, scored by the gallery's rule exactly as ``verify`` scores a claim
(best: the distance to that identity's closest sample; mean: to its mean template). So a
gallery holds the data to fit its own threshold, on its own camera and population:

- :func:`calibrate_gallery` fits the verify threshold at a target FAR on those trials
  (the middle of the gap above the ``floor(target * n)``-th smallest impostor distance),
  with a 95% Clopper-Pearson interval on the FAR it reaches and the distribution-free
  order-statistic interval of the threshold (the true ``target``-quantile of impostor
  distances); it refuses with fewer than ``3 / target`` trials. With at least
  ``3 / target`` samples it also fits the open-set identify threshold on leave-one-
  identity-out searches (each sample searched against the others' identities: a probe
  of someone who is not enrolled). Confidence comes from a Platt curve on the gallery's
  own genuine and impostor trials when some identity has 2+ samples, else from the
  model's calibration. The result is stored in the gallery's meta (``self_calibration``).
- :func:`decision_calibrators` gives the calibrators ``verify`` and ``identify`` decide
  with: the gallery's own threshold first, then the model's identification threshold
  (``siamkit calibrate --mode identification``), then the model's pair threshold.
- :func:`gallery_shift` runs :func:`~siamkit.calibration.check_shift` on every pair of
  samples of two different enrolled identities against the model calibration's summary.
"""

from __future__ import annotations

import copy
import logging
import time
import weakref
from typing import Any

import numpy as np
import torch
from scipy import stats

from ..calibration import Calibrator, ShiftReport, check_shift, clopper_pearson
from ..errors import CalibrationError, GalleryError
from ..evaluation.openset import open_set_threshold
from ..inference import network_pairwise
from .ranking import check_rule
from .snapshot import SnapshotView

__all__ = ["SELF_CALIBRATION_KEY", "MIN_PER_TARGET", "trial_distances", "calibrate_gallery", "load_gallery_calibration",
           "decision_calibrators", "gallery_shift"]

logger = logging.getLogger(__name__)

#: the gallery meta key of its own calibration
SELF_CALIBRATION_KEY = "self_calibration"
#: impostor trials needed per unit of target FAR (3 / target: about 3 false accepts expected)
MIN_PER_TARGET = 3.0
#: impostor pairs the shift check samples at most
MAX_SHIFT_PAIRS = 200_000

_CACHE: "weakref.WeakKeyDictionary[Any, tuple[Any, Any]]" = weakref.WeakKeyDictionary()


def _view(gallery: Any) -> tuple[Any, SnapshotView]:
    net = gallery.network
    if net is None:
        raise GalleryError("gallery calibration needs a model: open the gallery with one")
    return net, SnapshotView(gallery.store.snapshot(int(net.embedding_dim)), normalize=bool(net.normalize))


def trial_distances(gallery: Any, scoring: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every enrolled sample scored against every enrolled identity by the scoring rule.

    Args:
        gallery: an open :class:`~siamkit.gallery.Gallery` with its model.
        scoring: the rule (None: the gallery's).

    Returns:
        ``(distances, own)``: distances (S, I) of sample s to identity i (for its own
        identity under "best": to its closest OTHER sample, inf when it has none) and
        each sample's identity code (S,).
    """
    rule = check_rule(scoring or gallery.scoring)
    net, view = _view(gallery)
    codes = view.snap.codes
    n_id = view.n_identities
    emb = view.embeddings
    if rule == "mean":
        return network_pairwise(net, emb, view.templates()).double().numpy(), codes
    out = np.empty((emb.shape[0], n_id))
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(n_id))
    step = max(1, (1 << 22) // max(1, emb.shape[0]))
    for i in range(0, emb.shape[0], step):
        d = network_pairwise(net, emb[i : i + step], emb).double().numpy()
        d[np.arange(d.shape[0]), np.arange(i, i + d.shape[0])] = np.inf  # not against itself
        out[i : i + step] = np.minimum.reduceat(d[:, order], starts, axis=1)
    return out, codes


def _threshold_interval(x: np.ndarray, far: float) -> tuple[float, float]:
    """95% distribution-free interval of the ``far``-quantile from order statistics."""
    n = x.size
    lo = int(stats.binom.ppf(0.025, n, far))
    hi = int(stats.binom.ppf(0.975, n, far)) + 1
    xs = np.sort(x)
    return float(xs[max(0, lo - 1)] if lo > 0 else -np.inf), float(xs[min(n - 1, hi - 1)])


def calibrate_gallery(gallery: Any, target_far: float, *, scoring: str | None = None, save: bool = True) -> dict[str, Any]:
    """Fit the gallery's own thresholds at ``target_far`` from the impostor trials it holds.

    Args:
        gallery: an open :class:`~siamkit.gallery.Gallery` with its model.
        target_far: the false accept rate to fit for, in (0, 1).
        scoring: the rule (None: the gallery's).
        save: store the result in the gallery (then ``verify`` / ``identify`` use it).

    Returns:
        The calibration record (JSON-able): threshold, far, far_ci, threshold_ci,
        n_impostor_trials, identification (or None, with a note), confidence source.

    Raises:
        CalibrationError: fewer than ``3 / target_far`` impostor trials (the message says
            how many are needed), or no way to give a confidence (no identity with 2+
            samples and an uncalibrated model).
    """
    far = float(target_far)
    if not 0.0 < far < 1.0:
        raise CalibrationError(f"--target-far must be in (0, 1), got {target_far}")
    rule = check_rule(scoring or gallery.scoring)
    need = int(np.ceil(MIN_PER_TARGET / far))
    t, own = trial_distances(gallery, rule)
    n_samples, n_id = t.shape
    mask = np.ones_like(t, dtype=bool)
    mask[np.arange(n_samples), own] = False
    imp = t[mask]
    if imp.size < need:
        raise CalibrationError(
            f"calibrating the gallery at FAR {far:g} needs at least {need:,} impostor trials (about 3/target; "
            f"one per sample and other identity), it holds {imp.size:,} ({n_id} identities, {n_samples} samples): "
            "enrol more identities or samples, or ask for a larger --target-far"
        )
    thr, realised = open_set_threshold(imp, far)
    k = int((imp <= thr).sum())
    gen = t[np.arange(n_samples), own]
    gen = gen[np.isfinite(gen)]
    conf = _confidence(gallery, imp, gen, far)
    ident: dict[str, Any] | None = None
    note = None
    loio = np.where(mask, t, np.inf).min(axis=1) if n_id > 1 else np.zeros(0)
    if loio.size >= need:
        id_thr, id_far = open_set_threshold(loio, far)
        k_id = int((loio <= id_thr).sum())
        ident = {"threshold": id_thr, "far": id_far, "far_ci": clopper_pearson(k_id, loio.size), "n_unknown_probes": int(loio.size)}
    else:
        note = (f"no identification threshold: leave-one-identity-out searches at FAR {far:g} need {need:,} samples, "
                f"the gallery has {n_samples}; identify uses the model's threshold")
    rec = {
        "target_far": far, "scoring": rule, "threshold": thr, "far": realised, "far_ci": clopper_pearson(k, imp.size),
        "threshold_ci": _threshold_interval(imp, far), "n_impostor_trials": int(imp.size), "n_genuine_trials": int(gen.size),
        "n_identities": int(n_id), "n_samples": int(n_samples), "identification": ident, "note": note,
        "confidence": conf, "model_hash": gallery.meta.get("model_hash"), "created": time.time(),
    }
    if save:
        gallery.store.set_meta({SELF_CALIBRATION_KEY: rec})
    return rec


def _confidence(gallery: Any, imp: np.ndarray, gen: np.ndarray, far: float) -> dict[str, Any] | None:
    """A Platt calibrator on the gallery's own trials (its dict), None to use the model's."""
    if gen.size:
        d = np.concatenate([gen, imp])
        s = np.concatenate([np.ones(gen.size, bool), np.zeros(imp.size, bool)])
        return Calibrator(threshold_method="eer").fit(d, s, split_name=f"gallery {gallery.path.name}").to_dict()
    if gallery.calibrator is None:
        raise CalibrationError(
            "the gallery has no identity with 2+ samples (no genuine trial to fit a confidence curve on) and the "
            "model is not calibrated: enrol a second sample of some identities, or `siamkit calibrate` the model"
        )
    return None


def load_gallery_calibration(gallery: Any) -> dict[str, Any] | None:
    """The gallery's stored calibration, None when it has none or it was fitted with
    another model (then a warning says to run ``siamkit gallery calibrate`` again).

    Args:
        gallery: an open gallery.

    Returns:
        The record of :func:`calibrate_gallery`, or None.
    """
    rec = gallery.store.meta().get(SELF_CALIBRATION_KEY)
    if not isinstance(rec, dict):
        return None
    if rec.get("model_hash") != gallery.meta.get("model_hash"):
        logger.warning("gallery %s: its own calibration was fitted with another model; ignored "
                       "(run `siamkit gallery calibrate` again)", gallery.path)
        return None
    return rec


def _with_threshold(cal: Calibrator | None, threshold: float | None) -> Calibrator | None:
    if cal is None or threshold is None:
        return cal
    out = copy.copy(cal)
    out.threshold_ = float(threshold)
    return out


def decision_calibrators(gallery: Any) -> tuple[Calibrator | None, Calibrator | None]:
    """The calibrators ``verify`` and ``identify`` decide with (cached per write generation).

    Args:
        gallery: an open gallery.

    Returns:
        ``(verify, identify)``: the gallery's own threshold when it has one, then (for
        identify) the model's identification threshold, then the model's pair threshold;
        confidence from the gallery's own Platt curve when it fitted one, else the model's.
        None: no decision (nothing is calibrated).
    """
    key = (gallery.store.generation(), id(gallery.calibrator))
    hit = _CACHE.get(gallery)
    if hit is not None and hit[0] == key:
        return hit[1]
    model_cal = gallery.calibrator
    rec = load_gallery_calibration(gallery)
    if rec is None:
        ident = None if model_cal is None else model_cal.identification_threshold
        out = (model_cal, _with_threshold(model_cal, ident))
    else:
        base = Calibrator.from_dict(rec["confidence"]) if rec.get("confidence") else model_cal
        id_thr = (rec.get("identification") or {}).get("threshold")
        if id_thr is None and model_cal is not None:
            id_thr = model_cal.identification_threshold
        out = (_with_threshold(base, rec["threshold"]), _with_threshold(base, id_thr if id_thr is not None else rec["threshold"]))
    _CACHE[gallery] = (key, out)
    return out


def gallery_shift(gallery: Any, *, seed: int = 0) -> ShiftReport | None:
    """Compare the gallery's impostor pairs (every pair of samples of two different enrolled
    identities) with the score summary of the model's calibration.

    Args:
        gallery: an open gallery with its model.
        seed: the seed of the pair subsample (at most 200,000 pairs).

    Returns:
        The :class:`~siamkit.calibration.ShiftReport`, or None when the model's calibration
        has no score summary (an older file) or there is no impostor pair.
    """
    cal = gallery.calibrator
    if cal is None or getattr(cal, "scores_", None) is None:
        return None
    net, view = _view(gallery)
    codes = view.snap.codes
    i, j = np.triu_indices(codes.size, 1)
    keep = codes[i] != codes[j]
    i, j = i[keep], j[keep]
    if i.size == 0:
        return None
    if i.size > MAX_SHIFT_PAIRS:
        pick = np.random.default_rng(seed).choice(i.size, MAX_SHIFT_PAIRS, replace=False)
        i, j = i[pick], j[pick]
    with torch.no_grad():
        d = net.embedding_distance(view.embeddings[torch.from_numpy(i)], view.embeddings[torch.from_numpy(j)])
    return check_shift(cal.scores_, d.double().numpy(), threshold=float(cal.threshold_),
                       data=f"the {view.n_identities} identities enrolled in {getattr(gallery.path, 'name', gallery.path)}",
                       fix=f"`siamkit gallery calibrate --gallery {gallery.path} --target-far F` (fits the gallery's own "
                       "threshold), or recalibrate the model on data from this condition", n_classes=view.n_identities)
