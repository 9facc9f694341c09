"""Every gallery test that takes ``where`` runs on both backends: a SQLite file and a
PostgreSQL database (skipped, with the reason, when no server can be had)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., object]]:
    """``where(name)``: the location of gallery ``name`` in this test (the same name
    gives the same gallery): ``tmp_path / name``, or a new database's URL."""
    if request.param == "sqlite":
        yield lambda name="g.db": tmp_path / name
        return
    from tests.postgres_cluster import drop_database

    server = request.getfixturevalue("postgres_server")
    urls: dict[str, str] = {}

    def at(name: str = "g.db") -> str:
        if name not in urls:
            urls[name] = server.new_database()
        return urls[name]

    yield at
    for url in urls.values():
        drop_database(server.url, url)
