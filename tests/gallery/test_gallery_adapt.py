"""Gallery-side adaptation: per-identity thresholds with shrinkage (against the obvious
loop), template updates from confirmed reports, verify using them, the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from siamkit import Verifier
from siamkit.cli import app
from siamkit.feedback import FeedbackStore
from siamkit.gallery import Gallery
from siamkit.gallery.adapt import (ADAPTATION_KEY, adapt_gallery, identity_thresholds, local_threshold,
                                   shrunk_threshold)
from siamkit.gallery.negatives import identity_negatives
from tests.service.test_service import build_model


def naive_local(genuine: list[float], impostor: list[float], t0: float) -> float:
    """The obvious search: every candidate threshold, count its errors one trial at a time."""
    vals = sorted(set(genuine) | set(impostor))
    if not vals:
        return t0
    cands = [t0, vals[0] - 1e-9 * (1 + abs(vals[0])), vals[-1] + 1e-9 * (1 + abs(vals[-1]))]
    cands += [(a + b) / 2 for a, b in zip(vals, vals[1:])]
    best, best_err = None, None
    for c in cands:
        err = sum(1 for g in genuine if g > c) + sum(1 for m in impostor if m <= c)
        if best_err is None or err < best_err or (err == best_err and abs(c - t0) < abs(best - t0)):
            best, best_err = c, err
    return best


@pytest.mark.parametrize("seed", range(40))
def test_local_threshold_matches_the_obvious_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ng, nm = rng.integers(0, 8), rng.integers(0, 8)
    g = np.round(rng.uniform(0.0, 1.0, ng), 1)  # rounded: ties and repeated values
    m = np.round(rng.uniform(0.3, 1.3, nm), 1)
    t0 = float(rng.uniform(0.2, 1.0))
    assert local_threshold(g, m, t0) == pytest.approx(naive_local(g.tolist(), m.tolist(), t0), abs=1e-12)


def test_local_threshold_cases() -> None:
    assert local_threshold(np.array([]), np.array([]), 0.4) == 0.4
    # separable: the error-free interval is (0.2, 0.6); t0 inside it stays
    assert local_threshold(np.array([0.1, 0.2]), np.array([0.6, 0.9]), 0.5) == 0.5
    # an impostor at 0.3 under t0 = 0.5: the threshold goes below it (midpoint with the genuine 0.2)
    assert local_threshold(np.array([0.1, 0.2]), np.array([0.3, 0.9]), 0.5) == pytest.approx(0.25)
    # a genuine at 0.7 above t0: the threshold goes up to accept it, to the middle of the gap before the impostor at 0.9
    assert local_threshold(np.array([0.7]), np.array([0.9]), 0.5) == pytest.approx(0.8)
    # only an impostor under t0: just below it
    assert 0.3 - 1e-8 < local_threshold(np.array([]), np.array([0.3]), 0.5) < 0.3


def test_shrinkage_weights_reports() -> None:
    g, m, t0 = np.array([0.1]), np.array([0.3]), 0.5
    local = local_threshold(g, m, t0)
    assert shrunk_threshold(g, m, t0, 0) == t0
    for n, prior in [(1, 5.0), (5, 5.0), (50, 1.0)]:
        assert shrunk_threshold(g, m, t0, n, prior=prior) == pytest.approx(t0 + n / (n + prior) * (local - t0))
    with pytest.raises(ValueError):
        shrunk_threshold(g, m, t0, 1, prior=0.0)
    with pytest.raises(ValueError):
        shrunk_threshold(g, m, t0, -1)


def _png(img: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img[0].numpy(), "L").save(buf, "PNG")
    return buf.getvalue()


def _setup(tmp_path: Path) -> tuple[Path, Path, Path, torch.Tensor]:
    model = build_model(tmp_path / "model")
    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (12, 1, 28, 28), dtype=np.uint8))
    g_path, fb = tmp_path / "g.db", tmp_path / "fb.sqlite"
    with Gallery.open(g_path, Verifier.from_dir(model)) as g:
        for k in range(4):
            g.enroll(f"p{k}", imgs[2 * k : 2 * k + 2])
    return model, g_path, fb, imgs


def _report(fb: Path, img: torch.Tensor, identity: str, same: bool, actors: tuple[str, ...]) -> None:
    with FeedbackStore.open(fb) as s:
        for a in actors:
            s.add(actor=a, kind="identity_verify", identity=identity, image_a=(_png(img), "png"), truth={"same": same},
                  predicted={"same": not same})


def test_adapt_adds_confirmed_templates_once_and_fits_thresholds(tmp_path: Path) -> None:
    model, g_path, fb, imgs = _setup(tmp_path)
    _report(fb, imgs[8], "p0", True, ("a", "b"))      # confirmed genuine: becomes a sample of p0
    _report(fb, imgs[9], "p1", False, ("a", "b"))     # confirmed impostor of p1
    _report(fb, imgs[10], "p2", True, ("a",))         # one reporter: waits, teaches nothing
    with Gallery.open(g_path, model) as g, FeedbackStore.open(fb) as s:
        t0 = g.threshold
        rec = adapt_gallery(g, s)
        assert g.get("p0").n_samples == 3 and g.get("p2").n_samples == 2
        assert set(rec["thresholds"]) == {"p0", "p1"} and rec["reports"] == {"p0": 1, "p1": 1}
        # p1's threshold by hand: its samples' leave-one-out distance, the others' samples and the impostor probe
        d_imp = g.verify("p1", imgs[9]).distance
        others = [g.verify("p1", imgs[i]).distance for i in (0, 1, 4, 5, 6, 7, 8)]  # 8: now a sample of p0
        with Gallery.open(tmp_path / "solo.db", model) as h:
            h.enroll("x", imgs[3:4])
            loo = [h.verify("x", imgs[2]).distance] * 2  # p1 has two samples: each one's distance to the other
        want = shrunk_threshold(np.array(loo), np.array(others + [d_imp]), t0, 1, prior=5.0)
        assert rec["thresholds"]["p1"] == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert identity_thresholds(g)["p1"] == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert g.verify("p1", imgs[9]).threshold == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert g.verify("p3", imgs[9]).threshold == pytest.approx(t0)  # not reported: the global threshold
        again = adapt_gallery(g, s)  # idempotent: the template is not added twice
        assert g.get("p0").n_samples == 3 and again["templates_added"] == rec["templates_added"]
        assert [r.status for r in s.list()] == ["new"] * 5  # adapting changes no report's status
        assert any(a["action"] == "gallery_adapt" for a in s.audit_log())


def test_thresholds_ignored_after_a_model_change(tmp_path: Path) -> None:
    model, g_path, fb, imgs = _setup(tmp_path)
    _report(fb, imgs[9], "p1", False, ("a", "b"))
    with Gallery.open(g_path, model) as g, FeedbackStore.open(fb) as s:
        adapt_gallery(g, s)
        assert "p1" in identity_thresholds(g)
    other = build_model(tmp_path / "other", seed=1)
    with Gallery.migrate(g_path, other) as g:
        assert ADAPTATION_KEY in g.store.meta() and identity_thresholds(g) == {}
        assert g.verify("p1", imgs[9]).threshold == pytest.approx(g.threshold)


def test_cli_feedback_adapt(tmp_path: Path) -> None:
    model, g_path, fb, imgs = _setup(tmp_path)
    _report(fb, imgs[8], "p0", True, ("a", "b"))
    r = CliRunner().invoke(app, ["feedback", "adapt", "--gallery", str(g_path), "--model", str(model), "--feedback", str(fb), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out["thresholds"]) == {"p0"} and len(out["templates_added"]) == 1 and out["negatives"] == {}
    _report(fb, imgs[9], "p1", False, ("a", "b"))
    args = ["feedback", "adapt", "--gallery", str(g_path), "--model", str(model), "--feedback", str(fb)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "1 negative template(s)" in r.output, r.output
    r = CliRunner().invoke(app, [*args, "--no-negatives", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["negatives"] == {}, r.output
    bad = CliRunner().invoke(app, ["feedback", "adapt", "--gallery", str(g_path), "--model", str(model), "--feedback", str(fb), "--prior", "0"])
    assert bad.exit_code == 2 and "error:" in bad.output and "Traceback" not in bad.output
    missing = CliRunner().invoke(app, ["feedback", "adapt", "--gallery", str(tmp_path / "nope.db"), "--model", str(model)])
    assert missing.exit_code == 2 and "error:" in missing.output


def _force_thresholds(g: Gallery, values: dict[str, float]) -> None:
    """Overwrite stored per-identity thresholds (to put a decision where a test needs it)."""
    rec = g.store.meta()[ADAPTATION_KEY]
    rec["thresholds"].update(values)
    g.store.set_meta({ADAPTATION_KEY: rec})


def test_negative_templates_reject_what_looks_like_a_confirmed_impostor(tmp_path: Path) -> None:
    model, g_path, fb, imgs = _setup(tmp_path)
    _report(fb, imgs[9], "p1", False, ("a", "b"))     # confirmed: imgs[9] is not p1
    _report(fb, imgs[10], "p1", False, ("a",))        # one reporter: not a negative template
    with Gallery.open(tmp_path / "neg.db", model) as h:   # the obvious negative distance: a gallery of the negative alone
        h.enroll("neg", imgs[9:10])
        dn_of = {i: h.verify("neg", imgs[i]).distance for i in range(12)}
    with Gallery.open(g_path, model) as g, FeedbackStore.open(fb) as s:
        rec = adapt_gallery(g, s, negatives=False)
        assert rec["negatives"] == {} and identity_negatives(g) == {}
        _force_thresholds(g, {"p1": 1e9})               # every claim of p1 accepted by the threshold alone
        assert all(g.verify("p1", imgs[i]).same for i in range(12))
        rec = adapt_gallery(g, s)
        assert rec["negatives"] == {"p1": 1} and set(identity_negatives(g)) == {"p1"}
        assert any(a["action"] == "gallery_adapt" and a["detail"].get("negatives") == 1 for a in s.audit_log())
        _force_thresholds(g, {"p1": 1e9})
        flipped = 0
        for i in range(12):
            v = g.verify("p1", imgs[i])
            assert v.negative_distance == pytest.approx(dn_of[i], rel=1e-4, abs=1e-5)
            assert v.same == (dn_of[i] > v.distance)
            flipped += not v.same
        assert not g.verify("p1", imgs[9]).same and g.verify("p1", imgs[2]).same  # the impostor itself / p1's own sample
        assert 1 <= flipped < 12
        assert g.verify("p2", imgs[9]).negative_distance is None  # another identity: no negatives
    other = build_model(tmp_path / "other", seed=1)
    with Gallery.migrate(g_path, other) as g:          # embedded under the old model: ignored
        assert identity_negatives(g) == {} and g.verify("p1", imgs[9]).negative_distance is None


def test_identify_uses_the_identity_thresholds_and_negatives(tmp_path: Path) -> None:
    model, g_path, fb, imgs = _setup(tmp_path)
    _report(fb, imgs[8], "p0", True, ("a", "b"))
    with Gallery.open(g_path, model) as g, FeedbackStore.open(fb) as s:
        before = g.identify(imgs[2])                   # a sample of p1: distance 0 under "best"
        assert before.best.identity == "p1" and before.decision == "p1"
        t_id, t_verify = before.threshold, g.threshold
        adapt_gallery(g, s)
        _force_thresholds(g, {"p1": t_verify - 1e6})  # p1 tightened far below any distance
        after = g.identify(imgs[2])
        assert after.decision == "unknown" and after.unknown
        assert after.threshold == pytest.approx(t_id - 1e6)  # identify's own threshold, moved by p1's offset
        assert g.identify(imgs[0]).threshold == pytest.approx(t_id + identity_thresholds(g)["p0"] - t_verify)  # p0: as fitted
        assert g.identify(imgs[6]).threshold == pytest.approx(t_id)  # p3, never reported: identify's global threshold
        assert [a.decision for a in g.identify_batch(imgs[[2, 4]])] == ["unknown", "p2"]
        probe = imgs[11]
        top = g.identify(probe).best.identity
        _force_thresholds(g, {top: 1e9})
        assert g.identify(probe).decision == top
    _report(fb, probe, top, False, ("a", "b"))        # confirmed: this probe is not its best candidate
    with Gallery.open(g_path, model) as g, FeedbackStore.open(fb) as s:
        adapt_gallery(g, s)
        _force_thresholds(g, {top: 1e9})
        res = g.identify(probe)
        assert res.best.identity == top and res.decision == "unknown" and "impostor" in res.note
        assert g.identify(imgs[2]).decision == "p1"    # thresholds refitted: p1 back to its own


def _confirm(fb: Path, img: torch.Tensor, identity: str, same: bool, actors: tuple[str, ...]) -> None:
    """A report that confirms the decision (predicted == truth)."""
    with FeedbackStore.open(fb) as s:
        for a in actors:
            s.add(actor=a, kind="identity_verify", identity=identity, image_a=(_png(img), "png"), truth={"same": same},
                  predicted={"same": same, "distance": 0.1})


def test_confirmed_matches_are_template_updates_unless_switched_off(tmp_path: Path) -> None:
    model, g_path, fb, imgs = _setup(tmp_path)
    _confirm(fb, imgs[8], "p0", True, ("a", "b"))     # a confirmed match: a template update of p0
    _confirm(fb, imgs[9], "p1", False, ("a",))        # one reporter: waits
    _report(fb, imgs[10], "p2", True, ("a", "b"))     # a confirmed false reject
    with FeedbackStore.open(fb) as s:
        kinds = sorted((r.identity, r.confirmation) for r in s.list())
        assert kinds == [("p0", True), ("p0", True), ("p1", True), ("p2", False), ("p2", False)]
        st = s.stats()
        assert st["confirmations"] == 3 and st["total"] == 5
    only_mistakes = tmp_path / "g_mistakes.db"
    import shutil

    shutil.copy(g_path, only_mistakes)
    with Gallery.open(only_mistakes, model) as g, FeedbackStore.open(fb) as s:
        rec = adapt_gallery(g, s, confirmations=False)
        assert g.get("p0").n_samples == 2 and g.get("p2").n_samples == 3
        assert set(rec["reports"]) == {"p2"} and rec["confirmations"] is False
    with Gallery.open(g_path, model) as g, FeedbackStore.open(fb) as s:
        rec = adapt_gallery(g, s)
        assert g.get("p0").n_samples == 3 and g.get("p2").n_samples == 3 and g.get("p1").n_samples == 2
        assert rec["reports"] == {"p0": 1, "p2": 1} and len(rec["templates_added"]) == 2
        # the new sample is the confirmed image: verifying it against p0 is a zero distance
        assert g.verify("p0", imgs[8]).distance == pytest.approx(0.0, abs=1e-5)
        again = adapt_gallery(g, s)
        assert g.get("p0").n_samples == 3 and again["templates_added"] == rec["templates_added"]


def test_confirmation_of_each_kind() -> None:
    from siamkit.feedback.store import FeedbackRecord

    def rec(kind: str, predicted: dict, truth: dict) -> FeedbackRecord:
        return FeedbackRecord(1, 0.0, "a", None, kind, None, b"", "png", None, None, predicted, truth, None, None, "new")

    assert rec("identity_verify", {"same": True}, {"same": True}).confirmation
    assert not rec("identity_verify", {"same": False}, {"same": True}).confirmation
    assert not rec("identity_verify", {}, {"same": True}).confirmation  # no prediction recorded: a mistake report
    assert rec("verify", {"same": False, "distance": 0.9}, {"same": False}).confirmation
    assert rec("identify", {"identity": "p1"}, {"identity": "p1"}).confirmation
    assert not rec("identify", {"identity": "p2"}, {"identity": "p1"}).confirmation
    assert not rec("identify", {}, {"identity": "p1"}).confirmation
