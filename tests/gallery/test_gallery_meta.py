"""A gallery file whose meta table was edited is refused on open (not silently used)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from siamkit import SiameseNetwork, create_encoder
from siamkit.errors import GalleryFileError
from siamkit.gallery import Gallery


@pytest.mark.parametrize("value", ["8", "\"16\"", "null", "true"])
def test_edited_embedding_dim_is_refused_on_open(tmp_path: Path, value: str) -> None:
    torch.manual_seed(0)
    net = SiameseNetwork(create_encoder("mlp", in_features=6, embedding_dim=4, hidden=(8,)))
    with Gallery.open(tmp_path / "g.db", net) as g:
        g.enroll("a", torch.randn(2, 6))
    with sqlite3.connect(tmp_path / "g.db") as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'embedding_dim'", (value,))
    con.close()
    with pytest.raises(GalleryFileError, match="embedding_dim"):
        Gallery.open(tmp_path / "g.db", net)
    with sqlite3.connect(tmp_path / "g.db") as con:
        con.execute("UPDATE meta SET value = '4' WHERE key = 'embedding_dim'")
    con.close()
    with Gallery.open(tmp_path / "g.db", net) as g:
        assert [r.identity for r in g.list()] == ["a"]
