"""CLI: calibrate --mode identification, gallery identify using it, compare --batch,
the shift warning of evaluate / compare --batch, gallery calibrate and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from siamkit.cli import app

from ..conftest import make_image_folder
from .test_cli import FAST, assert_clean_error

runner = CliRunner()


def run(*args):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calib")
    tr = make_image_folder(tmp / "tr", classes=6, per_class=6)
    va = make_image_folder(tmp / "va", classes=10, per_class=6, seed=1)
    out = tmp / "run"
    assert run("train", "--data", tr, "--out", out, *FAST).exit_code == 0
    return tmp, out / "model", va


def test_identification_mode_stores_beside_pair_threshold(trained):
    tmp, model, va = trained
    assert run("calibrate", model, "--data", va).exit_code == 0
    pair = json.loads((model / "calibration.json").read_text())
    assert pair["identification"] is None and pair["scores"]["n_impostor"] > 0
    # 60 images cannot resolve 1e-2 (needs 100): exit 2, one line, nothing changed
    assert_clean_error(run("calibrate", model, "--data", va, "--mode", "identification"), "at least 100", "has 60")
    assert json.loads((model / "calibration.json").read_text()) == pair
    r = run("calibrate", model, "--data", va, "--mode", "identification", "--target-far", "0.05", "--gallery-fraction", "0.5")
    assert r.exit_code == 0, r.output
    cal = json.loads((model / "calibration.json").read_text())
    ident = cal["identification"]
    assert cal["threshold"] == pair["threshold"] and "kept" in r.output  # the pair threshold stays
    assert ident["target_far"] == 0.05 and ident["far"] <= 0.05 and ident["n_unknown_probes"] == 60 and ident["n_rotations"] == 2
    # gallery identify uses the identification threshold, verify the pair threshold
    g = tmp / "g.db"
    for c in range(3):
        assert run("gallery", "enroll", f"id{c}", va / f"class{c}" / "0.png", va / f"class{c}" / "1.png",
                   "--gallery", g, "--model", model).exit_code == 0
    r = json.loads(run("gallery", "identify", va / "class0" / "2.png", "--gallery", g, "--model", model, "--json").stdout)
    assert r["threshold"] == ident["threshold"]
    r = json.loads(run("gallery", "verify", "id0", va / "class0" / "2.png", "--gallery", g, "--model", model, "--json").stdout)
    assert r["threshold"] == cal["threshold"]
    assert_clean_error(run("calibrate", model, "--data", va, "--mode", "bogus"), "--mode")


def _pairs_csv(path: Path, root: Path, same_col: bool) -> Path:
    lines = ["path_a,path_b" + (",same" if same_col else "")]
    for c in range(10):
        for i in range(3):
            other = (c + 1 + i) % 10
            lines.append(f"{root}/class{c}/{i}.png,{root}/class{other}/{i + 1}.png" + (",0" if same_col else ""))
        lines.append(f"{root}/class{c}/4.png,{root}/class{c}/5.png" + (",1" if same_col else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compare_batch_and_shift_warning(trained):
    tmp, model, va = trained
    assert run("calibrate", model, "--data", va).exit_code == 0
    te = make_image_folder(tmp / "te", classes=10, per_class=6, seed=5)
    csv = _pairs_csv(tmp / "pairs.csv", te, same_col=False)
    r = run("compare", model, "--batch", csv)
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "path_a,path_b,distance,score,same,confidence" and len(lines) == 41
    assert all(l.split(",")[4] in ("SAME", "DIFFERENT") for l in lines[1:])
    r = run("compare", model, "--batch", csv, "--json")
    rows = [json.loads(l) for l in r.stdout.strip().splitlines()]
    assert len(rows) == 40 and {"distance", "score", "same", "confidence", "threshold"} <= set(rows[0])
    # a calibration whose impostors were far further apart: the data at hand looks shifted
    path = model / "calibration.json"
    cal = json.loads(path.read_text())
    saved = json.dumps(cal)
    s = cal["scores"]
    s["impostor_quantiles"] = [q * 3 + 5 for q in s["impostor_quantiles"]]
    path.write_text(json.dumps(cal))
    r = run("compare", model, "--batch", _pairs_csv(tmp / "pairs2.csv", te, same_col=True))
    assert r.exit_code == 0 and "WARNING: impostor distances" in r.stderr and "Fix:" in r.stderr
    r = run("evaluate", model, "--data", te, "--out", tmp / "rep", "--allow-overlap", "--no-baseline")
    assert r.exit_code == 0, r.output
    assert "WARNING: impostor distances on te" in r.stderr and "siamkit calibrate" in r.stderr
    m = json.loads((tmp / "rep" / "metrics.json").read_text())
    assert m["calibration_domain"]["shifted"] is True and m["calibration_domain"]["ks_statistic"] > 0.5
    path.write_text(saved)
    assert_clean_error(run("compare", model, "--batch", tmp / "missing.csv"), "does not exist")
    assert_clean_error(run("compare", model, te / "class0" / "0.png", "--batch", csv), "--batch")
    bad = tmp / "bad.csv"
    bad.write_text("a,b\nx,y\n")
    assert_clean_error(run("compare", model, "--batch", bad), "path_a,path_b")


def test_gallery_calibrate_refuses_then_fits(trained):
    tmp, model, va = trained
    assert run("calibrate", model, "--data", va).exit_code == 0
    g = tmp / "g2.db"
    for c in range(10):
        imgs = [va / f"class{c}" / f"{i}.png" for i in range(4)]
        assert run("gallery", "enroll", f"p{c}", *imgs, "--gallery", g, "--model", model).exit_code == 0
    # 40 samples x 9 other identities = 360 trials: 1e-3 needs 3,000
    assert_clean_error(run("gallery", "calibrate", "--gallery", g, "--model", model, "--target-far", "1e-3"),
                       "at least 3,000 impostor trials", "holds 360")
    assert_clean_error(run("gallery", "calibrate", "--gallery", tmp / "nope.db", "--model", model), "does not exist")
    r = run("gallery", "calibrate", "--gallery", g, "--model", model, "--target-far", "0.02", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["n_impostor_trials"] == 360 and rec["far"] <= 0.02 and rec["saved"] and rec["shift"] is not None
    v = json.loads(run("gallery", "verify", "p0", va / "class0" / "5.png", "--gallery", g, "--model", model, "--json").stdout)
    assert v["threshold"] == rec["threshold"]
    r = run("gallery", "calibrate", "--gallery", g, "--model", model, "--target-far", "0.02")
    assert r.exit_code == 0 and "verify threshold" in r.stdout and "95% CI" in r.stdout
