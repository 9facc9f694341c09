"""One raw file, one embedding: every path that embeds raw inputs prepares them with the
model's input recipe (preprocessing steps + TTA) and gives the same embedding.

Two models built from recipe files, both with preprocessing AND test-time augmentation:
a face model (a wide face-like PGM frame, centre crop padded to the aspect, flip TTA) and
a signature model trained by ``siamkit train --recipe`` on a tiny generated CEDAR layout
(ink crop / pad / invert, shift TTA). The reference embedding of each file is
``embed_all(net, prepare_images(files, spec))``; compare / Verifier, evaluate, calibrate,
the gallery, the service, the anomaly CLI, feedback pairs (fine-tuning) and the ONNX
runtime must all reproduce it.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from siamkit.calibration import Calibrator
from siamkit.cli import app
from siamkit.data.images import ImageFolderDataset
from siamkit.data.prepare import prepare_image, prepare_images
from siamkit.data.signatures import load_signatures
from siamkit.evaluation.protocols import score_folder
from siamkit.inference import embed_all
from siamkit.io import load_model, save_model
from siamkit.training import build_network
from siamkit.training.recipes import load_recipe
from siamkit.tuples import all_pairs
from siamkit.verify import Verifier, compare_files

# the tiny, one-step training both recipes share
TINY_TRAIN = """
[train]
encoder = "conv4"
encoder_kwargs = { width = 8, depth = 2, grid = 2 }
embedding_dim = 16
epochs = 1
steps_per_epoch = 1
batch_size = 8
m_per_class = 2
val_fraction = 0.0
patience = "none"
precision = "fp32"
progress = false
health = false
"""

FACE_RECIPE = """
[recipe]
name = "tiny-faces"
description = "a wide face frame, centre-cropped"
task = "classes"
[input]
image_size = [24, 16]
channels = 1
preprocess = [ { kind = "crop", fraction = 0.8, pad_to = [24, 16] } ]
tta = "flip"
""" + TINY_TRAIN

SIGNATURE_RECIPE = """
[recipe]
name = "tiny-signatures"
description = "scans, ink-cropped"
task = "signatures-genuine"
[input]
image_size = [24, 32]
channels = 1
preprocess = [ { kind = "signature", size = [24, 32] } ]
tta = "shift"
""" + TINY_TRAIN

runner = CliRunner()


def _cli(*args: Any) -> Any:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def _face(identity: int, shot: int) -> np.ndarray:
    """A 40x60 frame: a bright face-like ellipse with identity-specific dark eyes, margins of clutter."""
    rng = np.random.default_rng(100 * identity + shot)
    yy, xx = np.mgrid[:40, :60]
    a = (rng.random((40, 60)) * 60).astype(np.float64)
    a[((yy - 20) / 16) ** 2 + ((xx - 30) / 11) ** 2 <= 1] = 200
    ey = 14 + identity * 2
    a[ey : ey + 3, 23 - identity : 27 - identity] = 30
    a[ey : ey + 3, 33 + identity : 37 + identity] = 30
    a[28 : 30, 25 : 35] = 60 + 30 * identity
    return np.clip(a + rng.normal(0, 6, a.shape), 0, 255).astype(np.uint8)


def _scan(writer: int, shot: int, forged: bool) -> np.ndarray:
    rng = np.random.default_rng(1000 * writer + 10 * shot + forged)
    a = np.full((44, 96), 235, np.uint8) + rng.integers(0, 15, (44, 96)).astype(np.uint8)
    x0, y0 = 12 + 3 * shot, 10 + writer
    for k in range(5 + writer):
        y = y0 + int(8 * np.sin(k + writer + (0.7 if forged else 0.0)))
        a[y + 10 : y + 13, x0 + 8 * k : x0 + 8 * k + 6] = 20
    return a


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("everywhere")
    faces = root / "faces"
    for i in range(3):
        (faces / f"id{i}").mkdir(parents=True)
        for s in range(3):
            Image.fromarray(_face(i, s), "L").save(faces / f"id{i}" / f"{s}.pgm")
    sigs = root / "sigs"
    for w in range(3):
        for kind, n in (("genuine", 3), ("forged", 2)):
            (sigs / f"{w + 1:02d}" / kind).mkdir(parents=True)
            for s in range(n):
                Image.fromarray(_scan(w, s, kind == "forged"), "L").save(sigs / f"{w + 1:02d}" / kind / f"{s}.png")
    (root / "faces.toml").write_text(FACE_RECIPE)
    (root / "sigs.toml").write_text(SIGNATURE_RECIPE)
    torch.manual_seed(0)
    recipe = load_recipe(root / "faces.toml")
    net = build_network(recipe.train, recipe.input_spec().shape)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net.train()
        net.embed(torch.rand(16, *recipe.input_spec().shape))
    face_model = save_model(net.eval(), root / "face_model")
    _cli("train", "--recipe", root / "sigs.toml", "--data", sigs, "--out", root / "sig_run", "--no-progress")
    face_files = sorted(faces.rglob("*.pgm"))
    sig_files = sorted(sigs.rglob("*.png"))
    return SimpleNamespace(root=root, faces=faces, sigs=sigs, face_model=face_model, sig_model=root / "sig_run" / "model",
                           face_files=face_files, sig_files=sig_files)


def _models(world: SimpleNamespace) -> list[tuple[Path, list[Path]]]:
    return [(world.face_model, world.face_files), (world.sig_model, world.sig_files)]


def _reference(model: Path, files: list[Path]) -> tuple[Any, torch.Tensor]:
    net = load_model(model)
    return net, embed_all(net, prepare_images(files, net.input_spec))


def _png(path: Path) -> bytes:
    buf = io.BytesIO()
    with Image.open(path) as img:
        img.save(buf, "PNG")
    return buf.getvalue()


def test_models_carry_their_recipe(world: SimpleNamespace) -> None:
    face, sig = load_model(world.face_model).input_spec, load_model(world.sig_model).input_spec
    assert face.tta == "flip" and [type(s).__name__ for s in face.preprocess] == ["Crop"]
    assert sig.tta == "shift" and [type(s).__name__ for s in sig.preprocess] == ["SignaturePreprocess"]
    raw = json.loads((world.sig_model / "config.json").read_text())["network"]["input_spec"]
    assert raw["version"] == 2 and raw["preprocess"][0]["kind"] == "signature" and raw["tta"] == "shift"
    # the steps matter: the prepared input is not a plain resize of the file
    plain = torch.from_numpy(np.array(Image.open(world.sig_files[0]).convert("L").resize((32, 24), Image.Resampling.BILINEAR)))
    assert not torch.equal(prepare_image(world.sig_files[0], sig)[0], plain)
    # and so does TTA: without it the embedding differs
    net = load_model(world.face_model)
    x = prepare_images(world.face_files[:2], net.input_spec)
    assert not torch.allclose(embed_all(net, x), embed_all(net, x, tta=None), atol=1e-4)


def test_training_data_is_prepared_as_inference_prepares(world: SimpleNamespace) -> None:
    spec = load_model(world.face_model).input_spec
    ds = ImageFolderDataset.from_folder(world.faces, image_size=spec.image_size, channels=1, preprocess=spec.preprocessor())
    assert torch.equal(ds.images, prepare_images(ds.paths, spec))
    spec = load_model(world.sig_model).input_spec
    sigs = load_signatures(world.sigs, image_size=spec.image_size, preprocess=spec.preprocessor(), require_forged=False)
    assert torch.equal(sigs.images, prepare_images(sigs.paths, spec))


def test_compare_and_verifier(world: SimpleNamespace) -> None:
    for model, files in _models(world):
        net, ref = _reference(model, files)
        want = float(net.embedding_distance(ref[:1], ref[1:2])[0])
        assert Verifier.from_dir(model).verify_files(files[0], files[1]).distance == pytest.approx(want, abs=1e-5)
        assert compare_files(model, files[0], files[1])["distance"] == pytest.approx(want, abs=1e-5)
        r = json.loads(_cli("compare", model, files[0], files[1], "--json").stdout)
        assert r["distance"] == pytest.approx(want, abs=1e-5)


def test_evaluate_and_calibrate(world: SimpleNamespace, tmp_path: Path) -> None:
    net, ref = _reference(world.face_model, world.face_files)
    spec = net.input_spec
    ds = ImageFolderDataset.from_folder(world.faces, image_size=spec.image_size, channels=1, preprocess=spec.preprocessor())
    scored = score_folder(net, ds, baseline=False, one_shot=False)
    order = [world.face_files.index(p) for p in ds.paths]
    assert torch.allclose(scored.embeddings, ref[order], atol=1e-5)
    a, b, same = all_pairs(ds.labels)
    d = net.embedding_distance(ref[order][a], ref[order][b]).detach()
    model = tmp_path / "m"
    model.mkdir()
    for f in world.face_model.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    _cli("calibrate", model, "--data", world.faces)
    fitted = Calibrator.load(model)
    expect = Calibrator().fit(d.numpy(), same.numpy(), split_name="x")
    assert fitted.threshold_ == pytest.approx(expect.threshold_, abs=1e-5)
    shutil.copytree(world.faces, tmp_path / "test_faces")  # evaluate refuses the calibration split itself
    _cli("evaluate", model, "--data", tmp_path / "test_faces", "--out", tmp_path / "rep", "--no-baseline")
    from sklearn.metrics import roc_auc_score

    auc = json.loads((tmp_path / "rep" / "metrics.json").read_text())["verification"]["roc_auc"]
    assert auc == pytest.approx(roc_auc_score(same.numpy(), -d.numpy()), abs=1e-6)


def test_gallery_enrol_and_identify(world: SimpleNamespace, tmp_path: Path) -> None:
    from siamkit.gallery import Gallery

    for model, files in _models(world):
        net, ref = _reference(model, files)
        with Gallery.open(tmp_path / f"{model.name}-{len(files)}.db", net) as g:
            g.enroll("someone", files[1:4])
            cand = g.identify(files[0], k=1).candidates[0]
        want = float(net.embedding_distance(ref[:1].expand(3, -1), ref[1:4]).min())
        assert cand.distance == pytest.approx(want, abs=1e-5)


def test_service_verify(world: SimpleNamespace) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from siamkit.service import KeyStore, ServiceSettings, create_app

    for model, files in _models(world):
        net, ref = _reference(model, files)
        ks = KeyStore()
        key = ks.add("reader", "read")
        with TestClient(create_app(ServiceSettings(model=model, keys=ks)), raise_server_exceptions=False) as c:
            files_form = {"image_a": ("a.png", _png(files[0]), "image/png"), "image_b": ("b.png", _png(files[2]), "image/png")}
            r = c.post("/v1/verify", files=files_form, headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        want = float(net.embedding_distance(ref[:1], ref[2:3])[0])
        assert r.json()["distance"] == pytest.approx(want, abs=1e-5)


def test_anomaly_cli(world: SimpleNamespace, tmp_path: Path) -> None:
    for model, files in _models(world):
        net, ref = _reference(model, files)
        normal = tmp_path / f"normal-{model.parent.name}"
        normal.mkdir()
        for i, f in enumerate(files[1:5]):
            (normal / f"{i}{f.suffix}").write_bytes(f.read_bytes())
        det = tmp_path / f"det-{model.parent.name}"
        _cli("anomaly", "fit", "--model", model, "--normal", normal, "--out", det, "--k", "1")
        r = json.loads(_cli("anomaly", "score", files[0], "--detector", det, "--model", model, "--json").stdout)
        want = float(torch.cdist(ref[:1], ref[1:5]).min())
        assert r["results"][0]["score"] == pytest.approx(want, abs=1e-5)


def test_feedback_pairs_for_finetune(world: SimpleNamespace) -> None:
    from siamkit.feedback.pairs import feedback_pairs

    for model, files in _models(world):
        net, ref = _reference(model, files)
        rec = SimpleNamespace(id=1, kind="verify", image_a=_png(files[0]), image_b=_png(files[1]), truth={"same": True},
                              identity=None, predicted={})
        fb = feedback_pairs([rec], net)
        assert torch.equal(fb.a[0], prepare_image(files[0], net.input_spec))
        e = embed_all(net, torch.cat([fb.a, fb.b]))  # what finetune's pair distances embed
        assert torch.allclose(e, ref[:2], atol=1e-5)


def test_onnx_export_runtime(world: SimpleNamespace, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from siamkit.export.runtime import OnnxVerifier
    from siamkit.export.writer import export_onnx

    for model, files in _models(world):
        net, ref = _reference(model, files)
        out = export_onnx(model, tmp_path / f"onnx-{model.parent.name}")
        manifest = json.loads((out / "siamkit-onnx.json").read_text())
        assert manifest["input_spec"] == net.input_spec.to_dict()
        v = OnnxVerifier.from_dir(out)
        np.testing.assert_allclose(v.embed_files(files), ref.numpy(), atol=1e-4)
        want = float(net.embedding_distance(ref[:1], ref[1:2])[0])
        assert v.verify_files(files[0], files[1]).distance == pytest.approx(want, abs=1e-4)
        r = json.loads(_cli("compare", out, files[0], files[1], "--json", "--runtime", "onnx").stdout)
        assert r["distance"] == pytest.approx(want, abs=1e-4)


def test_official_one_shot_runs(world: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate --runs: the runs' files are prepared by the model's recipe and embedded with its TTA."""
    import siamkit.evaluation.protocols as protocols

    net, ref = _reference(world.face_model, world.face_files)
    run_dir = tmp_path / "runs" / "run01"
    picked: list[Path] = []
    for kind, shot, name in (("training", 0, "class"), ("test", 1, "item")):
        (run_dir / kind).mkdir(parents=True)
        for i in range(3):
            src = world.faces / f"id{i}" / f"{shot}.pgm"
            shutil.copy(src, run_dir / kind / f"{name}{i + 1:02d}.pgm")
            picked.append(src)
    lines = [f"run01/test/item{i + 1:02d}.pgm run01/training/class{i + 1:02d}.pgm" for i in range(3)]
    (run_dir / "class_labels.txt").write_text("\n".join(lines) + "\n")
    seen: list[torch.Tensor] = []
    real = protocols.official_one_shot_accuracy

    def spy(embed_fn: Any, runs: Any, distance: Any = "euclidean") -> Any:
        return real(lambda x: seen.append(embed_fn(x)) or seen[-1], runs, distance=distance)

    monkeypatch.setattr(protocols, "official_one_shot_accuracy", spy)
    r = protocols.score_one_shot_runs(net, tmp_path / "runs", baseline=False)
    want = ref[[world.face_files.index(p) for p in picked]]
    assert torch.allclose(seen[0], want, atol=1e-5) and r["tta"] == "flip"
