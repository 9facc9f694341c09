"""The shared building blocks of the restructure: pair builders, class splits, atomic
writes, the SQLite connect, the versioned-JSON reader, the fingerprint rule, InputSpec and
the image-bytes decoder. Each is checked against an obvious definition and its edge cases."""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit._atomic import atomic_path, write_bytes_atomic, write_json_atomic, write_text_atomic
from siamkit._sqlite import connect, immediate_transaction
from siamkit.data.decode import ImageDecodeError, decode_image_bytes, sniff_image_format
from siamkit.data.splits import choose_parts, permute_classes, split_by_class
from siamkit.errors import DataError, ModelFileError
from siamkit.io import check_fingerprint, read_versioned_json
from siamkit.network import InputSpec
from siamkit.tuples import Pairs, all_pairs, random_pairs, subsample_pairs

# --------------------------------------------------------------------------- random_pairs


@pytest.mark.parametrize("seed", range(5))
def test_random_pairs_are_what_they_claim(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([7, 7, 7, 3, 3, 9, 11, 11, 11, 11])  # 9 is a singleton
    a, b, same = random_pairs(labels, 101, g)
    assert len(a) == len(b) == len(same) == 101
    assert int(same.sum()) == round(101 * 0.5)
    # slow obvious check of every pair
    for i, j, s in zip(a.tolist(), b.tolist(), same.tolist()):
        assert 0 <= i < 10 and 0 <= j < 10
        assert s == (labels[i] == labels[j]).item()
        if s:
            assert i != j, "a genuine pair must be two different samples"
            assert labels[i].item() != 9
    # genuine pairs come first
    assert bool(same[: int(same.sum())].all())


def test_random_pairs_cover_every_genuine_and_impostor_combination() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2])
    a, b, same = random_pairs(labels, 4000, torch.Generator().manual_seed(0))
    genuine = {(i, j) for i, j, s in zip(a.tolist(), b.tolist(), same.tolist()) if s}
    assert genuine == {(0, 1), (1, 0), (2, 3), (3, 2)}
    impostor = {(i, j) for i, j, s in zip(a.tolist(), b.tolist(), same.tolist()) if not s}
    want = {(i, j) for i in range(5) for j in range(5) if labels[i] != labels[j]}
    assert impostor == want


def test_random_pairs_edge_cases() -> None:
    g = torch.Generator().manual_seed(0)
    # no class with 2 samples: all impostors
    p = random_pairs(torch.tensor([0, 1, 2]), 10, g)
    assert not p.same.any() and len(p) == 10
    # one class: all genuine
    p = random_pairs(torch.tensor([4, 4, 4]), 6, g)
    assert p.same.all() and bool((p.a != p.b).all())
    assert len(random_pairs(torch.tensor([0, 1]), 0, g)) == 0
    p = random_pairs(torch.tensor([0, 0, 1, 1]), 9, g, same_fraction=1.0)
    assert p.same.all()
    with pytest.raises(ValueError):
        random_pairs(torch.tensor([0]), 3, g)
    with pytest.raises(ValueError):
        random_pairs(torch.tensor([0, 1]), -1, g)
    with pytest.raises(ValueError):
        random_pairs(torch.tensor([0, 1]), 3, g, same_fraction=1.5)


def test_random_pairs_is_a_function_of_the_generator() -> None:
    labels = torch.arange(30) % 6
    p1 = random_pairs(labels, 50, torch.Generator().manual_seed(3))
    p2 = random_pairs(labels, 50, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(p1, p2))


# --------------------------------------------------------------------------- subsample_pairs


def test_subsample_pairs_keeps_rare_positives_and_is_a_subset() -> None:
    labels = torch.tensor([0, 0] + list(range(1, 30)))
    pairs = all_pairs(labels)
    assert int(pairs.same.sum()) == 1
    kept = subsample_pairs(pairs, 50, torch.Generator().manual_seed(0))
    assert len(kept) == 50 and int(kept.same.sum()) == 1
    full = {(i, j, s) for i, j, s in zip(*(t.tolist() for t in pairs))}
    assert {(i, j, s) for i, j, s in zip(*(t.tolist() for t in kept))} <= full
    assert len({(i, j) for i, j in zip(kept.a.tolist(), kept.b.tolist())}) == 50


