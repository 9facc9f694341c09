"""The learned K-reference rule (gallery calibrate-references fits it, verify --rule learned
uses it) and enrolment of scans with the model's recorded input recipe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from .test_cli import assert_clean_error, run
from .test_signature_task import FAST, cedar_like


def test_learned_rule_is_sklearn_logistic_regression_on_min_mean_max() -> None:
    from sklearn.linear_model import LogisticRegression

    from siamkit.evaluation.reference_rule import LearnedReferenceRule

    rng = np.random.default_rng(0)
    same = rng.random(200) < 0.4
    d = rng.random((200, 3)) + np.where(same, 0.0, 0.6)[:, None]
    rule = LearnedReferenceRule(C=0.5).fit(d, same)
    # the obvious computation: standardise [min, mean, max] by hand, fit sklearn, take -log-odds
    x = np.stack([d.min(1), d.mean(1), d.max(1)], 1)
    z = (x - x.mean(0)) / x.std(0)
    want = -LogisticRegression(C=0.5, max_iter=1000).fit(z, same).decision_function(z)
    np.testing.assert_allclose(rule.distance(d), want, rtol=1e-6, atol=1e-8)
    # lower = more likely genuine, and the JSON form gives the same numbers (no pickle)
    assert rule.distance(d)[same].mean() < rule.distance(d)[~same].mean()
    back = LearnedReferenceRule.from_dict(json.loads(json.dumps(rule.to_dict())))
    np.testing.assert_array_equal(back.distance(d), rule.distance(d))
    assert back.k_ == 3 and back.n_genuine_ == int(same.sum())
    # any K: the features are summaries; K = 1 has min = mean = max
    assert rule.distance(d[:, :1]).shape == (200,)
    with pytest.raises(Exception, match="both genuine and forged"):
        LearnedReferenceRule().fit(d, np.ones(200, bool))
    with pytest.raises(Exception, match="not a learned reference rule"):
        LearnedReferenceRule.from_dict({**rule.to_dict(), "coef": [1.0]})


@pytest.fixture(scope="module")
def sig_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("refrules")
    data = cedar_like(tmp / "train", range(1, 7))
    out = tmp / "run"
    r = run("train", "--task", "signatures", "--data", data, "--out", out, *FAST, "--val-fraction", "0.34")
    assert r.exit_code == 0, r.output
    return {"model": out / "model", "test": cedar_like(tmp / "test", range(7, 10), prefix="t", seed=1),
            "heldout": cedar_like(tmp / "heldout", range(10, 14), prefix="h", seed=2)}


def test_verify_rule_learned(sig_model: dict[str, Any], tmp_path: Path) -> None:
    from siamkit.evaluation.reference_rule import LearnedReferenceRule

    model = tmp_path / "model"
    shutil.copytree(sig_model["model"], model)
    test, g = sig_model["test"], tmp_path / "g.db"
    refs = [test / "t08" / "genuine" / f"{i}.png" for i in range(3)]
    assert run("gallery", "enroll", "t08", *refs, "-g", g, "-m", model, "--preprocess", "signature").exit_code == 0
    probe = test / "t08" / "forged" / "2.png"
    # the learned rule exists only once calibrate-references has fitted it
    assert_clean_error(run("gallery", "verify", "t08", probe, "-g", g, "-m", model, "--rule", "learned"), "calibrate-references")
    r = run("gallery", "calibrate-references", "-m", model, "--data", sig_model["heldout"], "--k", "1,3")
    assert r.exit_code == 0, r.output
    assert "learned: K=1" in r.stdout
    cal = json.loads((model / "reference_calibration.json").read_text())
    assert sorted(cal["rules"]) == ["best", "mean"] and sorted(cal["learned"]) == ["1", "3"]
    rule3 = LearnedReferenceRule.from_dict(cal["learned"]["3"]["rule"])
    thr = cal["learned"]["3"]["calibration"]["threshold"]
    for p in (probe, test / "t08" / "genuine" / "4.png"):
        best = json.loads(run("gallery", "verify", "t08", p, "-g", g, "-m", model, "--rule", "best", "--json").stdout)
        v = json.loads(run("gallery", "verify", "t08", p, "-g", g, "-m", model, "--rule", "learned", "--json").stdout)
        # the learned distance = the stored rule applied to the distances to the 3 references
        assert v["distance"] == pytest.approx(float(rule3.distance(np.array([best["distances"]]))[0]), abs=1e-9)
        assert v["threshold"] == pytest.approx(thr) and v["calibrated_k"] == 3 and v["same"] == (v["distance"] <= thr)
    assert_clean_error(run("gallery", "verify", "t08", probe, "-g", g, "-m", model, "--rule", "median"), "learned")


def test_enroll_preprocess_signature_gives_way_to_the_models_recipe(tmp_path: Path) -> None:
    """A model recording a non-default signature step (no inversion): `--preprocess signature`
    enrols with the model's own step (as every other path); a model without a recipe keeps the flag."""
    import siamkit
    from siamkit.data.images import load_image
    from siamkit.data.prepare import prepare_images
    from siamkit.data.signatures import SignaturePreprocess
    from siamkit.inference import embed_all

    data = cedar_like(tmp_path / "cedar", range(1, 3))
    refs = [data / "w01" / "genuine" / f"{i}.png" for i in range(3)]
    probe = data / "w01" / "forged" / "0.png"
    torch.manual_seed(0)
    enc = siamkit.create_encoder("conv4", in_channels=1, embedding_dim=8, width=8)
    plain = siamkit.network.InputSpec(shape=(1, 24, 32), channels=1, height=24, width=32)
    recipe = plain.with_recipe([{"kind": "signature", "size": [24, 32], "invert": False}], None)
    for name, spec in (("recipe", recipe), ("plain", plain)):
        net = siamkit.SiameseNetwork(enc, input_spec=spec)
        siamkit.save_model(net, tmp_path / name)
        g = tmp_path / f"{name}.db"
        r = run("gallery", "enroll", "w01", *refs, "-g", g, "-m", tmp_path / name, "--preprocess", "signature")
        assert r.exit_code == 0, r.output
        v = json.loads(run("gallery", "verify", "w01", probe, "-g", g, "-m", tmp_path / name, "--rule", "best", "--json").stdout)
        if name == "recipe":
            x = prepare_images([*refs, probe], spec)  # the one prepare function with the recorded step
            assert "gives way" in r.stderr
        else:
            pre = SignaturePreprocess(size=(24, 32))  # the flag's own step (inverts)
            x = torch.stack([load_image(p, size=(24, 32), channels=1, preprocess=pre) for p in [*refs, probe]])
        e = embed_all(net, x)
        want = torch.linalg.vector_norm(e[:3] - e[3], dim=1).double()
        assert v["distances"] == pytest.approx(want.tolist(), abs=1e-5), name
    # the two preparations differ, so the test above can tell them apart
    assert not torch.equal(prepare_images(refs, recipe), torch.stack([load_image(p, size=(24, 32), channels=1, preprocess=SignaturePreprocess(size=(24, 32))) for p in refs]))
