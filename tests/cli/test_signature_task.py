"""The signature task end to end on a tiny generated CEDAR-like layout: train --task
signatures, evaluate --protocol signatures, gallery enroll --preprocess signature +
verify --rule + calibrate-references; the metrics against direct computations."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from ..conftest import make_image_folder
from ..reference.naive_metrics import eer as naive_eer
from .test_cli import assert_clean_error, run

FAST = ["--epochs", "1", "--batch-size", "8", "--m-per-class", "2", "--no-progress", "--no-health", "--image-size", "20,40"]


def cedar_like(root: Path, writers: range, *, prefix: str = "w", genuine: int = 5, forged: int = 4, seed: int = 0) -> Path:
    """WRITER/genuine and WRITER/forged PNGs; forgeries scanned at another size and ink level."""
    rng = np.random.default_rng(seed)
    for w in writers:
        for kind, n in (("genuine", genuine), ("forged", forged)):
            d = root / f"{prefix}{w:02d}" / kind
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, wd = (40, 80) if kind == "genuine" else (44, 90 + i)
                a = np.full((h, wd), 255, np.uint8)
                y0, x0 = 8 + int(rng.integers(0, 4)), 5 + 3 * (w % 5) + int(rng.integers(0, 4))
                a[y0 : y0 + 6 + w % 4, x0 : x0 + 30] = int(rng.integers(0, 80 if kind == "genuine" else 140))
                a[y0 + 10 : y0 + 14, x0 + 5 * (w % 3) : x0 + 20 + 5 * (w % 3)] = 20
                Image.fromarray(a, "L").save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model trained with --task signatures on 6 writers (2 held out), and 3 unseen writers."""
    tmp = tmp_path_factory.mktemp("sigtask")
    data = cedar_like(tmp / "train", range(1, 7))
    test = cedar_like(tmp / "test", range(7, 10), prefix="t", seed=1)
    heldout = cedar_like(tmp / "heldout", range(10, 13), prefix="h", seed=2)
    out = tmp / "run"
    r = run("train", "--task", "signatures", "--data", data, "--out", out, *FAST, "--val-fraction", "0.34")
    assert r.exit_code == 0, r.output
    return {"tmp": tmp, "data": data, "test": test, "heldout": heldout, "run": out, "model": out / "model", "stdout": r.stdout}


def test_train_task_signatures_keeps_forgeries_out_of_the_classes(trained: dict[str, Any]) -> None:
    stdout = trained["stdout"]
    # 6 writers x 5 genuine: the 24 forgeries are never images of a writer's class
    assert "30 genuine of 6 writers" in stdout and "24 skilled" in stdout
    assert "30 images of 6 classes, 1x20x40" in stdout
    split = json.loads((trained["run"] / "split.json").read_text())
    assert len(split["val_classes"]) == 2 and len(split["train_classes"]) == 4
    # validation ran on the signature protocol: the held-out writers' genuine vs forgery pairs
    rec = json.loads((trained["run"] / "metrics.jsonl").read_text().splitlines()[0])
    assert 0.0 <= rec["val_roc_auc"] <= 1.0


def test_train_task_signatures_validates_on_forgery_pairs(trained: dict[str, Any]) -> None:
    from siamkit.data.signatures import load_signatures
    from siamkit.evaluation.signatures import signature_validator
    from siamkit.inference import embed_all
    from siamkit.io import load_model

    net = load_model(trained["model"])
    sigs = load_signatures(trained["test"], image_size=(20, 40))
    v = signature_validator(sigs)(net, None, None)
    e = embed_all(net, sigs.images)
    d, same = [], []
    for i, j in itertools.combinations(range(len(sigs)), 2):
        if sigs.writer_labels[i] == sigs.writer_labels[j] and sigs.is_genuine[i]:
            d.append(float(torch.linalg.vector_norm(e[i] - e[j])))
            same.append(bool(sigs.is_genuine[j]))
    assert v["val_roc_auc"] == pytest.approx(roc_auc_score(same, -np.array(d)), abs=1e-6)


