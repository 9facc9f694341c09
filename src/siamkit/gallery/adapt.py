"""Gallery-side adaptation from confirmed feedback: template updates and per-identity
thresholds with shrinkage toward the global threshold. No model is trained.

What a confirmed report says about one enrolled identity (``identity_verify``: "this probe
is / is not X"; ``identify``: "this probe is X, not the Y it was identified as"):

- **Template update**: a confirmed genuine probe (a false reject that two reporters agree
  on, or a confirmed match: a correct accept two reporters confirm, see
  ``FeedbackRecord.confirmation``) is added to the identity as one more sample, once (the
  gallery's meta remembers which reports it added). Enrolling confirmed matches keeps the
  templates up to date with an identity's changing appearance, not only its failures.
- **Per-identity threshold**: the identity's genuine distances (each of its samples to its
  closest OTHER sample, as ``verify`` scores a claim under the ``best`` rule; to its mean
  template under ``mean``; confirmed genuine probes not added as samples) and impostor
  distances (every sample of another enrolled identity, and every confirmed impostor
  probe, scored against it) give its own error-minimising threshold ``t_local``
  (:func:`local_threshold`; ties go to the candidate closest to the global threshold). It
  is shrunk toward the global threshold ``t0`` by the number ``n`` of confirmed reports on
  the identity: ``t = t0 + n / (n + prior) * (t_local - t0)`` (:func:`shrunk_threshold`).
  The template trials inform where the threshold goes; only reports move it, so an
  identity nobody reported keeps the global threshold and a single report moves it by
  ``1 / (1 + prior)`` of the way.

Which reports count: those :func:`siamkit.feedback.screen_reports` lets teach (at least
``min_reporters`` distinct reporters, no contradiction), of status ``new`` or ``used`` (a
report a fine-tune used is still true). Adapting changes no report's status: the same
reports may also teach the model. The thresholds are stored in the gallery's meta
(``identity_thresholds``) with the model hash they were fitted under; after a re-embedding
with another model they are ignored (a warning says to adapt again) and ``verify`` decides
with the global threshold. ``identify`` applies them too, as an offset from its own
open-set threshold, and confirmed impostor probes become negative templates of the identity
they were claimed as (both: :mod:`siamkit.gallery.negatives`).
"""

from __future__ import annotations

import copy
import logging
import time
import weakref
from typing import Any

import numpy as np

from ..calibration import Calibrator
from ..data.decode import decode_image_bytes
from ..errors import GalleryError
from ..feedback.guard import screen_reports
from .negatives import NEGATIVES_KEY, fit_negatives, identity_negatives, personal_identification, personal_verification
from .ranking import verification
from .results import GalleryVerification, Identification
from .selfcal import decision_calibrators, trial_distances

__all__ = ["ADAPTATION_KEY", "adapt_gallery", "identify_answers", "identity_thresholds", "local_threshold",
           "shrunk_threshold", "verify_answer", "verify_calibrator"]

logger = logging.getLogger(__name__)

#: the gallery meta key of the per-identity thresholds
ADAPTATION_KEY = "identity_thresholds"

_CACHE: "weakref.WeakKeyDictionary[Any, tuple[Any, dict[str, float]]]" = weakref.WeakKeyDictionary()


def local_threshold(genuine: np.ndarray, impostor: np.ndarray, t0: float) -> float:
    """The distance threshold (accept when ``d <= t``) with the fewest errors on one
    identity's trials; among equally good ones, the one closest to ``t0``.

    Candidates: ``t0``, the midpoints between adjacent distinct distances, and just
    below the smallest / above the largest.

    Args:
        genuine: distances of genuine trials (finite).
        impostor: distances of impostor trials (finite).
        t0: the global threshold (the tie-break and the answer without any trial).

    Returns:
        The threshold.
    """
    g = np.asarray(genuine, dtype=np.float64).ravel()
    m = np.asarray(impostor, dtype=np.float64).ravel()
    v = np.unique(np.concatenate([g, m]))
    if v.size == 0:
        return float(t0)
    eps = 1e-9 * (1.0 + np.abs(v[[0, -1]]))
    cand = np.concatenate([[t0, v[0] - eps[0], v[-1] + eps[1]], (v[1:] + v[:-1]) / 2.0])
    gs, ms = np.sort(g), np.sort(m)
    errors = (g.size - np.searchsorted(gs, cand, side="right")) + np.searchsorted(ms, cand, side="right")
    best = np.nonzero(errors == errors.min())[0]
    return float(cand[best[np.argmin(np.abs(cand[best] - t0))]])


