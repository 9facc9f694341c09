from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from siamkit import ModelFileError, SiameseNetwork, create_encoder, load_model, save_model


@pytest.mark.parametrize(
    "encoder,kwargs,shape,head",
    [
        ("conv4", {"in_channels": 1, "embedding_dim": 32}, (1, 28, 28), None),
        ("conv4", {"in_channels": 3, "embedding_dim": None, "grid": 2, "depth": 3}, (3, 20, 24), None),
        ("resnet", {"in_channels": 1, "embedding_dim": 16, "widths": [8, 16, 16, 32]}, (1, 32, 32), None),
        ("koch", {"in_channels": 1, "embedding_dim": 64}, (1, 70, 70), "l1"),
        ("mlp", {"in_features": 10, "embedding_dim": 8}, (10,), None),
    ],
)
def test_save_load_same_embeddings_bit_for_bit(tmp_path: Path, encoder, kwargs, shape, head) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = SiameseNetwork(create_encoder(encoder, **kwargs), normalize=True, head=head, distance="cosine",
                         input_spec={"shape": list(shape)})
    # make batch-norm running stats non-trivial
    net.train()
    with torch.no_grad():
        net.embed(torch.rand(8, *shape))
    net.eval()
    x = torch.rand(5, *shape)
    before = net.embed(x)
    save_model(net, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert torch.equal(before, loaded.embed(x))
    assert loaded.distance.name == "cosine" and loaded.normalize and loaded.head_type == head
    if head:
        e1, e2 = before[:2], before[2:4]
        assert torch.equal(net.pair_logits(e1, e2), loaded.pair_logits(e1, e2))


def saved(tmp_path: Path) -> Path:
    net = SiameseNetwork(create_encoder("conv4", in_channels=1, embedding_dim=8, width=4))
    return save_model(net, tmp_path / "m")


def test_never_unpickles(tmp_path: Path) -> None:
    p = saved(tmp_path)
    files = sorted(f.name for f in p.iterdir())
    assert files == ["config.json", "model.safetensors"]
    # a pickle dropped in the folder is never read
    (p / "model.pt").write_bytes(b"\x80\x04K\x01.")
    load_model(p)


def test_other_format_version(tmp_path: Path) -> None:
    p = saved(tmp_path)
    cfg = json.loads((p / "config.json").read_text())
    cfg["format_version"] = 2
    cfg["siamkit_version"] = "9.9.9"
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match=r"format 2 \(siamkit 9.9.9\)"):
        load_model(p)


def test_different_encoder_than_weights(tmp_path: Path) -> None:
    p = saved(tmp_path)
    cfg = json.loads((p / "config.json").read_text())
    cfg["network"]["encoder"]["kwargs"]["width"] = 16
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(p)


def test_unknown_encoder_in_config(tmp_path: Path) -> None:
    p = saved(tmp_path)
    cfg = json.loads((p / "config.json").read_text())
    cfg["network"]["encoder"]["name"] = "vgg99"
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="vgg99"):
        load_model(p)


def test_damaged_files(tmp_path: Path) -> None:
    p = saved(tmp_path)
    (p / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ModelFileError, match="safetensors"):
        load_model(p)
    (p / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="JSON"):
        load_model(p)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="not a siamkit model"):
        load_model(tmp_path / "empty")
