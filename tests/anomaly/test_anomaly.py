"""AnomalyDetector: k-NN scores against a naive loop, thresholds, metrics, files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score
from typer.testing import CliRunner

from siamkit import SiameseNetwork, create_encoder, save_model
from siamkit.anomaly import (
    DETECTOR_FILE,
    REFERENCES_FILE,
    AnomalyDetector,
    AnomalyError,
    NotFittedError,
    anomaly_metrics,
    knn_distances,
)
from siamkit.cli.anomaly import anomaly_app
from siamkit.errors import DataError, ModelFileError

DISTANCES = ["euclidean", "sqeuclidean", "cosine", "l1"]
REDUCTIONS = ["mean", "max", "kth", "median"]


# --------------------------------------------------------------------------- naive reference


def naive_distance(a: np.ndarray, b: np.ndarray, distance: str) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if distance == "euclidean":
        return float(np.sqrt(((a - b) ** 2).sum()))
    if distance == "sqeuclidean":
        return float(((a - b) ** 2).sum())
    if distance == "cosine":
        na, nb = max(np.linalg.norm(a), 1e-12), max(np.linalg.norm(b), 1e-12)
        return float(1.0 - (a / na) @ (b / nb))
    return float(np.abs(a - b).sum())


def naive_matrix(queries, refs, distance, *, loo=False):  # type: ignore[no-untyped-def]
    """All query-reference distances by a double loop; inf on the diagonal with ``loo``."""
    return np.array(
        [[np.inf if loo and i == j else naive_distance(q, r, distance) for j, r in enumerate(refs)] for i, q in enumerate(queries)]
    )


def naive_scores(queries, refs, k, reduction, distance, *, loo=False, matrix=None):  # type: ignore[no-untyped-def]
    m = naive_matrix(queries, refs, distance, loo=loo) if matrix is None else matrix
    out = []
    for row in m:
        d = sorted(row.tolist())[:k]
        if reduction == "mean":
            out.append(sum(d) / k)
        elif reduction in ("max", "kth"):
            out.append(d[k - 1])
        else:
            h = k // 2
            out.append(d[h] if k % 2 else (d[h - 1] + d[h]) / 2)
    return np.array(out)


def data(n_ref: int = 60, n_q: int = 25, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    refs = rng.normal(size=(n_ref, dim)).astype(np.float32)
    refs[5] = refs[4]  # an exact duplicate: counts as a neighbour of its twin under leave-one-out
    refs[7] = 0.0  # a zero vector (cosine of it is 0)
    queries = rng.normal(size=(n_q, dim)).astype(np.float32) * 1.5
    queries[0] = refs[3]  # a query equal to a reference
    return refs, queries


# --------------------------------------------------------------------------- k-NN scores


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_scores_match_naive_loop(distance: str, reduction: str) -> None:
    refs, queries = data()
    m_q = naive_matrix(queries, refs, distance)
    m_loo = naive_matrix(refs, refs, distance, loo=True)
    for k in (1, 4, 5):
        det = AnomalyDetector(k=k, reduction=reduction, distance=distance).fit(refs)
        want = naive_scores(queries, refs, k, reduction, distance, matrix=m_q)
        np.testing.assert_allclose(det.score(queries), want, rtol=1e-9, atol=1e-12)
        # leave-one-out on the references: a reference never counts itself
        want_loo = naive_scores(refs, refs, k, reduction, distance, matrix=m_loo)
        np.testing.assert_allclose(det.reference_scores_, want_loo, rtol=1e-9, atol=1e-12)


def test_leave_one_out_excludes_self_but_not_duplicates() -> None:
    refs, _ = data()
    det = AnomalyDetector(k=1, distance="euclidean").fit(refs)
    assert det.reference_scores_[4] == 0.0 and det.reference_scores_[5] == 0.0  # each other's twin
    assert (det.reference_scores_[[0, 1, 2, 3, 6]] > 0).all()  # no self-match
    # scoring the references as ordinary queries finds themselves
    assert np.all(det.score(refs) == 0.0)


def test_max_and_kth_are_the_kth_neighbour_distance() -> None:
    refs, queries = data()
    a = AnomalyDetector(k=4, reduction="max").fit(refs).score(queries)
    b = AnomalyDetector(k=4, reduction="kth").fit(refs).score(queries)
    d = knn_distances(queries, refs, 4)
    assert np.array_equal(a, b) and np.array_equal(a, d[:, 3])
    assert (np.diff(d, axis=1) >= 0).all()


def test_exact_for_near_duplicate_rows_with_large_norms() -> None:
    # FAISS's |x|^2 + |y|^2 - 2x.y in float32 cannot resolve these; the exact recompute does
    rng = np.random.default_rng(1)
    base = rng.normal(size=(1, 16)) * 100.0
    refs = (base + rng.normal(size=(40, 16)) * 1e-3).astype(np.float32)
    queries = (base + rng.normal(size=(10, 16)) * 1e-3).astype(np.float32)
    for distance in ("euclidean", "sqeuclidean"):
        det = AnomalyDetector(k=3, distance=distance).fit(refs)
        np.testing.assert_allclose(det.score(queries), naive_scores(queries, refs, 3, "mean", distance), rtol=1e-7)


def test_default_distance_is_the_networks() -> None:
    refs, _ = data(dim=8)
    net = SiameseNetwork(create_encoder("mlp", in_features=4, embedding_dim=8), distance="cosine")
    assert AnomalyDetector().fit(refs, network=net).distance_ == "cosine"
    assert AnomalyDetector(distance="l1").fit(refs, network=net).distance_ == "l1"
    assert AnomalyDetector().fit(refs).distance_ == "euclidean"


# --------------------------------------------------------------------------- thresholds


def test_quantile_threshold_flags_about_one_minus_quantile_of_normals() -> None:
    rng = np.random.default_rng(2)
    refs = rng.normal(size=(1000, 8)).astype(np.float32)
    det = AnomalyDetector(k=5, quantile=0.9).fit(refs)
    assert det.threshold_source_ == "quantile"
    assert det.threshold_ == pytest.approx(np.quantile(det.reference_scores_, 0.9))
    loo_flagged = float((det.reference_scores_ > det.threshold_).mean())
    assert 0.1 - 1e-3 - 1 / 1000 <= loo_flagged <= 0.1 + 1e-9
    fresh = rng.normal(size=(4000, 8)).astype(np.float32)
    assert abs(float(det.predict(fresh).mean()) - 0.1) < 0.03
    far = rng.normal(size=(50, 8)).astype(np.float32) + 8.0
    assert det.predict(far).all()


def test_labelled_threshold_far() -> None:
    rng = np.random.default_rng(3)
    refs = rng.normal(size=(300, 4)).astype(np.float32)
    val_norm = rng.normal(size=(400, 4)).astype(np.float32)
    val_anom = (rng.normal(size=(100, 4)) * 2.5).astype(np.float32)
    x = np.concatenate([val_norm, val_anom])
    y = np.r_[np.zeros(400, bool), np.ones(100, bool)]
    det = AnomalyDetector(k=5, threshold_method="labelled", target_far=0.05).fit(refs)
    assert det.threshold_ is None
    with pytest.raises(NotFittedError, match="fit_threshold"):
        det.predict(x)
    det.fit_threshold(x, y)
    assert det.threshold_source_ == "labelled-far"
    s = det.score(x)
    flagged = s > det.threshold_
    n_fa = int(flagged[~y].sum())
    assert n_fa <= 0.05 * 400
    # the lowest such threshold: also flagging the next normal below would exceed the rate
    next_normal = s[~y][s[~y] <= det.threshold_].max()
    assert int((s[~y] >= next_normal).sum()) > 0.05 * 400
    # scores or embeddings give the same threshold
    t = det.threshold_
    assert det.fit_threshold(s, y).threshold_ == t
    # too few normal samples to resolve the rate
    with pytest.raises(AnomalyError, match="at least 20 normal"):
        det.fit_threshold(s[390:], y[390:])


def test_labelled_threshold_eer() -> None:
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    det = AnomalyDetector(k=1, threshold_method="labelled", criterion="eer").fit(np.zeros((3, 2)))
    det.fit_threshold(s, y)
    assert det.threshold_ == pytest.approx(0.5)
    with pytest.raises(DataError, match="both normal and anomalous"):
        det.fit_threshold(s[:4], y[:4])


# --------------------------------------------------------------------------- metrics


def test_evaluate_matches_sklearn() -> None:
    rng = np.random.default_rng(4)
    refs = rng.normal(size=(200, 5)).astype(np.float32)
    x = np.concatenate([rng.normal(size=(150, 5)), rng.normal(size=(60, 5)) * 1.8]).astype(np.float32)
    y = np.r_[np.zeros(150, bool), np.ones(60, bool)]
    det = AnomalyDetector(k=3, quantile=0.95).fit(refs)
    m = det.evaluate(x, y)
    s = det.score(x)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["average_precision"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    c = m["confusion"]
    flag = s > det.threshold_
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (
        int((flag & y).sum()), int((flag & ~y).sum()), int((~flag & ~y).sum()), int((~flag & y).sum())
    )
    assert c["accuracy"] == pytest.approx((c["tp"] + c["tn"]) / 210)
    assert c["precision"] == pytest.approx(c["tp"] / (c["tp"] + c["fp"]))
    assert c["recall"] == pytest.approx(c["tp"] / 60)
    assert m["auroc"] > 0.7
    # no threshold: no confusion
    assert anomaly_metrics(s, y)["confusion"] is None
    with pytest.raises(DataError, match="both normal and anomalous"):
        det.evaluate(x[:150], y[:150])


# --------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path: Path) -> None:
    refs, queries = data()
    for distance in ("cosine", "l1"):
        det = AnomalyDetector(k=4, reduction="median", distance=distance, quantile=0.8).fit(refs, model_fingerprint="sha256:abc")
        folder = det.save(tmp_path / f"det-{distance}")
        assert (folder / DETECTOR_FILE).is_file() and (folder / REFERENCES_FILE).is_file()
        with np.load(folder / REFERENCES_FILE, allow_pickle=False) as npz:
            assert npz["references"].dtype == np.float32
        back = AnomalyDetector.load(folder, expected_fingerprint="sha256:abc")
        assert np.array_equal(back.score(queries), det.score(queries))
        assert np.array_equal(back.reference_scores_, det.reference_scores_)
        assert back.threshold_ == det.threshold_ and back.distance_ == distance
        assert (back.k, back.reduction, back.quantile) == (4, "median", 0.8)
        assert np.array_equal(back.predict(queries), det.predict(queries))


def test_load_refuses_damaged_or_foreign_files(tmp_path: Path) -> None:
    refs, _ = data()
    folder = AnomalyDetector(k=2).fit(refs, model_fingerprint="sha256:abc").save(tmp_path / "det")
    with pytest.raises(ModelFileError, match="refit"):
        AnomalyDetector.load(folder, expected_fingerprint="sha256:other")
    with pytest.raises(ModelFileError, match="does not exist"):
        AnomalyDetector.load(tmp_path / "nope")
    blob = bytearray((folder / REFERENCES_FILE).read_bytes())
    blob[-30] ^= 0xFF
    (folder / REFERENCES_FILE).write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="checksum"):
        AnomalyDetector.load(folder)
    cfg = json.loads((folder / DETECTOR_FILE).read_text())
    cfg["format_version"] = 99
    (folder / DETECTOR_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="version"):
        AnomalyDetector.load(folder)


def tiny_model(path: Path, *, size: int = 16, seed: int = 0) -> SiameseNetwork:
    torch.manual_seed(seed)
    enc = create_encoder("conv4", in_channels=1, embedding_dim=8, width=8, depth=2)
    spec = {"shape": [1, size, size], "channels": 1, "height": size, "width": size}
    net = SiameseNetwork(enc, normalize=True, input_spec=spec)
    save_model(net, path)
    return net


def test_fingerprint_mismatch_refused(tmp_path: Path) -> None:
    net_a = tiny_model(tmp_path / "a", seed=0)
    net_b = tiny_model(tmp_path / "b", seed=1)
    x = torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8)
    det = AnomalyDetector(k=3).fit_inputs(net_a, x)
    assert det.model_fingerprint_ == net_a.fingerprint
    folder = det.save(tmp_path / "det")
    ok = AnomalyDetector.load(folder, network=net_a)
    assert np.array_equal(ok.score_inputs(net_a, x[:5]), det.score_inputs(net_a, x[:5]))
    with pytest.raises(ModelFileError, match="not with this model"):
        AnomalyDetector.load(folder, network=net_b)
    with pytest.raises(ModelFileError, match="refit"):
        det.score_inputs(net_b, x[:5])


# --------------------------------------------------------------------------- bad input


def test_bad_input() -> None:
    refs, queries = data()
    refs = refs[:5]
    with pytest.raises(AnomalyError, match="k=5 needs at least 6"):
        AnomalyDetector(k=5).fit(refs)  # leave-one-out needs k + 1
    with pytest.raises(AnomalyError, match="larger than the number of normal references"):
        AnomalyDetector(k=6, threshold_method="labelled").fit(refs)
    AnomalyDetector(k=5, threshold_method="labelled").fit(refs)  # k == M is fine without leave-one-out
    with pytest.raises(DataError, match="empty"):
        AnomalyDetector(k=1).fit(np.zeros((0, 4), np.float32))
    nan = refs.copy()
    nan[2, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        AnomalyDetector(k=1).fit(nan)
    det = AnomalyDetector(k=2).fit(refs)
    with pytest.raises(DataError, match="NaN"):
        det.score(nan)
    with pytest.raises(DataError, match="dimension 3"):
        det.score(queries[:, :3])
    with pytest.raises(DataError, match="2-D"):
        det.score(queries[0])
    assert det.score(np.zeros((0, refs.shape[1]))).shape == (0,)
    with pytest.raises(AnomalyError, match="reduction"):
        AnomalyDetector(reduction="sum").fit(refs)
    with pytest.raises(AnomalyError, match="quantile"):
        AnomalyDetector(k=1, quantile=1.0).fit(refs)
    with pytest.raises(AnomalyError, match="distance"):
        AnomalyDetector(k=1, distance="hamming").fit(refs)
    with pytest.raises(NotFittedError):
        AnomalyDetector().score(queries)


# --------------------------------------------------------------------------- CLI


def square_images(root: Path, n: int, corner: int, size: int = 16, seed: int = 0) -> Path:
    """Noise with a bright 6x6 square; ``corner`` picks where (normal vs anomalous)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    r0, c0 = [(1, 1), (9, 9)][corner]
    for i in range(n):
        a = (rng.random((size, size)) * 60).astype(np.uint8)
        dr, dc = rng.integers(0, 2, size=2)
        a[r0 + dr : r0 + dr + 6, c0 + dc : c0 + dc + 6] = 230
        Image.fromarray(a, "L").save(root / f"{i}.png")
    return root


