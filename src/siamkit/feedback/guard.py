"""Guard rails between reported mistakes and the model: which reports may teach it.

One careless or hostile user must not be able to teach the model that two people are one.
So before a fine-tune, the reports are grouped into *claims*: the same question about the
same images (a verify pair in either order, a probe and a claimed identity, a probe to
identify), compared by the SHA-256 of the image bytes.

- A claim **teaches** when at least ``min_reporters`` distinct actors (the authenticated
  API key's name, or the CLI's ``cli:REPORTER``) made it with the same truth. One
  representative report per claim becomes training pairs, so repeating a report does not
  weigh it more; every report of the claim is then marked ``used``.
- A claim whose reports **contradict** each other (same images, different truths) teaches
  nothing: its reports are held for review (status ``held``) until someone rejects the
  wrong side (``siamkit feedback review``).
- A claim with too few reporters **waits** (stays ``new``) for confirmations.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Screening", "claim_key", "review_report", "screen_reports"]


def _digest(data: bytes | None) -> str:
    return "" if data is None else hashlib.sha256(data).hexdigest()


def claim_key(record: Any) -> tuple[str, ...]:
    """What a report is about, without its answer (two reports with one key ask the same question).

    Args:
        record: a :class:`~siamkit.feedback.FeedbackRecord` (``kind``, ``image_a``,
            ``image_b``, ``identity``).

    Returns:
        ``("verify", digest_lo, digest_hi)`` (the pair in either order),
        ``("identity_verify", digest, identity)`` or ``("identify", digest)``.
    """
    a = _digest(record.image_a)
    if record.kind == "verify":
        lo, hi = sorted((a, _digest(record.image_b)))
        return ("verify", lo, hi)
    if record.kind == "identity_verify":
        return ("identity_verify", a, str(record.identity))
    return (str(record.kind), a)


def _truth(record: Any) -> str:
    t = record.truth
    return f"identity={t['identity']}" if "identity" in t else f"same={bool(t.get('same'))}"


@dataclass
class Screening:
    """The outcome of :func:`screen_reports`.

    Attributes:
        teach: one representative report per claim that may teach the model.
        members: representative id -> the ids of every report of its claim (all become
            ``used`` when the representative is used).
        waiting: id -> distinct reporters so far, for reports whose claim has too few.
        held: ids of reports whose claim is contradicted by another report.
    """

    teach: list[Any] = field(default_factory=list)
    members: dict[int, list[int]] = field(default_factory=dict)
    waiting: dict[int, int] = field(default_factory=dict)
    held: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts and ids (JSON-able) for reports and logs."""
        return {
            "claims_teaching": len(self.teach),
            "reports_teaching": sum(len(v) for v in self.members.values()),
            "waiting_for_reporters": sorted(self.waiting),
            "held_contradicted": sorted(self.held),
        }


def screen_reports(records: Iterable[Any], *, min_reporters: int = 2) -> Screening:
    """Split reports into those that may teach, those waiting for more reporters, and
    contradicted ones held for review.

    Args:
        records: the candidate reports (status ``new`` or ``held``), any order.
        min_reporters: distinct actors needed behind one claim (1 = every report teaches
            unless contradicted).

    Returns:
        The :class:`Screening` (representatives in id order).

    Raises:
        ValueError: ``min_reporters`` < 1.
    """
    if min_reporters < 1:
        raise ValueError(f"min_reporters must be >= 1, got {min_reporters}")
    claims: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    for r in records:
        claims[claim_key(r)].append(r)
    out = Screening()
    for reports in claims.values():
        reports.sort(key=lambda r: r.id)
        if len({_truth(r) for r in reports}) > 1:
            out.held += [r.id for r in reports]
            continue
        actors = {r.actor for r in reports}
        if len(actors) < min_reporters:
            out.waiting.update({r.id: len(actors) for r in reports})
            continue
        out.teach.append(reports[0])
        out.members[reports[0].id] = [r.id for r in reports]
    out.teach.sort(key=lambda r: r.id)
    out.held.sort()
    return out


def review_report(store: Any, feedback_id: int, *, accept: bool, actor: str) -> dict[str, list[int]]:
    """A reviewer's verdict on a report: accepting it rejects the reports that contradict
    it (same claim, another truth) and puts it and its agreeing reports back to ``new``;
    rejecting it rejects it alone. Audited by the store.

    Args:
        store: the open :class:`~siamkit.feedback.FeedbackStore`.
        feedback_id: the report under review.
        accept: True = the report is right.
        actor: the reviewer (audited).

    Returns:
        ``{"new": ids, "rejected": ids}``: what changed.

    Raises:
        FeedbackError: no such report, or it was already used by a fine-tune.
    """
    from ..errors import FeedbackError

    rec = store.get(feedback_id)
    if rec.status == "used":
        raise FeedbackError(f"feedback {feedback_id} was already used by a fine-tune; it can no longer be reviewed")
    if not accept:
        store.set_status([rec.id], "rejected", actor=actor)
        return {"new": [], "rejected": [rec.id]}
    key, truth = claim_key(rec), _truth(rec)
    same_claim = [r for r in store.list(status="new") + store.list(status="held") if claim_key(r) == key]
    agree = sorted({rec.id} | {r.id for r in same_claim if _truth(r) == truth})
    against = sorted(r.id for r in same_claim if _truth(r) != truth)
    if against:
        store.set_status(against, "rejected", actor=actor)
    store.set_status(agree, "new", actor=actor)
    return {"new": agree, "rejected": against}
