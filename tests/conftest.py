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


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """A PostgreSQL server for the tests that need one: ``SIAMKIT_TEST_POSTGRES_URL``
    (a server someone runs), else a throw-away cluster of the PostgreSQL binaries on this
    machine (``tests/postgres_cluster.py``); skipped with the reason when neither exists."""
    import os

    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg (pip install 'siamkit[postgres]')")
    from tests.postgres_cluster import Cluster, External, find_binaries

    url = os.environ.get("SIAMKIT_TEST_POSTGRES_URL")
    if url:
        yield External(url)
        return
    if find_binaries() is None:
        pytest.skip("no PostgreSQL server: set SIAMKIT_TEST_POSTGRES_URL or install PostgreSQL (apt-get install postgresql)")
    try:
        cluster = Cluster()
    except (RuntimeError, OSError) as e:
        pytest.skip(f"could not start a throw-away PostgreSQL cluster: {e}")
    try:
        yield cluster
    finally:
        cluster.destroy()