def shrunk_threshold(genuine: np.ndarray, impostor: np.ndarray, t0: float, n_reports: int, *, prior: float = 5.0) -> float:
    """An identity's threshold: its :func:`local_threshold` shrunk toward ``t0``.

    Args:
        genuine: its genuine trial distances.
        impostor: its impostor trial distances.
        t0: the global threshold.
        n_reports: confirmed reports on the identity (the weight of its own evidence).
        prior: how many reports the global threshold is worth (> 0).

    Returns:
        ``t0 + n / (n + prior) * (local - t0)``; ``t0`` when ``n_reports`` is 0.

    Raises:
        ValueError: ``prior`` <= 0 or ``n_reports`` < 0.
    """
    if not prior > 0:
        raise ValueError(f"prior must be > 0, got {prior}")
    if n_reports < 0:
        raise ValueError(f"n_reports must be >= 0, got {n_reports}")
    if n_reports == 0:
        return float(t0)
    w = n_reports / (n_reports + prior)
    return float(t0 + w * (local_threshold(genuine, impostor, t0) - t0))


def _claims(store: Any, min_reporters: int, confirmations: bool = True) -> tuple[list[tuple[str, Any, bool]], dict[int, list[int]]]:
    """(identity, report, genuine?) of every confirmed claim about an enrolled identity
    (without the reports that confirm a decision when ``confirmations`` is False)."""
    recs = [r for s in ("new", "used") for r in store.list(status=s) if r.kind in ("identity_verify", "identify")
            and (confirmations or not r.confirmation)]
    screening = screen_reports(recs, min_reporters=min_reporters)
    out: list[tuple[str, Any, bool]] = []
    for r in screening.teach:
        if r.kind == "identity_verify":
            out.append((str(r.identity), r, bool(r.truth["same"])))
            continue
        true_id, wrong = r.truth.get("identity"), (r.predicted or {}).get("identity")
        if true_id and true_id != "unknown":
            out.append((str(true_id), r, True))
        if wrong and wrong not in ("unknown", true_id):
            out.append((str(wrong), r, False))
    return out, screening.members


def _add_templates(gallery: Any, claims: list[tuple[str, Any, bool]], done: set[int], spec: Any) -> list[int]:
    """Enrol each confirmed genuine probe not added before as a sample; the report ids added."""
    added = []
    for ident, r, genuine in claims:
        if genuine and r.id not in done and ident in gallery:
            gallery.add_samples(ident, decode_image_bytes(r.image_a, spec).unsqueeze(0))
            added.append(r.id)
    return added


def _trials(gallery: Any, claims: list[tuple[str, Any, bool]], templated: set[int], spec: Any) -> dict[str, tuple[list[float], list[float], int]]:
    """identity -> (genuine distances, impostor distances, confirmed reports)."""
    t, own = trial_distances(gallery)
    names = gallery.store.snapshot(int(gallery.network.embedding_dim)).identities
    code = {n: i for i, n in enumerate(names)}
    out: dict[str, tuple[list[float], list[float], int]] = {}
    for ident, r, genuine in claims:
        if ident not in code:
            continue
        if ident not in out:
            col = t[:, code[ident]]
            mine = own == code[ident]
            gen = col[mine]
            out[ident] = (gen[np.isfinite(gen)].tolist(), col[~mine].tolist(), 0)
        g, m, n = out[ident]
        if not (genuine and r.id in templated):  # a probe added as a sample is already a genuine trial
            d = gallery.verify(ident, decode_image_bytes(r.image_a, spec)).distance
            (g if genuine else m).append(float(d))
        out[ident] = (g, m, n + 1)
    return out