def test_subsample_pairs_caps_positives_at_half_and_leaves_small_sets_alone() -> None:
    labels = torch.tensor([0] * 10 + [1] * 10)
    pairs = all_pairs(labels)  # 90 genuine, 100 impostor
    kept = subsample_pairs(pairs, 40, torch.Generator().manual_seed(1))
    assert int(kept.same.sum()) == 20 and len(kept) == 40
    same = subsample_pairs(pairs, 10_000, torch.Generator().manual_seed(1))
    assert same is pairs
    empty = subsample_pairs(Pairs(*(torch.zeros(0, dtype=t) for t in (torch.long, torch.long, torch.bool))), 5, torch.Generator())
    assert len(empty) == 0


# --------------------------------------------------------------------------- splits


def test_split_by_class_holds_out_whole_classes() -> None:
    labels = torch.arange(40) % 10
    tr, va = split_by_class(labels, 0.3, seed=5)
    assert set(labels[tr].tolist()).isdisjoint(labels[va].tolist())
    assert len(set(labels[va].tolist())) == 3 and len(tr) + len(va) == 40
    g = torch.Generator().manual_seed(5)
    assert set(permute_classes(labels, g)[:3].tolist()) == set(labels[va].tolist())


def test_choose_parts_names_and_counts() -> None:
    names = [f"s{i}" for i in range(8)]
    tr, va, te, info = choose_parts(names, ["s1", "s2"], 2, seed=0)
    assert te == [1, 2] and len(va) == 2 and not set(va) & {1, 2}
    assert sorted(tr + va + te) == list(range(8))
    assert info["test"] == ["s1", "s2"] and info["test_given"] == "list" and info["val_given"] == "random"
    with pytest.raises(DataError, match="unknown"):
        choose_parts(names, ["nobody"], 0, seed=0)
    with pytest.raises(DataError, match="at least one must stay"):
        choose_parts(names, 8, 0, seed=0)
    with pytest.raises(TypeError):
        choose_parts(names, "s1", 0, seed=0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- atomic writes


def test_atomic_writes_replace_and_leave_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "f.json"
    write_json_atomic(p, {"b": 1, "a": [1, 2]})
    assert json.loads(p.read_text()) == {"a": [1, 2], "b": 1}
    assert p.read_text().endswith("\n")
    write_text_atomic(p, "hello")
    assert p.read_text() == "hello"
    write_bytes_atomic(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["f.json"]


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    p = tmp_path / "model.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk on fire")
    assert p.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["model.bin"]
    with pytest.raises(TypeError):
        write_json_atomic(p, {"x": object()})
    assert p.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["model.bin"]


# --------------------------------------------------------------------------- sqlite


def test_connect_sets_the_pragmas_and_transactions_roll_back(tmp_path: Path) -> None:
    con = connect(tmp_path / "db.sqlite", timeout=2.5, foreign_keys=True)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert con.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert con.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
    con.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(KeyError):
        with immediate_transaction(con, lambda e: RuntimeError(str(e))) as cur:
            cur.execute("INSERT INTO t VALUES (1)")
            raise KeyError("boom")
    assert con.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    with immediate_transaction(con, lambda e: RuntimeError(str(e))) as cur:
        cur.execute("INSERT INTO t VALUES (1)")
    assert con.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1
    con.close()
    bad = tmp_path / "not.sqlite"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        connect(bad, timeout=1.0)


def test_a_held_write_lock_gives_the_callers_typed_error(tmp_path: Path) -> None:
    class Locked(Exception):
        pass

    a = connect(tmp_path / "db.sqlite", timeout=0.05)
    b = connect(tmp_path / "db.sqlite", timeout=0.05)
    a.execute("BEGIN IMMEDIATE")
    with pytest.raises(Locked):
        with immediate_transaction(b, lambda e: Locked(str(e))):
            pass
    a.execute("ROLLBACK")
    a.close()
    b.close()


# --------------------------------------------------------------------------- versioned JSON + fingerprints


def test_read_versioned_json(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"format": "siamkit-thing", "format_version": 2, "v": 1}))
    assert read_versioned_json(p, fmt="siamkit-thing", version=2, what="thing")["v"] == 1
    with pytest.raises(ModelFileError, match="format version 2"):
        read_versioned_json(p, fmt="siamkit-thing", version=3, what="thing")
    with pytest.raises(ModelFileError, match="not a siamkit other"):
        read_versioned_json(p, fmt="siamkit-other", version=2, what="other")
    p.write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_versioned_json(p, fmt="siamkit-thing", version=2, what="thing")
    p.write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="not a siamkit thing"):
        read_versioned_json(p, fmt="siamkit-thing", version=2, what="thing")
    with pytest.raises(ModelFileError, match="does not exist"):
        read_versioned_json(tmp_path / "missing.json", fmt="siamkit-thing", version=2, what="thing")


