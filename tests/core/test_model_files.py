"""Model folders that were changed after saving are refused on load: weights that no
longer match config.json's fingerprint, a calibration threshold no distance can have."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from siamkit import ModelFileError, SiameseNetwork, create_encoder, load_model, save_model
from siamkit.calibration import Calibrator
from siamkit.io import file_fingerprint
from siamkit.verify import Verifier


def _saved(tmp_path: Path, **kwargs: object) -> Path:
    torch.manual_seed(0)
    net = SiameseNetwork(create_encoder("mlp", in_features=6, embedding_dim=4, hidden=(8,)), **kwargs)  # type: ignore[arg-type]
    save_model(net, tmp_path / "m")
    rng = np.random.default_rng(0)
    d = np.r_[rng.uniform(0, 0.3, 30), rng.uniform(0.2, 1, 30)]
    Calibrator().fit(d, np.r_[np.ones(30, bool), np.zeros(30, bool)], split_name="val", model_fingerprint=net.fingerprint).save(tmp_path / "m")
    return tmp_path / "m"


def test_weights_changed_after_saving_are_refused(tmp_path: Path) -> None:
    m = _saved(tmp_path)
    assert load_model(m).fingerprint == file_fingerprint(m / "model.safetensors")
    raw = bytearray((m / "model.safetensors").read_bytes())
    raw[-1] ^= 0x01  # one bit of the last weight: still a valid safetensors file
    (m / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="model.safetensors does not match the fingerprint"):
        load_model(m)
    with pytest.raises(ModelFileError, match="model.safetensors"):
        Verifier.from_dir(m)


@pytest.mark.parametrize("threshold", [-0.5, "NaN", "Infinity"])
def test_impossible_calibration_threshold_is_refused(tmp_path: Path, threshold: object) -> None:
    m = _saved(tmp_path)
    cal = json.loads((m / "calibration.json").read_text())
    cal["threshold"] = threshold
    (m / "calibration.json").write_text(json.dumps(cal).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity"))
    with pytest.raises(ModelFileError, match="threshold"):
        Calibrator.load(m)
    with pytest.raises(ModelFileError, match="threshold"):
        Verifier.from_dir(m)


def test_pair_head_threshold_may_be_negative(tmp_path: Path) -> None:
    m = _saved(tmp_path, head="l1")
    cal = json.loads((m / "calibration.json").read_text())
    cal["threshold"] = -2.5  # a -logit: any real number
    (m / "calibration.json").write_text(json.dumps(cal))
    assert Calibrator.load(m).threshold_ == -2.5