def adapt_gallery(gallery: Any, store: Any, *, min_reporters: int = 2, prior: float = 5.0, add_templates: bool = True,
                  negatives: bool = True, confirmations: bool = True, actor: str = "gallery-adapt",
                  save: bool = True) -> dict[str, Any]:
    """Adapt a gallery to its confirmed feedback: add confirmed genuine probes as samples,
    then fit per-identity thresholds with shrinkage (see the module doc).

    Args:
        gallery: an open :class:`~siamkit.gallery.Gallery` with its (calibrated) model.
        store: the open :class:`~siamkit.feedback.FeedbackStore`.
        min_reporters: distinct reporters a claim needs before it counts.
        prior: how many reports the global threshold is worth.
        add_templates: enrol confirmed genuine probes as samples.
        negatives: keep confirmed impostor probes as negative templates of the identity
            they claimed (:mod:`siamkit.gallery.negatives`); False removes stored ones.
        confirmations: also learn from reports that confirm a decision
            (:attr:`~siamkit.feedback.FeedbackRecord.confirmation`): a confirmed match is
            enrolled like a confirmed false reject (a template update) and counts as one
            more report on the identity; a confirmed correct reject is one more impostor
            trial and negative template. False: mistakes only.
        actor: who the feedback store's audit log names.
        save: store the thresholds in the gallery (``verify`` then uses them).

    Returns:
        The record (JSON-able): ``global_threshold``, ``prior``, ``thresholds``
        {identity: threshold}, ``reports`` {identity: n}, ``templates_added`` (report ids),
        ``model_hash``, ``created``, ``negatives`` {identity: negative templates}.

    Raises:
        GalleryError: the gallery has no model or no calibrated threshold.
    """
    if gallery.network is None:
        raise GalleryError("adapting a gallery needs its model: open the gallery with one")
    cal = decision_calibrators(gallery)[0]
    if cal is None:
        raise GalleryError("adapting a gallery needs a threshold: calibrate the model (`siamkit calibrate`) or the gallery")
    t0 = float(cal.threshold_)
    spec = gallery.network.input_spec.require_image()
    claims, members = _claims(store, int(min_reporters), bool(confirmations))
    prev = gallery.store.meta().get(ADAPTATION_KEY) or {}
    done = {int(i) for i in prev.get("templates_added", [])}
    added = _add_templates(gallery, claims, done, spec) if add_templates else []
    templated = done | set(added)
    trials = _trials(gallery, claims, templated, spec)
    thresholds = {k: shrunk_threshold(np.asarray(g), np.asarray(m), t0, n, prior=prior) for k, (g, m, n) in trials.items()}
    rec = {"global_threshold": t0, "prior": float(prior), "min_reporters": int(min_reporters), "confirmations": bool(confirmations),
           "thresholds": thresholds,
           "reports": {k: v[2] for k, v in trials.items()}, "templates_added": sorted(templated),
           "model_hash": gallery.meta.get("model_hash"), "created": time.time()}
    neg = fit_negatives(gallery, claims if negatives else [])
    rec["negatives"] = {k: len(v["reports"]) for k, v in neg["negatives"].items()}
    if save:
        gallery.store.set_meta({ADAPTATION_KEY: rec, NEGATIVES_KEY: neg})
        used = sorted({i for _, r, _ in claims for i in members.get(r.id, [r.id])})
        store.audit(actor, "gallery_adapt", str(gallery.path), {"reports": used, "templates_added": added,
                                                                "identities": len(thresholds),
                                                                "negatives": sum(rec["negatives"].values())})
    return rec


def identity_thresholds(gallery: Any) -> dict[str, float]:
    """The stored per-identity thresholds ({} when none, or fitted under another model).

    Args:
        gallery: an open gallery.

    Returns:
        identity -> threshold (cached per write generation).
    """
    gen = gallery.store.generation()
    hit = _CACHE.get(gallery)
    if hit is not None and hit[0] == gen:
        return hit[1]
    rec = gallery.store.meta().get(ADAPTATION_KEY)
    out: dict[str, float] = {}
    if isinstance(rec, dict):
        if rec.get("model_hash") == gallery.meta.get("model_hash"):
            out = {str(k): float(v) for k, v in rec.get("thresholds", {}).items()}
        else:
            logger.warning("gallery %s: its per-identity thresholds were fitted with another model; ignored "
                           "(run `siamkit feedback adapt` again)", gallery.path)
    _CACHE[gallery] = (gen, out)
    return out


def verify_calibrator(gallery: Any, identity: str) -> Calibrator | None:
    """The calibrator ``verify`` decides a claim of ``identity`` with: the gallery's
    verify calibrator, with the identity's own threshold when it has one.

    Args:
        gallery: an open gallery.
        identity: the claimed identity.

    Returns:
        The calibrator (None: nothing is calibrated).
    """
    cal = decision_calibrators(gallery)[0]
    thr = identity_thresholds(gallery).get(identity)
    if cal is None or thr is None:
        return cal
    out = copy.copy(cal)
    out.threshold_ = float(thr)
    return out



def verify_answer(gallery: Any, identity: str, code: int, q: Any, view: Any, network: Any, rule: str) -> GalleryVerification:
    """``verify``'s answer: the identity's own threshold (:func:`verify_calibrator`),
    then its negative templates (:func:`siamkit.gallery.negatives.personal_verification`).

    Args:
        gallery: an open gallery with its model.
        identity: the claimed identity.
        code: its code in ``view``.
        q: the probe's embedding.
        view: the gallery's view.
        network: the model.
        rule: the scoring rule.

    Returns:
        The :class:`~siamkit.gallery.GalleryVerification`.

    Shapes:
        q (1, D).
    """
    res = verification(identity, code, q, view, network, verify_calibrator(gallery, identity), rule)
    return personal_verification(gallery, res, q)


def identify_answers(gallery: Any, answers: list[Identification], q: Any) -> list[Identification]:
    """``identify``'s answers with each best candidate's own threshold and negative
    templates (:func:`siamkit.gallery.negatives.personal_identification`).

    Args:
        gallery: an open gallery with its model.
        answers: one answer per probe, at the global threshold.
        q: the probes' embeddings, in the same order.

    Returns:
        The answers.

    Shapes:
        q (N, D).
    """
    thresholds = identity_thresholds(gallery)
    if not thresholds and not identity_negatives(gallery):
        return answers
    cal = decision_calibrators(gallery)[0]
    t0 = None if cal is None else float(cal.threshold_)
    return [personal_identification(gallery, a, q[i : i + 1], t0, thresholds) for i, a in enumerate(answers)]
