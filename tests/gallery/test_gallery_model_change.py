"""A gallery re-embedded by another handle / process while a handle holds the old model
(both backends): the old handle's queries and writes are refused
(GalleryModelChangedError), nothing of the old model is written, and adopting the new
model serves exactly what a fresh handle on it serves."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from siamkit import SiameseNetwork, create_encoder, save_model
from siamkit.errors import GalleryModelChangedError, ModelMismatchError
from siamkit.gallery import Gallery

SPEC = {"shape": [1, 16, 16], "channels": 1, "height": 16, "width": 16}


def _net(seed: int) -> SiameseNetwork:
    torch.manual_seed(seed)
    return SiameseNetwork(create_encoder("conv4", in_channels=1, embedding_dim=8, width=4, depth=2), input_spec=dict(SPEC)).eval()


def _img(seed: int, n: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _refused(g: Gallery, seconds: float = 2.0) -> float:
    """Seconds until ``g.identify`` raises GalleryModelChangedError (a database handle
    learns of the re-embedding by NOTIFY; a SQLite handle at its next query)."""
    t0 = time.monotonic()
    while True:
        try:
            g.identify(_img(1), k=1)
        except GalleryModelChangedError:
            return time.monotonic() - t0
        if time.monotonic() - t0 > seconds:
            raise AssertionError(f"still serving the old model after {seconds} s")
        time.sleep(0.01)


def test_reembedded_elsewhere_is_refused_then_adopted(where: Callable[..., Any]) -> None:
    old, new = _net(0), _net(1)
    loc = where()
    a = Gallery.open(loc, old)
    try:
        for i in range(4):
            a.enroll(f"p{i}", _img(10 + i, 2))
        assert a.identify(_img(10), k=1).candidates[0].identity == "p0"  # index built with the old model
        with Gallery.migrate(loc, new) as b:  # "another process" re-embeds
            assert b.n_samples == 8
            waited = _refused(a)
            with pytest.raises(GalleryModelChangedError, match="re-embedded with another model"):
                a.verify("p0", _img(10))
            with pytest.raises(GalleryModelChangedError):
                a.enroll("late", _img(30))  # checked inside the write transaction
            with pytest.raises(GalleryModelChangedError):
                a.add_samples("p1", _img(31))
            assert "late" not in b and b.get("p1").n_samples == 2 and b.n_samples == 8
            with pytest.raises(ModelMismatchError):
                a.adopt_model(_net(2))  # neither the old nor the gallery's model
            a.adopt_model(new)
            probes = _img(10 + 1)
            got, want = a.identify(probes, k=4), b.identify(probes, k=4)
            assert [(c.identity, round(c.distance, 5)) for c in got.candidates] == [
                (c.identity, round(c.distance, 5)) for c in want.candidates
            ]
            a.enroll("late", _img(30))  # writes work again, with the new model
            assert "late" in b
        assert waited < 2.0
    finally:
        a.close()


def test_reembedded_by_another_process(where: Callable[..., Any], tmp_path: Path) -> None:
    """``siamkit gallery reembed`` in a separate process; the open handle refuses, then adopts."""
    old, new = _net(0), _net(1)
    save_model(new, tmp_path / "new")
    loc = where()
    with Gallery.open(loc, old) as a:
        a.enroll("p0", _img(10, 2))
        a.enroll("p1", _img(11, 2))
        a.build_index()
        env_cmd = [sys.executable, "-m", "siamkit.cli", "gallery", "reembed", "--gallery", str(loc), "--model", str(tmp_path / "new")]
        r = subprocess.run(env_cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        _refused(a)
        a.adopt_model(tmp_path / "new")
        assert a.identify(_img(11), k=1).candidates[0].identity == "p1"
        assert a.meta["model_hash"] == a.store.model_hash
