from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_image_folder(root: Path, *, classes: int = 4, per_class: int = 6, size: int = 20, mode: str = "L", seed: int = 0) -> Path:
    """Write a tiny synthetic image folder: class k is a bright square at a class-specific place."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(exist_ok=True)
        for i in range(per_class):
            a = (rng.random((size, size)) * 40).astype(np.uint8)
            r0 = (c * 5) % (size - 6)
            a[r0 : r0 + 6, 2 + c : 8 + c] = 220 + rng.integers(0, 30)
            img = Image.fromarray(a, "L")
            if mode == "RGB":
                img = img.convert("RGB")
            img.save(d / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data")
