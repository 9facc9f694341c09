"""Compare two inputs with a trained model: distance (lower = closer) and score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .data.images import load_image, to_float
from .errors import DataError
from .io import load_model
from .network import SiameseNetwork

__all__ = ["compare_tensors", "compare_files", "load_image_for"]


def load_image_for(network: SiameseNetwork, path: str | Path) -> torch.Tensor:
    """Load an image file the way ``network`` was trained: its channels and size.

    Returns: uint8 (C, H, W).
    """
    spec = network.input_spec
    if "height" not in spec:
        raise DataError("this model was not trained on images (its input spec has no image size)")
    return load_image(path, size=(int(spec["height"]), int(spec["width"])), channels=int(spec["channels"]))


def compare_tensors(network: SiameseNetwork, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(distance, score) of two single inputs (C, H, W), uint8 or float in [0, 1]."""
    network.eval()
    with torch.no_grad():
        x1, x2 = to_float(a)[None], to_float(b)[None]
        d = network.pair_distance(x1, x2)
        return float(d[0]), float(network.distance_to_score(d)[0])


def compare_files(model_dir: str | Path, path_a: str | Path, path_b: str | Path) -> dict[str, Any]:
    """Compare two image files with the model in ``model_dir``.

    Returns:
        {"distance", "score", "distance_kind", "decision", "threshold"}; decision and
        threshold are None until the model has a calibration.
    """
    network = load_model(model_dir)
    d, s = compare_tensors(network, load_image_for(network, path_a), load_image_for(network, path_b))
    kind = "negative pair-head logit" if network.pair_head is not None else f"{network.distance.name} distance"
    return {"distance": d, "score": s, "distance_kind": kind, "decision": None, "threshold": None}
