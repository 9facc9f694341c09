"""hf_image: a pretrained transformers vision backbone as the twin's encoder, on tiny
randomly initialised ViT / ResNet folders written by the tests (nothing is downloaded).

The encoder must give the backbone's own output on the backbone's own preprocessing,
record that preprocessing with the model, train end to end, and save / load as a siamkit
model folder that no longer needs the backbone folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from siamkit.encoders.vision import (  # noqa: E402
    PretrainedImageEncoder,
    backbone_input,
    encoder_from_options,
    pretrained_image_encoder,
)
from siamkit.errors import DataError, ModelFileError  # noqa: E402
from siamkit.io import load_model, save_model  # noqa: E402
from siamkit.network import SiameseNetwork  # noqa: E402

from ..conftest import make_image_folder  # noqa: E402

VIT = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8)
RESNET = dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
VIT_PROCESSOR = {"do_normalize": True, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3],
                 "size": {"height": 32, "width": 32}}


def write_backbone(folder: Path, kind: str = "vit", processor: dict | None = None, seed: int = 0) -> Path:
    """A randomly initialised backbone saved as transformers writes a downloaded one."""
    torch.manual_seed(seed)
    if kind == "vit":
        model = transformers.ViTModel(transformers.ViTConfig(**VIT))
    else:
        model = transformers.ResNetModel(transformers.ResNetConfig(**RESNET))
    model.save_pretrained(folder)
    if processor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_backbone(tmp_path_factory.mktemp("vit") / "vit", "vit", VIT_PROCESSOR)


def test_backbone_input_reads_the_processor(tmp_path: Path, vit_folder: Path) -> None:
    info = backbone_input(vit_folder)
    assert info.size == (32, 32) and info.channels == 3
    assert info.image_mean == (0.5, 0.4, 0.3) and info.image_std == (0.2, 0.25, 0.3)
    assert info.preprocess() == []
    # a ConvNeXt-style processor: shortest edge 224 / 0.875, then a centre crop to 224
    convnext = write_backbone(tmp_path / "rn", "resnet", {"size": {"shortest_edge": 224}, "crop_pct": 0.875})
    info = backbone_input(convnext)
    assert info.size == (224, 224) and info.crop_fraction == 0.875
    assert info.preprocess() == [{"kind": "crop", "fraction": 0.875}]
    assert info.image_mean == (0.485, 0.456, 0.406)  # none declared: ImageNet's
    # a processor that does not normalise
    (convnext / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False, "size": 48}))
    info = backbone_input(convnext)
    assert info.size == (48, 48) and info.image_mean == (0.0,) * 3 and info.image_std == (1.0,) * 3


def test_embeds_like_the_backbone_on_its_preprocessing(vit_folder: Path) -> None:
    enc = pretrained_image_encoder(vit_folder).eval()
    ref = transformers.ViTModel.from_pretrained(vit_folder).eval()
    x = torch.rand(4, 3, 32, 32)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = ref(pixel_values=(x - mean) / std).pooler_output
        got = enc(x)
    assert enc.embedding_dim == 16
    torch.testing.assert_close(got, want)
    # other images give other embeddings (the weights are really used)
    with torch.no_grad():
        assert not torch.allclose(enc(torch.rand(4, 3, 32, 32)), got, atol=1e-4)


def test_grey_images_are_repeated_and_projection_and_pooling(vit_folder: Path) -> None:
    grey = pretrained_image_encoder(vit_folder, in_channels=1, embedding_dim=8).eval()
    colour = pretrained_image_encoder(vit_folder, in_channels=3, pooling="mean").eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        out = grey(x)
        feats = grey.model(pixel_values=(x.repeat(1, 3, 1, 1) - grey.mean) / grey.std).pooler_output
        torch.testing.assert_close(out, grey.proj(feats))
        tokens = colour.model(pixel_values=(x.repeat(1, 3, 1, 1) - colour.mean) / colour.std).last_hidden_state
        torch.testing.assert_close(colour(x.repeat(1, 3, 1, 1)), tokens.mean(dim=1))
    assert out.shape == (3, 8) and grey.embedding_dim == 8
    with pytest.raises(DataError, match="takes \\(B, 1, H, W\\)"):
        grey(torch.rand(2, 3, 32, 32))
    # a ViT at another size: its position embeddings are interpolated
    with torch.no_grad():
        assert grey(torch.rand(2, 1, 40, 48)).shape == (2, 8)


def test_resnet_backbone_feature_map_pooling(tmp_path: Path) -> None:
    folder = write_backbone(tmp_path / "rn", "resnet")
    enc = pretrained_image_encoder(folder, in_channels=1).eval()
    assert enc.embedding_dim == 16
    x = torch.rand(2, 1, 36, 28)  # any size
    with torch.no_grad():
        pixels = (x.expand(-1, 3, -1, -1) - enc.mean) / enc.std
        want = enc.model(pixel_values=pixels).pooler_output.flatten(1)
        torch.testing.assert_close(enc(x), want)
    cls = pretrained_image_encoder(folder, pooling="cls")
    with pytest.raises(DataError, match="token model"):
        cls(torch.rand(1, 3, 32, 32))


def test_saved_model_needs_neither_the_folder_nor_the_internet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_backbone(tmp_path / "vit", "vit", VIT_PROCESSOR)
    net = SiameseNetwork(pretrained_image_encoder(folder, in_channels=1, embedding_dim=8), distance="cosine",
                         input_spec={"channels": 1, "height": 32, "width": 32, "shape": [1, 32, 32]}).eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        want = net.embed(x)
    out = save_model(net, tmp_path / "model")
    shutil.rmtree(folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), want)
    kwargs = json.loads((out / "config.json").read_text())["network"]["encoder"]["kwargs"]
    assert kwargs["config"]["model_type"] == "vit" and kwargs["image_mean"] == [0.5, 0.4, 0.3]
    assert kwargs["source"] == str(folder)  # a record only
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_fit_fine_tunes_the_backbone_and_records_its_input(tmp_path: Path) -> None:
    from siamkit.training import TrainConfig, fit

    folder = write_backbone(tmp_path / "rn", "resnet", {"size": {"shortest_edge": 24}, "crop_pct": 0.875})
    before = {k: v.clone() for k, v in transformers.ResNetModel.from_pretrained(folder).state_dict().items()}
    cfg = TrainConfig(encoder="hf_image", encoder_kwargs={"backbone": str(folder)}, embedding_dim=8, epochs=1,
                      steps_per_epoch=3, batch_size=8, m_per_class=2, val_fraction=0.0, progress=False, health=False,
                      lr=1e-3, precision="fp32", preprocess=backbone_input(folder).preprocess())
    images = (torch.rand(24, 1, 24, 24) * 255).to(torch.uint8)
    result = fit(images, torch.arange(6).repeat_interleave(4), cfg, out_dir=tmp_path / "run")
    assert len(result.history) == 1
    net = load_model(tmp_path / "run" / "model")
    after = net.encoder.model.state_dict()
    changed = [k for k in before if "weight" in k and "convolution" in k and not torch.equal(before[k], after[k])]
    assert changed, "the backbone was not trained"
    spec = net.input_spec
    assert (spec.channels, spec.height, spec.width) == (1, 24, 24)
    assert [type(s).__name__ for s in spec.preprocess] == ["Crop"] and spec.preprocess[0].fraction == 0.875


def test_bad_backbones_are_clear_errors(tmp_path: Path, vit_folder: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="no config.json"):
        backbone_input(tmp_path / "empty")
    with pytest.raises(ModelFileError, match="neither a folder nor a model in the local"):
        pretrained_image_encoder(tmp_path / "missing")
    with pytest.raises(DataError, match="--backbone"):
        encoder_from_options({"in_channels": 1})
    with pytest.raises(DataError, match="not \\['grid'\\]"):
        encoder_from_options({"backbone": str(vit_folder), "grid": 2})
    with pytest.raises(ValueError, match="in_channels 2"):
        PretrainedImageEncoder(config={"model_type": "vit", **VIT}, in_channels=2)
    with pytest.raises(ValueError, match="pooling"):
        PretrainedImageEncoder(config={"model_type": "vit", **VIT}, pooling="max")
    # a folder whose weights do not fit its config
    bad = write_backbone(tmp_path / "bad", "vit")
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "hidden_size": 24, "intermediate_size": 48}))
    with pytest.raises(ModelFileError):
        pretrained_image_encoder(bad)


def test_cli_train_with_a_backbone_then_compare(tmp_path: Path, vit_folder: Path) -> None:
    from typer.testing import CliRunner

    from siamkit.cli import app

    runner = CliRunner()
    data = make_image_folder(tmp_path / "data", classes=4, per_class=4)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--out", out, "--backbone", vit_folder, "--epochs", "1", "--batch-size", "8",
            "--m-per-class", "2", "--no-progress", "--val-fraction", "0", "--embedding-dim", "8", "--no-health"]
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["network"]["encoder"]["name"] == "hf_image"
    assert cfg["network"]["input_spec"]["height"] == 32  # the processor's size, not the files' 20
    trained = json.loads((out / "checkpoint" / "trainer.json").read_text())["config"]
    assert trained["lr"] == 1e-4 and trained["encoder_kwargs"] == {"backbone": str(vit_folder)}
    r = runner.invoke(app, ["compare", str(out / "model"), str(data / "class0" / "0.png"), str(data / "class1" / "0.png"), "--json"])
    assert r.exit_code == 0, r.output
    assert 0 <= json.loads(r.stdout)["score"] <= 1
    for bad, words in ((["--backbone", tmp_path / "nope"], "neither a folder"),
                       (["--backbone", vit_folder, "--encoder", "conv4"], "--encoder conv4 with --backbone"),
                       (["--backbone", vit_folder, "--grid", "2"], "--grid")):
        r = runner.invoke(app, [str(a) for a in ["train", "--data", data, "--out", tmp_path / "x", *bad]])
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output and r.output.strip().splitlines()[-1].startswith("error: ")
        assert words in r.output