def test_cli_fit_score_evaluate(tmp_path: Path) -> None:
    app = typer.Typer()
    app.add_typer(anomaly_app, name="anomaly")  # the mount line of siamkit.cli
    runner = CliRunner()

    def run(*args: object):  # type: ignore[no-untyped-def]
        return runner.invoke(app, ["anomaly", *[str(a) for a in args]])

    net = tiny_model(tmp_path / "model")
    normal = square_images(tmp_path / "normal", 24, 0, seed=0)
    held_out = square_images(tmp_path / "held", 10, 0, seed=1)
    anomalous = square_images(tmp_path / "anom", 10, 1, seed=2)
    det_dir = tmp_path / "det"

    r = run("fit", "--model", tmp_path / "model", "--normal", normal, "--out", det_dir, "--k", 3, "--quantile", 0.9)
    assert r.exit_code == 0, r.output
    assert "24 normal references" in r.stdout
    det = AnomalyDetector.load(det_dir, network=net)
    assert det.k == 3 and det.references_.shape == (24, 8)

    r = run("score", "--detector", det_dir, "--model", tmp_path / "model", anomalous / "0.png", held_out / "0.png", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["results"]
    assert [Path(x["path"]).name for x in rows] == ["0.png", "0.png"]
    assert all(isinstance(x["anomaly"], bool) for x in rows)
    r = run("score", "--detector", det_dir, "--model", tmp_path / "model", anomalous)
    assert r.exit_code == 0, r.output
    assert r.stdout.count(".png") == 10 and "threshold" in r.stdout

    report = tmp_path / "report"
    r = run("evaluate", "--detector", det_dir, "--model", tmp_path / "model", "--normal", held_out, "--anomalous", anomalous, "--out", report)
    assert r.exit_code == 0, r.output
    assert "AUROC" in r.stdout
    m = json.loads((report / "metrics.json").read_text())
    assert (report / "histogram.png").stat().st_size > 0
    s = np.array([x["score"] for x in m["scores"]])
    y = np.array([x["is_anomaly"] for x in m["scores"]])
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert m["n_normal"] == 10 and m["n_anomalous"] == 10
    assert set(m["confusion"]) >= {"tp", "fp", "tn", "fn", "accuracy", "precision", "recall"}

    # one clean error line: the references as "held-out" normals; another model
    r = run("evaluate", "--detector", det_dir, "--model", tmp_path / "model", "--normal", normal, "--anomalous", anomalous)
    assert r.exit_code == 2 and r.stderr.strip().startswith("error: ") and "references" in r.stderr
    tiny_model(tmp_path / "other", seed=5)
    r = run("score", "--detector", det_dir, "--model", tmp_path / "other", anomalous / "0.png")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "refit" in r.stderr
    r = run("fit", "--model", tmp_path / "model", "--normal", tmp_path / "missing", "--out", tmp_path / "d2")
    assert r.exit_code == 2 and "does not exist" in r.stderr
