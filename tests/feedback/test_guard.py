"""Guard rails between feedback and the model: independent reporters, contradictions held
for review, stats, rollback of a fine-tune."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from siamkit import Verifier
from siamkit.cli import app
from siamkit.errors import FeedbackError, SiamkitError
from siamkit.feedback import FeedbackRecord, FeedbackStore, claim_key, review_report, screen_reports
from siamkit.gallery import Gallery
from tests.service.test_service import _replay, build_model


def png(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, "PNG")
    return buf.getvalue()


_ids = itertools.count(1)


def rec(kind: str, a: bytes, *, b: bytes | None = None, identity: str | None = None, truth: dict, actor: str = "x") -> FeedbackRecord:
    return FeedbackRecord(
        id=next(_ids), created=0.0, actor=actor, reporter=None, kind=kind, identity=identity, image_a=a, image_a_format="png",
        image_b=b, image_b_format=None if b is None else "png", predicted={}, truth=truth, note=None, model_fingerprint=None,
        status="new",
    )


def naive_screen(records: list[FeedbackRecord], min_reporters: int) -> tuple[set[int], set[int], set[int]]:
    """The obvious loop: for each report, look at every other report."""
    teach_members, waiting, held = set(), set(), set()
    for r in records:
        same_q = [o for o in records if claim_key(o) == claim_key(r)]
        if any(o.truth != r.truth for o in same_q):
            held.add(r.id)
        elif len({o.actor for o in same_q}) >= min_reporters:
            teach_members.add(r.id)
        else:
            waiting.add(r.id)
    return teach_members, waiting, held


def test_claim_key_ignores_pair_order_and_truth() -> None:
    a, b = png(1), png(2)
    r1 = rec("verify", a, b=b, truth={"same": True})
    r2 = rec("verify", b, b=a, truth={"same": False})
    assert claim_key(r1) == claim_key(r2)
    assert claim_key(rec("identity_verify", a, identity="p", truth={"same": True})) != claim_key(
        rec("identity_verify", a, identity="q", truth={"same": True})
    )
    assert claim_key(rec("identify", a, truth={"identity": "p"})) != claim_key(rec("identify", b, truth={"identity": "p"}))


@pytest.mark.parametrize("min_reporters", [1, 2, 3])
def test_screen_matches_the_obvious_loop(min_reporters: int) -> None:
    rng = np.random.default_rng(min_reporters)
    imgs = [png(i) for i in range(4)]
    records = []
    for _ in range(60):
        kind = ["verify", "identity_verify", "identify"][rng.integers(3)]
        a = imgs[rng.integers(4)]
        actor = f"u{rng.integers(4)}"
        if kind == "verify":
            records.append(rec(kind, a, b=imgs[rng.integers(4)], truth={"same": bool(rng.random() < 0.9)}, actor=actor))
        elif kind == "identity_verify":
            records.append(rec(kind, a, identity=f"p{rng.integers(2)}", truth={"same": bool(rng.random() < 0.9)}, actor=actor))
        else:
            records.append(rec(kind, a, truth={"identity": f"p{int(rng.random() < 0.1)}"}, actor=actor))
    s = screen_reports(records, min_reporters=min_reporters)
    teach, waiting, held = naive_screen(records, min_reporters)
    assert {i for v in s.members.values() for i in v} == teach
    assert set(s.waiting) == waiting and set(s.held) == held
    # one representative per claim, the claim's lowest id
    assert [r.id for r in s.teach] == sorted(min(v) for v in s.members.values())
    assert len({claim_key(r) for r in s.teach}) == len(s.teach)


def test_one_hostile_reporter_cannot_teach_alone() -> None:
    a, b = png(10), png(11)
    spam = [rec("verify", a, b=b, truth={"same": True}, actor="mallory") for _ in range(50)]
    s = screen_reports(spam, min_reporters=2)
    assert s.teach == [] and len(s.waiting) == 50 and set(s.waiting.values()) == {1}
    confirmed = spam + [rec("verify", b, b=a, truth={"same": True}, actor="alice")]
    s = screen_reports(confirmed, min_reporters=2)
    assert len(s.teach) == 1 and len(s.members[s.teach[0].id]) == 51
    contradicted = confirmed + [rec("verify", a, b=b, truth={"same": False}, actor="bob")]
    s = screen_reports(contradicted, min_reporters=2)
    assert s.teach == [] and len(s.held) == 52


def test_screen_refuses_bad_minimum() -> None:
    with pytest.raises(ValueError, match="min_reporters"):
        screen_reports([], min_reporters=0)


def _store_with_contradiction(path: Path) -> tuple[int, int]:
    with FeedbackStore.open(path) as s:
        yes = s.add(actor="alice", kind="verify", image_a=(png(1), "png"), image_b=(png(2), "png"), truth={"same": True})
        no = s.add(actor="bob", kind="verify", image_a=(png(2), "png"), image_b=(png(1), "png"), truth={"same": False})
        s.add(actor="carol", kind="identify", image_a=(png(3), "png"), truth={"identity": "p1"})
        s.add(actor="carol", kind="identity_verify", identity="p1", image_a=(png(4), "png"), truth={"same": False})
    return yes, no


def test_review_accept_rejects_the_contradiction(tmp_path: Path) -> None:
    path = tmp_path / "fb.sqlite"
    yes, no = _store_with_contradiction(path)
    with FeedbackStore.open(path) as s:
        s.set_status([yes, no], "held", actor="finetune")
        assert review_report(s, yes, accept=True, actor="rev") == {"new": [yes], "rejected": [no]}
        assert s.get(yes).status == "new" and s.get(no).status == "rejected"
        assert review_report(s, yes, accept=False, actor="rev") == {"new": [], "rejected": [yes]}
        s.set_status([yes], "used", actor="finetune")
        with pytest.raises(FeedbackError, match="already used"):
            review_report(s, yes, accept=True, actor="rev")
        actions = [e["action"] for e in s.audit_log()]
        assert actions.count("feedback_rejected") == 2


def test_stats_counts_match_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "fb.sqlite"
    yes, _ = _store_with_contradiction(path)
    with FeedbackStore.open(path) as s:
        s.set_status([yes], "rejected", actor="t")
        st = s.stats()
        rows = s.list()
    assert st["total"] == len(rows) == 4
    assert st["by_status"] == {"new": 3, "used": 0, "rejected": 1, "held": 0}
    assert st["by_kind"] == {"verify": 2, "identify": 1, "identity_verify": 1}
    assert st["by_kind_status"]["verify"] == {"new": 1, "used": 0, "rejected": 1, "held": 0}
    assert st["reporters"] == 3 and st["top_identities"] == [["p1", 2]] and st["finetunes"] == 0


def test_cli_stats_and_review(tmp_path: Path) -> None:
    path = tmp_path / "fb.sqlite"
    yes, no = _store_with_contradiction(path)
    r = CliRunner().invoke(app, ["feedback", "stats", "--feedback", str(path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["total"] == 4
    r = CliRunner().invoke(app, ["feedback", "stats", "--feedback", str(path)])
    assert r.exit_code == 0 and "4 reports from 3 reporters" in r.output and "p1 (2)" in r.output
    r = CliRunner().invoke(app, ["feedback", "review", str(yes), "--feedback", str(path), "--accept", "--reviewer", "rev"])
    assert r.exit_code == 0 and f"rejected: [{no}]" in r.output
    r = CliRunner().invoke(app, ["feedback", "review", "999", "--feedback", str(path), "--reject", "--reviewer", "rev"])
    assert r.exit_code == 2 and "no feedback with id 999" in r.output
    r = CliRunner().invoke(app, ["feedback", "stats", "--feedback", str(tmp_path / "none.sqlite")])
    assert r.exit_code == 2 and "does not exist" in r.output


def _png_of(t: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(t[0].numpy(), "L").save(buf, "PNG")
    return buf.getvalue()


def test_finetune_learns_only_confirmed_reports_and_rolls_back(tmp_path: Path) -> None:
    from siamkit.training.finetune import FinetuneConfig, finetune, rollback

    model_dir = build_model(tmp_path / "model")
    x, y = _replay()
    fb, g_path = tmp_path / "fb.sqlite", tmp_path / "g.db"
    with Gallery.open(g_path, Verifier.from_dir(model_dir)) as g:
        g.enroll("c0", x[:2])
    with FeedbackStore.open(fb) as s:
        lone = s.add(actor="mallory", kind="verify", image_a=(_png_of(x[0]), "png"), image_b=(_png_of(x[6]), "png"), truth={"same": True})
        c1 = s.add(actor="alice", kind="verify", image_a=(_png_of(x[1]), "png"), image_b=(_png_of(x[7]), "png"), truth={"same": False})
        c2 = s.add(actor="bob", kind="verify", image_a=(_png_of(x[7]), "png"), image_b=(_png_of(x[1]), "png"), truth={"same": False})
        h1 = s.add(actor="alice", kind="verify", image_a=(_png_of(x[2]), "png"), image_b=(_png_of(x[8]), "png"), truth={"same": True})
        h2 = s.add(actor="bob", kind="verify", image_a=(_png_of(x[2]), "png"), image_b=(_png_of(x[8]), "png"), truth={"same": False})
    cfg = FinetuneConfig(steps=4, feedback_per_batch=2, replay_per_batch=12, eval_pairs=100, max_regression=1.0)
    assert cfg.min_reporters == 2  # the default asks for two independent reporters
    rep = finetune(model_dir, fb, tmp_path / "new", replay_images=x, replay_labels=y, gallery=g_path, reembed_gallery=True, config=cfg)
    assert rep["feedback_pairs"] == 1 and rep["feedback_used"] == [c1, c2]
    assert rep["feedback_screening"]["waiting_for_reporters"] == [lone]
    assert rep["feedback_screening"]["held_contradicted"] == [h1, h2]
    with FeedbackStore.open(fb) as s:
        assert [s.get(i).status for i in (lone, c1, c2, h1, h2)] == ["new", "used", "used", "held", "held"]
        audit = s.audit_log()
        assert audit[0]["action"] == "finetune" and audit[0]["detail"]["feedback"] == [c1, c2]
    new_fp = Verifier.from_dir(tmp_path / "new").network.fingerprint
    with Gallery.open(g_path, None, create=False) as g:
        assert g.meta["model_fingerprint"] == new_fp
    r = CliRunner().invoke(app, ["finetune", "--model", str(tmp_path / "new"), "--rollback", "--gallery", str(g_path)])
    assert r.exit_code == 0, r.output
    with Gallery.open(g_path, None, create=False) as g:
        assert g.meta["model_fingerprint"] == Verifier.from_dir(model_dir).network.fingerprint and len(g) == 1
    with pytest.raises(SiamkitError, match="finetune_report"):
        rollback(model_dir, g_path)
    # nothing left that may teach: a clear refusal naming why
    with pytest.raises(SiamkitError, match="wait for 2 independent reporters"):
        finetune(model_dir, fb, tmp_path / "again", replay_images=x, replay_labels=y, config=cfg)
    r = CliRunner().invoke(app, ["finetune", "--model", str(model_dir), "--rollback"])
    assert r.exit_code == 2 and "--gallery" in r.output