def test_check_fingerprint_rule(caplog: pytest.LogCaptureFixture) -> None:
    check_fingerprint("sha256:a", "sha256:a", where="w")
    with pytest.raises(ModelFileError, match="not for this model.*refit"):
        check_fingerprint("sha256:a", "sha256:b", where="w", hint="; refit")
    with pytest.raises(ModelFileError, match="no fingerprint"):
        check_fingerprint("sha256:a", None, where="w")
    with caplog.at_level(logging.WARNING):
        check_fingerprint(None, "sha256:b", where="old file")
    assert "old file records no model fingerprint" in caplog.text
    check_fingerprint(None, None, where="w")


# --------------------------------------------------------------------------- InputSpec


def test_input_spec_round_trips_the_json_form() -> None:
    for d in ({"shape": [1, 28, 28], "channels": 1, "height": 28, "width": 28}, {"shape": [8]}, {}):
        spec = InputSpec.from_dict(d)
        assert spec.to_dict() == d
        assert InputSpec.from_dict(spec) is spec
    assert InputSpec.from_dict(None) == InputSpec()
    img = InputSpec.for_sample((3, 20, 24))
    assert img.is_image and img.image_size == (20, 24) and img.channels == 3 and img.shape == (3, 20, 24)
    vec = InputSpec.for_sample(torch.Size([8]))
    assert not vec.is_image and vec.shape == (8,)
    with pytest.raises(DataError, match="not trained on images"):
        vec.require_image()
    with pytest.raises(DataError, match="4 channels"):
        InputSpec(shape=(4, 5, 5), channels=4, height=5, width=5).require_image()
    with pytest.raises(ValueError):
        InputSpec.from_dict({"height": "tall"})
    with pytest.raises(ValueError):
        InputSpec.from_dict([1, 2])  # type: ignore[arg-type]


def test_network_saves_its_input_spec_as_before(tmp_path: Path) -> None:
    from siamkit import SiameseNetwork, create_encoder, load_model, save_model

    spec = {"shape": [1, 12, 12], "channels": 1, "height": 12, "width": 12}
    net = SiameseNetwork(create_encoder("conv4", in_channels=1, embedding_dim=4, width=4), input_spec=spec)
    save_model(net, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["network"]["input_spec"] == spec
    assert load_model(tmp_path / "m").input_spec == InputSpec.from_dict(spec)


# --------------------------------------------------------------------------- decode_image_bytes


def _png(w: int, h: int, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.arange(w * h) % 251).astype(np.uint8).reshape(h, w)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def test_decode_image_bytes_matches_load_image(tmp_path: Path) -> None:
    from siamkit.data.images import load_image

    data = _png(30, 20, "RGB")
    (tmp_path / "a.png").write_bytes(data)
    spec = InputSpec.for_sample((1, 14, 16))
    t = decode_image_bytes(data, spec)
    assert t.dtype == torch.uint8 and tuple(t.shape) == (1, 14, 16)
    assert torch.equal(t, load_image(tmp_path / "a.png", size=(14, 16), channels=1))


@pytest.mark.parametrize(
    "data,kind,code",
    [
        (b"", "invalid", "empty_image"),
        (b"%PDF-1.4 hello", "unsupported", "unsupported_image_type"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "invalid", "invalid_image"),
    ],
)
def test_decode_image_bytes_refuses_bad_bytes(data: bytes, kind: str, code: str) -> None:
    with pytest.raises(ImageDecodeError) as e:
        decode_image_bytes(data, InputSpec.for_sample((1, 8, 8)))
    assert (e.value.kind, e.value.code) == (kind, code)
    assert isinstance(e.value, DataError)


def test_decode_image_bytes_limits() -> None:
    spec = InputSpec.for_sample((1, 8, 8))
    with pytest.raises(ImageDecodeError) as e:
        decode_image_bytes(_png(40, 40), spec, max_bytes=10)
    assert e.value.code == "image_too_large"
    with pytest.raises(ImageDecodeError) as e:
        decode_image_bytes(_png(40, 40), spec, max_pixels=100)
    assert e.value.code == "image_too_many_pixels"
    assert sniff_image_format(_png(2, 2)) == "png" and sniff_image_format(b"nope") is None


def test_atomic_writes_keep_ordinary_file_modes(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        p = tmp_path / "new.json"
        write_json_atomic(p, {})
        assert p.stat().st_mode & 0o777 == 0o644  # as open(..., "w") would, not mkstemp's 0600
        p.chmod(0o640)
        write_json_atomic(p, {"a": 1})
        assert p.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode
        s = tmp_path / "secret"
        write_bytes_atomic(s, b"k", mode=0o600)
        assert s.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(umask)
