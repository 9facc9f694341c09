"""ONNX export: the graph's embeddings match PyTorch's, the torch-free verifier gives
Verifier's decisions, bad folders are ModelFileErrors, and the CLI works end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from siamkit import SiameseNetwork, create_encoder, list_encoders, save_model  # noqa: E402
from siamkit.calibration import Calibrator  # noqa: E402
from siamkit.distances import get_distance  # noqa: E402
from siamkit.errors import ExportError, ModelFileError  # noqa: E402
from siamkit.export.runtime import MANIFEST, OnnxVerifier, distance_to_score, paired_distance  # noqa: E402
from siamkit.export.writer import export_onnx  # noqa: E402
from siamkit.verify import Verifier  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"

#: every registered encoder, small: (encoder kwargs, input shape, distance, normalize, head)
CONFIGS = {
    "conv4": (dict(in_channels=1, width=16), (1, 28, 28), "euclidean", True, None),
    # 105x105: Koch's last map is 6x6 (the exporter cannot write its adaptive pooling otherwise)
    "koch": (dict(in_channels=1, embedding_dim=32), (1, 105, 105), "l1", False, "l1"),
    # not an encoder: conv4 under Koch's pair head, small enough for many pairs
    "conv4-head": (dict(in_channels=1, width=16), (1, 28, 28), "euclidean", False, "l1"),
    # block 2's 7x7 map pooled globally (tap_grid 1), the last 3x3 map too; global + local parts
    "conv4_multiscale": (dict(in_channels=1, width=8, embedding_dim=16, depth=3, tap=2, tap_grid=1, mode="concat",
                              local_dim=4), (1, 28, 28), "euclidean", True, None),
    # two conv4 members joined (training/ensemble.py): each normalised inside the graph, concatenated over sqrt(2)
    "ensemble": (dict(members=[{"name": "conv4", "kwargs": {"in_channels": 1, "width": 8, "embedding_dim": 8}},
                               {"name": "conv4", "kwargs": {"in_channels": 1, "width": 4, "embedding_dim": 6, "depth": 3}}]),
                 (1, 28, 28), "euclidean", True, None),
    "resnet": (dict(in_channels=3, widths=(8, 8, 16, 16), embedding_dim=16), (3, 32, 32), "cosine", False, None),
    "mlp": (dict(in_features=12, embedding_dim=8, hidden=(16,)), (12,), "sqeuclidean", False, None),
    # the GRU sequence encoder on float feature sequences (10 steps x 3 features)
    "rnn": (dict(in_features=3, input_dim=8, hidden=6), (10, 3), "cosine", True, None),
    # a transformers backbone (a tiny random ResNet config; its mean / std inside the graph)
    "hf_image": (dict(config={"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]},
                      in_channels=1, embedding_dim=8), (1, 32, 32), "cosine", True, None),
}


def _spec(shape: tuple[int, ...]) -> dict:
    if len(shape) == 3:
        return {"shape": list(shape), "channels": shape[0], "height": shape[1], "width": shape[2]}
    return {"shape": list(shape)}


def make_model(tmp_path: Path, name: str, seed: int = 0) -> tuple[Path, SiameseNetwork]:
    kwargs, shape, dist, normalize, head = CONFIGS[name]
    torch.manual_seed(seed)
    net = SiameseNetwork(create_encoder(name.split("-")[0], **kwargs), distance=dist, normalize=normalize, head=head, input_spec=_spec(shape))
    net.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        for _ in range(3):
            net.embed(torch.rand(6, *shape) * 2)
    net.eval()
    folder = save_model(net, tmp_path / f"model-{name}")
    return folder, net


def test_every_registered_encoder_is_covered() -> None:
    # not exported to ONNX yet: hf_text takes integer token ids; transformer_seq runs torch's
    # fused encoder-layer kernel in eval mode, which the exporter refuses (a clear ExportError)
    assert set(list_encoders()) - {"hf_text", "transformer_seq"} <= set(CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_onnx_embeddings_match_pytorch(tmp_path: Path, name: str) -> None:
    folder, net = make_model(tmp_path, name)
    out = export_onnx(folder, tmp_path / "export")
    v = OnnxVerifier.from_dir(out)
    assert v.precision == "fp32"
    shape = CONFIGS[name][1]
    for batch in (1, 5):  # dynamic batch axis
        x = torch.rand(batch, *shape)
        with torch.no_grad():
            ref = net.embed(x).numpy()
        got = v.embed(x.numpy())
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    if CONFIGS[name][3]:  # normalisation happens inside the graph
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # distances (a pair head's -logit for koch) and scores match the network's
    a, b = torch.rand(5, *shape), torch.rand(5, *shape)
    with torch.no_grad():
        ref_d = net.pair_distance(a, b)
    np.testing.assert_allclose(v.distances(a.numpy(), b.numpy()), ref_d.numpy(), atol=1e-4, rtol=1e-5)
    ref_s = net.distance_to_score(ref_d.double()).numpy()
    got_s = np.array([r.score for r in v.decide(ref_d.numpy())])
    np.testing.assert_allclose(got_s, ref_s, rtol=1e-6)


@pytest.mark.parametrize("name", ["euclidean", "sqeuclidean", "cosine", "l1"])
def test_numpy_distances_match_siamkit_distances(name: str) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 7, generator=g), torch.randn(20, 7, generator=g)
    y[3] = x[3]  # identical rows: euclidean's exact zero
    d = get_distance(name)
    ref = d.paired(x, y)
    got = paired_distance(name, x.numpy(), y.numpy())
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-6, rtol=1e-6)
    assert got[3] == pytest.approx(float(ref[3]), abs=1e-7)
    np.testing.assert_allclose(distance_to_score(name, got), d.to_score(ref.double()).numpy(), rtol=1e-6)


@pytest.mark.parametrize(("name", "confidence"), [("conv4", "platt"), ("conv4-head", "isotonic")])
def test_calibrated_decisions_identical_to_verifier(tmp_path: Path, name: str, confidence: str) -> None:
    folder, net = make_model(tmp_path, name)
    shape = CONFIGS[name][1]
    g = torch.Generator().manual_seed(2)
    fit_a, fit_b = torch.randint(0, 256, (60, *shape), generator=g, dtype=torch.uint8), torch.randint(0, 256, (60, *shape), generator=g, dtype=torch.uint8)
    same = (torch.arange(60) % 2 == 0).numpy()
    ref = Verifier(net)
    Calibrator(confidence_method=confidence).fit(
        ref.distances(fit_a, fit_b).numpy(), same, model_fingerprint=net.fingerprint
    ).save(folder)
    verifier = Verifier.from_dir(folder)
    v = OnnxVerifier.from_dir(export_onnx(folder, tmp_path / "export"))
    a = torch.cat([fit_a[:20], torch.randint(0, 256, (20, *shape), generator=g, dtype=torch.uint8)])
    b = torch.cat([fit_b[:20], torch.randint(0, 256, (20, *shape), generator=g, dtype=torch.uint8)])
    want = verifier.decide(verifier.distances(a, b))
    got = v.decide(v.distances(a.numpy(), b.numpy()))
    assert [r.same for r in got] == [r.same for r in want]
    assert {r.same for r in want} == {True, False}  # the pair set exercises both sides
    for g_, w in zip(got, want):
        assert g_.threshold == w.threshold
        assert g_.distance == pytest.approx(w.distance, abs=1e-4)
        assert g_.confidence == pytest.approx(w.confidence, abs=1e-4)
        assert set(g_.to_dict()) == set(w.to_dict())
    one = v.verify(a[0].numpy(), b[0].numpy())
    assert one.same == want[0].same


def test_manifest_records_the_model(tmp_path: Path) -> None:
    folder, net = make_model(tmp_path, "koch")
    m = json.loads((export_onnx(folder, tmp_path / "e") / MANIFEST).read_text())
    assert m["format"] == "siamkit-onnx" and m["format_version"] == 1
    assert m["fingerprint"] == net.fingerprint
    assert m["input_spec"] == net.input_spec.to_dict()
    assert m["distance"] == "l1" and m["normalize"] is False and m["calibration"] is None
    assert m["head"]["weight"] == pytest.approx(net.pair_head.weight.detach().reshape(-1).tolist())
    assert m["head"]["bias"] == pytest.approx(float(net.pair_head.bias.detach()[0]))


def test_int8_export_is_close_and_chosen_by_default(tmp_path: Path) -> None:
    folder, net = make_model(tmp_path, "conv4")
    out = export_onnx(folder, tmp_path / "e", quantize="int8-dynamic")
    v8, v32 = OnnxVerifier.from_dir(out), OnnxVerifier.from_dir(out, precision="fp32")
    assert v8.precision == "int8"
    x = np.random.default_rng(0).integers(0, 256, (5, 1, 28, 28), dtype=np.uint8)
    e8, e32 = v8.embed(x), v32.embed(x)
    assert not np.array_equal(e8, e32)  # really another graph
    np.testing.assert_allclose(e8, e32, atol=0.05)
    # a later fp32-only export removes the stale int8 graph
    export_onnx(folder, out)
    assert OnnxVerifier.from_dir(out).precision == "fp32"


def test_bad_export_folders_are_model_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        OnnxVerifier.from_dir(tmp_path / "nope")
    with pytest.raises(ModelFileError, match="not a siamkit ONNX export"):
        OnnxVerifier.from_dir(tmp_path)
    folder, _ = make_model(tmp_path, "mlp")
    out = export_onnx(folder, tmp_path / "e")
    m = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(ModelFileError, match="format version 99"):
        OnnxVerifier.from_dir(out)
    (out / MANIFEST).write_text(json.dumps(m))
    (out / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelFileError, match="not a loadable ONNX model"):
        OnnxVerifier.from_dir(out)
    with pytest.raises(ModelFileError, match="no int8 model"):
        OnnxVerifier.from_dir(out, precision="int8")
    with pytest.raises(ModelFileError):
        export_onnx(tmp_path / "missing-model", tmp_path / "e2")


def test_unexportable_network_is_an_export_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = SiameseNetwork(create_encoder("koch", in_channels=1, embedding_dim=8), input_spec=_spec((1, 80, 80)))
    folder = save_model(net, tmp_path / "m")
    with pytest.raises(ExportError, match="cannot be exported to ONNX"):
        export_onnx(folder, tmp_path / "e")
    assert not (tmp_path / "e" / MANIFEST).exists()


def test_runtime_does_not_import_torch() -> None:
    code = "import siamkit.export.runtime, sys; assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(SRC)}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
