"""Per-identity decisions from confirmed feedback: negative templates, and the
per-identity thresholds of :mod:`siamkit.gallery.adapt` applied to ``verify`` AND
``identify``.

- **Negative templates**: a confirmed false accept ("this probe is NOT X", two reporters
  agreeing; or an ``identify`` report naming the wrong identity) is kept, embedded with
  the gallery's model, as a negative template of X. A later claim of X is rejected when
  the probe is at least as close to one of X's negative templates as to X itself (the
  distance ``verify`` / ``identify`` scored under the gallery's rule): the probe looks
  more like something known not to be X than like X. This fixes the confused pair (the
  same impostor coming back with another image), which a threshold cannot do without
  rejecting X's own images, and it never turns a clear genuine (closer to X than to any
  negative) into a reject.
- **identify with per-identity thresholds**: the best candidate is accepted at its
  identity's own offset from the global threshold: identify's threshold +
  (identity threshold - the global verify threshold it was fitted against), so an
  identity whose threshold ``adapt`` tightened is tightened in ``identify`` too; then its
  negative templates apply as in ``verify``.

Stored in the gallery's meta (``identity_negatives``) with the model hash they were
embedded under; after a re-embedding with another model they are ignored until the
gallery is adapted again (the reports are still in the feedback store).
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from typing import Any

import torch

from ..data.decode import decode_image_bytes
from ..inference import network_pairwise
from .inputs import embed_batch, prepare_inputs
from .results import UNKNOWN, GalleryVerification, Identification

__all__ = ["NEGATIVES_KEY", "MAX_NEGATIVES", "fit_negatives", "identity_negatives", "negative_distance",
           "personal_identification", "personal_verification"]

#: the gallery meta key of the negative templates
NEGATIVES_KEY = "identity_negatives"
#: negative templates kept per identity (the most recent reports)
MAX_NEGATIVES = 32

_CACHE: "weakref.WeakKeyDictionary[Any, tuple[Any, dict[str, torch.Tensor]]]" = weakref.WeakKeyDictionary()


def fit_negatives(gallery: Any, claims: list[tuple[str, Any, bool]]) -> dict[str, Any]:
    """Embed every confirmed impostor probe of an enrolled identity as its negative
    template (the newest :data:`MAX_NEGATIVES` per identity).

    Args:
        gallery: an open gallery with its model.
        claims: (identity, report, genuine?) of every confirmed claim (see
            :func:`siamkit.gallery.adapt.adapt_gallery`).

    Returns:
        The record to store (JSON-able): ``model_hash``, ``created`` and ``negatives``
        {identity: {"reports": [report ids], "embeddings": [[float]]}}.
    """
    net = gallery.network
    spec = net.input_spec.require_image()
    by_id: dict[str, list[Any]] = {}
    for ident, r, genuine in claims:
        if not genuine and ident in gallery:
            by_id.setdefault(ident, []).append(r)
    out: dict[str, Any] = {}
    for ident, reps in sorted(by_id.items()):
        reps = sorted({r.id: r for r in reps}.values(), key=lambda r: r.id)[-MAX_NEGATIVES:]
        x, _ = prepare_inputs(torch.stack([decode_image_bytes(r.image_a, spec) for r in reps]), net, what="a report's image")
        e = embed_batch(net, x, gallery.settings.batch_size)
        out[ident] = {"reports": [int(r.id) for r in reps], "embeddings": e.double().tolist()}
    return {"model_hash": gallery.meta.get("model_hash"), "created": time.time(), "negatives": out}


def identity_negatives(gallery: Any) -> dict[str, torch.Tensor]:
    """The stored negative templates ({} when none, or embedded under another model).

    Args:
        gallery: an open gallery.

    Returns:
        identity -> embeddings (K, D) (cached per write generation).
    """
    gen = gallery.store.generation()
    hit = _CACHE.get(gallery)
    if hit is not None and hit[0] == gen:
        return hit[1]
    rec = gallery.store.meta().get(NEGATIVES_KEY)
    out: dict[str, torch.Tensor] = {}
    if isinstance(rec, dict) and rec.get("model_hash") == gallery.meta.get("model_hash"):
        out = {str(k): torch.tensor(v["embeddings"], dtype=torch.float32) for k, v in rec.get("negatives", {}).items()
               if v.get("embeddings")}
    _CACHE[gallery] = (gen, out)
    return out


def negative_distance(gallery: Any, identity: str, q: torch.Tensor) -> float | None:
    """The probe's distance to the closest negative template of ``identity``.

    Args:
        gallery: an open gallery with its model.
        identity: the claimed identity.
        q: the probe's embedding.

    Returns:
        The distance, None when the identity has no negative template.

    Shapes:
        q (1, D).
    """
    neg = identity_negatives(gallery).get(identity)
    if neg is None or neg.shape[-1] != q.shape[-1]:
        return None
    return float(network_pairwise(gallery.network, q.float(), neg).min())


def personal_verification(gallery: Any, res: GalleryVerification, q: torch.Tensor) -> GalleryVerification:
    """``verify``'s answer with the identity's negative templates applied: an accepted
    claim is rejected when the probe is at least as close to a negative template.

    Args:
        gallery: an open gallery with its model.
        res: the answer at the (per-identity) threshold.
        q: the probe's embedding.

    Returns:
        The answer; ``negative_distance`` set when the identity has negative templates.

    Shapes:
        q (1, D).
    """
    dn = negative_distance(gallery, res.identity, q)
    if dn is None:
        return res
    return dataclasses.replace(res, negative_distance=dn, same=None if res.same is None else bool(res.same and dn > res.distance))


def personal_identification(gallery: Any, res: Identification, q: torch.Tensor, verify_threshold: float | None,
                            thresholds: dict[str, float]) -> Identification:
    """``identify``'s open-set answer with the best candidate's per-identity threshold
    (as an offset from the global one) and its negative templates.

    Args:
        gallery: an open gallery with its model.
        res: the answer at the global threshold.
        q: the probe's embedding.
        verify_threshold: the global verify threshold the per-identity ones were fitted against.
        thresholds: identity -> its threshold (:func:`siamkit.gallery.adapt.identity_thresholds`).

    Returns:
        The answer (unchanged without a calibration, a candidate, or anything per identity).

    Shapes:
        q (1, D).
    """
    if res.threshold is None or not res.candidates:
        return res
    top = res.candidates[0]
    own = thresholds.get(top.identity)
    thr = res.threshold if own is None or verify_threshold is None else res.threshold + (own - verify_threshold)
    dn = negative_distance(gallery, top.identity, q)
    known = top.distance <= thr and (dn is None or dn > top.distance)
    if thr == res.threshold and known == (not res.unknown):
        return res
    note = None if known else ("closer to a confirmed impostor of the best candidate than to it" if dn is not None and
                               dn <= top.distance and top.distance <= thr else None)
    return dataclasses.replace(res, decision=top.identity if known else UNKNOWN, unknown=not known, threshold=float(thr),
                               note=note)
