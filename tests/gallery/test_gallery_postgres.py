"""What only a PostgreSQL gallery does: refusing what is not a gallery, following other
processes' writes (incrementally, and within a second by LISTEN / NOTIFY), and riding
out a server restart (unavailable while it is down, back by itself, nothing lost)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from siamkit import SiameseNetwork, create_encoder
from siamkit.errors import GalleryFileError, GalleryUnavailableError
from siamkit.gallery import Gallery
from siamkit.gallery.pg_schema import PG_SCHEMA_VERSION
from siamkit.gallery.pg_store import redact_url

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module")
def net() -> SiameseNetwork:
    torch.manual_seed(0)
    enc = create_encoder("conv4", in_channels=1, embedding_dim=8, width=4, depth=2)
    return SiameseNetwork(enc, input_spec={"shape": [1, 16, 16], "channels": 1, "height": 16, "width": 16}).eval()


def _img(seed: int, n: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def db(postgres_server: Any) -> Any:
    from tests.postgres_cluster import drop_database

    url = postgres_server.new_database()
    yield url
    drop_database(postgres_server.url, url)


def _wait(cond: Any, seconds: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.01)
    raise AssertionError(f"not within {seconds} s")


def test_what_is_not_a_gallery_is_refused(db: str, net: SiameseNetwork) -> None:
    with pytest.raises(GalleryFileError, match="no siamkit gallery; creating one needs a model"):
        Gallery.open(db, None)
    Gallery.open(db, net).close()
    with psycopg.connect(db, autocommit=True) as con:
        rows = con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, PG_SCHEMA_VERSION + 1))
        con.execute("INSERT INTO schema_version VALUES (99, 0)")
    with pytest.raises(GalleryFileError, match="schema version 99, written by a newer siamkit"):
        Gallery.open(db, net)
    with psycopg.connect(db, autocommit=True) as con:
        con.execute("DELETE FROM schema_version WHERE version = 99")
        con.execute("DELETE FROM meta WHERE key = 'model_hash'")
    with pytest.raises(GalleryFileError, match="lacks \\['model_hash'\\]"):
        Gallery.open(db, net)


def test_unreachable_server_and_password_redacted(net: SiameseNetwork) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://me:secret@127.0.0.1:{port}/none"
    t0 = time.monotonic()
    with pytest.raises(GalleryUnavailableError) as e:
        Gallery.open(url, net)
    assert time.monotonic() - t0 < 10 and "secret" not in str(e.value) and "me:***@" in str(e.value)
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    # the CLI: one error line, exit 2, no password
    from typer.testing import CliRunner

    from siamkit.cli.gallery import gallery_app

    r = CliRunner().invoke(gallery_app, ["list", "--gallery", url])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: cannot reach the gallery database"), r.output
    assert "secret" not in r.output


def test_another_handle_follows_writes_incrementally_and_by_notify(db: str, net: SiameseNetwork) -> None:
    a = Gallery.open(db, net, index="flat")
    b = Gallery.open(db, net, index="flat")
    try:
        for c in range(3):
            a.enroll(f"id{c}", _img(c, 2))
        assert b.identify(_img(1)[0] , k=1).best.identity == "id1"
        index = b._indexes["best"][0]
        a.enroll("late", _img(7, 2))
        # b learns of it by NOTIFY, before any query asks: and appends, not rebuilds
        waited = _wait(lambda: b._cache.view is not None and b._cache.view.generation == 4, 1.0)
        assert waited < 1.0
        assert b._indexes["best"][0] is index and index.ntotal == 8
        assert b.identify(_img(7)[0], k=1).best.identity == "late"
        a.remove("id0")
        _wait(lambda: b._cache.view.generation == 5, 1.0)
        assert "id0" not in [c.identity for c in b.identify(_img(0)[0], k=5).candidates]
        a.add_samples("id2", _img(9, 1))
        a.set_metadata("id2", {"x": 1})
        _wait(lambda: b._cache.view.generation == 7, 1.0)
        assert b._cache.view.snap.identities == ["id1", "id2", "late"]
        # the follower's view equals a fresh read of the database
        fresh = b.store.snapshot(8)
        assert fresh.identities == b._cache.view.snap.identities
        assert (fresh.sample_ids == b._cache.view.snap.sample_ids).all()
        assert torch.equal(torch.from_numpy(fresh.embeddings.copy()), b._cache.view.embeddings)
        assert b.identify(_img(9)[0], k=1).best.identity == "id2"
    finally:
        a.close()
        b.close()


def test_server_restart_unavailable_then_back_nothing_lost(postgres_server: Any, db: str, net: SiameseNetwork) -> None:
    if getattr(postgres_server, "restart", None) is None:
        pytest.skip("needs the throw-away cluster (an external server is not restarted)")
    g = Gallery.open(db, net, timeout=2.0)
    try:
        g.enroll("kept", _img(1, 2))
        postgres_server.stop("immediate")  # like a crash: only committed transactions survive
        try:
            # answered from memory until the listener's heartbeat is stale, then unavailable
            _wait(lambda: not _ok(lambda: g.identify(_img(1)[0])), 5.0)
            with pytest.raises(GalleryUnavailableError):
                g.enroll("lost", _img(2, 1))
        finally:
            postgres_server.start()
        # back by itself: the pool reconnects, the listener too
        _wait(lambda: _ok(lambda: g.identify(_img(1)[0], k=1)), 15.0)
        assert g.identify(_img(1)[0], k=1).best.identity == "kept"
        g.enroll("after", _img(3, 1))
        assert [r.identity for r in g.list()] == ["kept", "after"]
    finally:
        g.close()


def _ok(fn: Any) -> bool:
    try:
        fn()
        return True
    except GalleryUnavailableError:
        return False