def test_wrong_layouts_are_refused(tmp_path: Path, trained: dict[str, Any]) -> None:
    classes = make_image_folder(tmp_path / "classes", classes=3, per_class=3)
    assert_clean_error(run("train", "--task", "signatures", "--data", classes, "--out", tmp_path / "r"), "genuine")
    # the silent merge stays impossible: plain train on the signature layout is refused
    assert_clean_error(run("train", "--data", trained["data"], "--out", tmp_path / "r2", *FAST), "signature layout", "--task signatures")
    no_forged = tmp_path / "noforged"
    cedar_like(no_forged, range(1, 3))
    for w in no_forged.iterdir():
        for f in (w / "forged").iterdir():
            f.unlink()
        (w / "forged").rmdir()
    assert_clean_error(run("train", "--task", "signatures", "--data", no_forged, "--out", tmp_path / "r3", *FAST), "forged")
    assert_clean_error(run("train", "--task", "signatures", "--data", trained["data"], "--out", tmp_path / "r4", *FAST, "--channels", "3"), "channels")
    assert_clean_error(run("train", "--task", "nope", "--data", trained["data"], "--out", tmp_path / "r5"), "--task")


def test_evaluate_protocol_signatures(trained: dict[str, Any], tmp_path: Path) -> None:
    from siamkit.data.signatures import load_signatures
    from siamkit.evaluation.signatures import score_signatures
    from siamkit.io import load_model

    rep = tmp_path / "rep"
    r = run("evaluate", trained["model"], "--data", trained["test"], "--protocol", "signatures", "--out", rep)
    assert r.exit_code == 0, r.output
    assert "t07, t08, t09" in r.stdout and "disjoint" in r.stdout
    assert "probe scan_size" in r.stdout and "raw_pixels" in r.stdout and "random forgeries" in r.stdout
    m = json.loads((rep / "metrics.json").read_text())
    sk = m["signatures"]["skilled"]
    assert set(sk) == {"model", "raw_pixels", "probe:scan_size", "probe:ink_density", "probe:aspect_ratio"}
    # per writer C(5, 2) = 10 same and 5 x 4 = 20 different pairs
    assert m["split"]["same_pairs"] == 30 and m["split"]["forgery_pairs"] == 60
    assert m["signatures"]["writers"] == ["t07", "t08", "t09"]
    # the forgeries here were scanned at another size: the scan-size probe separates them perfectly
    assert sk["probe:scan_size"]["roc_auc"] == 1.0

    net = load_model(trained["model"])
    sigs = load_signatures(trained["test"], image_size=(20, 40))
    sc = score_signatures(net, sigs)
    # the pair labels against an obvious loop over all ordered pairs of the set
    want = {}
    for i, j in itertools.combinations(range(len(sigs)), 2):
        if sigs.writer_labels[i] != sigs.writer_labels[j] or not sigs.is_genuine[i]:
            continue
        want[(i, j)] = bool(sigs.is_genuine[j])
    got = {(int(a), int(b)): bool(s) for a, b, s in zip(sc.a, sc.b, sc.same)}
    assert got == want
    assert m["verification"]["roc_auc"] == pytest.approx(roc_auc_score(sc.same.numpy(), -sc.distances.numpy()))
    # per-writer EER: each writer's own pairs, through the slow reference EER
    per = m["signatures"]["per_writer"]["writers"]
    for w, name in enumerate(sigs.writers):
        mask = (sc.writer == w).numpy()
        assert per[name] == pytest.approx(naive_eer(sc.distances.numpy()[mask].tolist(), sc.same.numpy()[mask].tolist())[0], abs=1e-9)
    vals = np.array(list(per.values()))
    assert m["signatures"]["per_writer"]["mean"] == pytest.approx(vals.mean())
    assert m["signatures"]["per_writer"]["sd"] == pytest.approx(vals.std(ddof=1))
    assert m["signatures"]["per_writer"]["worst"] == pytest.approx(vals.max())
    # the probes against sklearn on scores computed here from the files themselves
    sizes = np.array([np.log(np.prod(Image.open(p).size)) for p in sigs.paths])
    ink = sigs.images.double().mean(dim=(1, 2, 3)).numpy() / 255
    aspect = np.array([np.log(Image.open(p).size[0] / Image.open(p).size[1]) for p in sigs.paths])
    a, b, s = sc.a.numpy(), sc.b.numpy(), sc.same.numpy()
    for name, f in (("scan_size", sizes), ("ink_density", ink), ("aspect_ratio", aspect)):
        assert sk[f"probe:{name}"]["roc_auc"] == pytest.approx(roc_auc_score(s, -np.abs(f[a] - f[b])), abs=1e-12)
    # random forgeries: genuine of a writer vs genuine of another, reported apart
    ra, rb = sc.random["a"], sc.random["b"]
    assert (sigs.writer_labels[ra] != sigs.writer_labels[rb]).all()
    assert sigs.is_genuine[ra].all() and sigs.is_genuine[rb].all()
    assert len(set(zip(ra.tolist(), rb.tolist()))) == ra.numel() == 60
    # --no-baseline computes no raw pixels
    r = run("evaluate", trained["model"], "--data", trained["test"], "--protocol", "signatures", "--out", tmp_path / "r2", "--no-baseline")
    assert r.exit_code == 0, r.output
    assert "raw_pixels" not in json.loads((tmp_path / "r2" / "metrics.json").read_text())["signatures"]["skilled"]


