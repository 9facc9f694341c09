"""Bulk enrolment (``enroll_many``, ``siamkit gallery enroll-folder``) on both backends:
one transaction per batch (a refused batch writes nothing, the batches before it stay),
the same records and search results as enrolling one by one, followed by another handle."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from siamkit import SiameseNetwork, create_encoder, save_model
from siamkit.cli import app as cli
from siamkit.errors import GalleryError, IdentityExistsError
from siamkit.gallery import Gallery
from siamkit.gallery.bulk import enroll_many

SPEC = {"shape": [1, 16, 16], "channels": 1, "height": 16, "width": 16}


@pytest.fixture(scope="module")
def net() -> SiameseNetwork:
    torch.manual_seed(0)
    return SiameseNetwork(create_encoder("conv4", in_channels=1, embedding_dim=8, width=4, depth=2), input_spec=dict(SPEC)).eval()


def _img(seed: int, n: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_bulk_equals_one_by_one(where: Callable[..., Any], net: SiameseNetwork) -> None:
    items = [(f"p{i}", _img(i, 1 + i % 3)) for i in range(23)]
    with Gallery.open(where("bulk"), net) as bulk, Gallery.open(where("one"), net) as one:
        follower = Gallery.open(where("bulk"), net)
        try:
            assert follower.identify(_img(0), k=1).candidates == []  # empty gallery, view read
            assert enroll_many(bulk, items, batch=5) == 23
            for name, x in items:
                one.enroll(name, x)
            assert [(r.identity, r.n_samples) for r in bulk.list()] == [(r.identity, r.n_samples) for r in one.list()]
            for i in (0, 7, 22):
                got, want = bulk.identify(_img(i)[:1], k=3), one.identify(_img(i)[:1], k=3)
                assert [(c.identity, round(c.distance, 5)) for c in got.candidates] == [
                    (c.identity, round(c.distance, 5)) for c in want.candidates
                ]
                assert follower.identify(_img(i)[:1], k=1).candidates[0].identity == f"p{i}"
            assert bulk.get("p2").samples[0].has_input and bulk.store.integrity_check() == "ok"
            assert [e["action"] for e in bulk.audit_log()].count("enroll") == 23
        finally:
            follower.close()


def test_a_refused_batch_writes_nothing(where: Callable[..., Any], net: SiameseNetwork) -> None:
    with Gallery.open(where(), net) as g:
        g.enroll("taken", _img(100))
        gen = g.store.generation()
        items = [(f"a{i}", _img(i)) for i in range(4)] + [("b0", _img(50)), ("taken", _img(51)), ("b2", _img(52))]
        with pytest.raises(IdentityExistsError, match="taken"):
            enroll_many(g, items, batch=4)
        names = {r.identity for r in g.list()}
        assert names == {"taken", "a0", "a1", "a2", "a3"}  # the first batch stays, the second is not written at all
        assert g.store.generation() == gen + 4
        with pytest.raises(GalleryError, match="twice"):
            enroll_many(g, [("c", _img(1)), ("c", _img(2))])
        with pytest.raises(GalleryError, match="batch"):
            enroll_many(g, [("d", _img(1))], batch=0)
        assert "c" not in g and "d" not in g


def test_cli_enroll_folder(tmp_path: Path, net: SiameseNetwork) -> None:
    save_model(net, tmp_path / "m")
    root = tmp_path / "people"
    rng = np.random.default_rng(0)
    for i in range(5):
        (root / f"person{i}").mkdir(parents=True)
        for j in range(2):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(root / f"person{i}" / f"{j}.png")
    runner = CliRunner()
    args = ["gallery", "enroll-folder", str(root), "--gallery", str(tmp_path / "g.db"), "--model", str(tmp_path / "m"), "--batch", "2"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "enrolled 5 identities" in r.stdout
    with Gallery.open(tmp_path / "g.db", net) as g:
        assert len(g) == 5 and g.get("person3").n_samples == 2
    r = runner.invoke(cli, args)  # every one exists now
    assert r.exit_code == 2 and "error:" in r.output and "already enrolled" in r.output
    (root / "empty").mkdir()
    r = runner.invoke(cli, args)
    assert r.exit_code == 2 and "hold no image" in r.output
    r = runner.invoke(cli, ["gallery", "enroll-folder", str(tmp_path / "nope"), "--gallery", str(tmp_path / "g.db"), "--model", str(tmp_path / "m")])
    assert r.exit_code == 2 and "error:" in r.output