def test_evaluate_refuses_training_writers_and_bad_input(trained: dict[str, Any], tmp_path: Path) -> None:
    model = trained["model"]
    assert_clean_error(run("evaluate", model, "--data", trained["data"], "--protocol", "signatures", "--out", tmp_path / "r"),
                       "were trained on")
    assert_clean_error(run("evaluate", model, "--data", trained["test"], "--protocol", "nope"), "--protocol")
    classes = make_image_folder(tmp_path / "classes", classes=3, per_class=3)
    assert_clean_error(run("evaluate", model, "--data", classes, "--protocol", "signatures", "--out", tmp_path / "r2"), "genuine")


def test_gallery_verify_rule_from_k_references(trained: dict[str, Any], tmp_path: Path) -> None:
    from siamkit.data.images import load_image
    from siamkit.data.signatures import SignaturePreprocess
    from siamkit.inference import embed_all
    from siamkit.io import load_model

    model, test, g = trained["model"], trained["test"], tmp_path / "g.db"
    refs = [test / "t07" / "genuine" / f"{i}.png" for i in range(3)]
    probe = test / "t07" / "forged" / "1.png"
    r = run("gallery", "enroll", "t07", *refs, "-g", g, "-m", model, "--preprocess", "signature")
    assert r.exit_code == 0, r.output
    # no reference calibration yet: distances, no decision
    out = {}
    for rule in ("best", "mean"):
        r = run("gallery", "verify", "t07", probe, "-g", g, "-m", model, "--rule", rule, "--json")
        assert r.exit_code == 0, r.output
        out[rule] = json.loads(r.stdout)
        assert out[rule]["same"] is None and "calibrate-references" in out[rule]["note"]
    # the distances to each reference, computed directly from the preprocessed files
    net = load_model(model)
    pre = SignaturePreprocess(size=(20, 40))
    x = torch.stack([load_image(p, size=(20, 40), channels=1, preprocess=pre) for p in [*refs, probe]])
    e = embed_all(net, x)
    d = torch.linalg.vector_norm(e[:3] - e[3], dim=1).double().numpy()
    assert out["best"]["distances"] == pytest.approx(d.tolist(), abs=1e-5)
    assert out["best"]["distance"] == pytest.approx(d.min(), abs=1e-5)
    assert out["mean"]["distance"] == pytest.approx(d.mean(), abs=1e-5)
    assert out["best"]["k"] == 3 and out["best"]["preprocess"] == "signature"
    # the default verify (no --rule) keeps its behaviour, with the probe prepared as enrolled
    r = run("gallery", "verify", "t07", probe, "-g", g, "-m", model, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["distance"] == pytest.approx(d.min(), abs=1e-5)

    # calibrated on held-out writers: thresholds per rule and K, and the decision uses K = 3
    r = run("gallery", "calibrate-references", "-m", model, "--data", trained["heldout"], "--k", "1,3")
    assert r.exit_code == 0, r.output
    cal = json.loads((model / "reference_calibration.json").read_text())
    assert sorted(cal["rules"]) == ["best", "mean"] and sorted(cal["rules"]["best"]) == ["1", "3"]
    assert cal["fitted_on"]["writers"] == ["h10", "h11", "h12"]
    for rule in ("best", "mean"):
        v = json.loads(run("gallery", "verify", "t07", probe, "-g", g, "-m", model, "--rule", rule, "--json").stdout)
        thr = cal["rules"][rule]["3"]["threshold"]
        assert v["threshold"] == pytest.approx(thr) and v["calibrated_k"] == 3
        assert v["same"] == (v["distance"] <= thr)
    # bad input: one clear line, exit 2
    assert_clean_error(run("gallery", "verify", "t07", probe, "-g", g, "-m", model, "--rule", "median"), "rule")
    assert_clean_error(run("gallery", "verify", "nobody", probe, "-g", g, "-m", model, "--rule", "best"), "nobody")
    assert_clean_error(run("gallery", "calibrate-references", "-m", model, "--data", trained["data"]), "trained on")
    assert_clean_error(run("gallery", "calibrate-references", "-m", model, "--data", trained["heldout"], "--k", "x"), "--k")
    assert_clean_error(run("gallery", "calibrate-references", "-m", model, "--data", trained["heldout"], "--k", "9"), "genuine")
    assert_clean_error(run("gallery", "enroll", "t08", refs[0], "-g", g, "-m", model, "--preprocess", "bogus"), "preprocessing")


def test_reference_trials_and_rules() -> None:
    from siamkit.evaluation.references import combine, reference_trials, trial_distances

    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    genuine = torch.tensor([True, True, True, True, False, True, True, True, False, False, False])
    t = reference_trials(labels, genuine, 2, draws=3, seed=0)
    assert t.refs.shape == (6, 2)
    for i in range(t.refs.shape[0]):
        refs = set(t.refs[i].tolist())
        q = t.questioned[t.trial == i]
        w = int(labels[t.refs[i][0]])
        assert all(genuine[r] and labels[r] == w for r in refs)
        # every other genuine signature of the writer (same) and all its forgeries (different)
        assert set(q.tolist()) == {j for j in range(11) if labels[j] == w and j not in refs}
        assert (t.same[t.trial == i] == genuine[q]).all()
    f = torch.arange(11, dtype=torch.float64)
    d = trial_distances(t, lambda a, b: (f[a] - f[b]).abs(), "mean")
    for m in range(t.questioned.numel()):
        refs = t.refs[t.trial[m]]
        assert float(d[m]) == pytest.approx(float((f[t.questioned[m]] - f[refs]).abs().mean()))
    assert combine(torch.tensor([[3.0, 1.0, 2.0]]), "best").item() == 1.0
    with pytest.raises(Exception, match="rule"):
        combine(torch.tensor([[1.0]]), "median")
    with pytest.raises(Exception, match="genuine"):
        reference_trials(labels, genuine, 5)


def test_protocol_signatures_reads_scans_with_the_models_recorded_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate --protocol signatures prepares scans with the model's own input recipe (here
    a non-default signature step: no inversion), not with a default step of its own."""
    import siamkit
    import siamkit.data.signatures as sig_mod
    from siamkit.data.prepare import prepare_images
    from siamkit.evaluation.signatures import evaluate_signature_folder

    data = cedar_like(tmp_path / "cedar", range(1, 4))
    spec = siamkit.network.InputSpec(shape=(1, 24, 32), channels=1, height=24, width=32).with_recipe(
        [{"kind": "signature", "size": [24, 32], "invert": False}], None)
    torch.manual_seed(0)
    net = siamkit.SiameseNetwork(siamkit.create_encoder("conv4", in_channels=1, embedding_dim=8, width=8), input_spec=spec)
    seen: list[Any] = []
    real = sig_mod.load_signatures

    def spy(*args: Any, **kwargs: Any) -> Any:
        ds = real(*args, **kwargs)
        seen.append(ds)
        return ds

    monkeypatch.setattr(sig_mod, "load_signatures", spy)
    assert evaluate_signature_folder(net, data, tmp_path / "rep", baseline=False)["signatures"]
    (ds,) = seen
    want = prepare_images([Path(p) for p in ds.paths[:4]], spec)
    assert torch.equal(ds.images[:4], want)  # the one prepare function's images, file for file
    default = real(data, image_size=(24, 32), require_forged=True)  # the default step inverts
    assert not torch.equal(default.images, ds.images)
