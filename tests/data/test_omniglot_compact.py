"""The compact Omniglot shipped in the package: shapes, counts, no pickle, provenance."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from siamkit.data import OmniglotDataset, compact_official_runs, load_omniglot_compact
from siamkit.data.omniglot_compact import COMPACT_PATH
from siamkit.errors import DataError

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO.parent / "shared" / "data" / "omniglot"


def test_file_is_small_and_loads_without_pickle() -> None:
    assert COMPACT_PATH.is_file()
    assert COMPACT_PATH.stat().st_size < 4_000_000
    with np.load(COMPACT_PATH, allow_pickle=False) as z:
        for name in z.files:
            assert z[name].dtype != object, name
    with zipfile.ZipFile(COMPACT_PATH) as zf:  # every member compressed
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())


@pytest.mark.parametrize(
    "split, n_alpha, n_chars", [("background", 30, 964), ("evaluation", 20, 659), (None, 50, 1623)]
)
def test_counts_and_types(split: str | None, n_alpha: int, n_chars: int) -> None:
    ds = load_omniglot_compact(split)
    assert isinstance(ds, OmniglotDataset)
    assert ds.images.shape == (n_chars * 20, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert len(ds.classes) == n_chars and len(ds.alphabets) == n_alpha
    assert torch.equal(ds.class_counts(), torch.full((n_chars,), 20))
    if split is not None:  # None: the background alphabets (sorted), then the evaluation ones
        assert ds.alphabets == sorted(ds.alphabets)
    assert int(ds.class_alphabet.max()) == n_alpha - 1 and int(ds.class_alphabet.min()) == 0
    # each character's 20 drawings come from drawers 1..20, once each
    for c in (0, n_chars - 1):
        assert sorted(ds.drawers[ds.labels == c].tolist()) == list(range(1, 21))
    # alphabet of a class matches its name; white background, black ink
    assert all(ds.classes[c].split("/")[0] == ds.alphabets[int(ds.class_alphabet[c])] for c in range(0, n_chars, 37))
    assert float(ds.images[:, :, 0, :].float().mean()) > 250  # the top row is mostly padding (paper)
    assert 0 < float((ds.images < 128).float().mean()) < 0.3


def test_splits_are_disjoint_and_together_all() -> None:
    bg, ev, full = load_omniglot_compact("background"), load_omniglot_compact("evaluation"), load_omniglot_compact()
    assert not set(bg.alphabets) & set(ev.alphabets)
    assert full.classes == bg.classes + ev.classes
    assert torch.equal(full.images, torch.cat([bg.images, ev.images]))
    assert str(ev.paths[0]).startswith("images_evaluation/") and str(ev.paths[0]).endswith("_01.png")


def test_alphabet_filter_and_bad_input() -> None:
    ds = load_omniglot_compact("evaluation", alphabets=["Angelic", "Kannada"])
    assert ds.alphabets == ["Angelic", "Kannada"] and len(ds.classes) == 20 + 41
    with pytest.raises(DataError, match="unknown alphabet"):
        load_omniglot_compact("background", alphabets=["Angelic"])  # an evaluation alphabet
    with pytest.raises(DataError, match="split"):
        load_omniglot_compact("train")


def test_official_runs_are_evaluation_drawings() -> None:
    runs = compact_official_runs()
    ev = load_omniglot_compact("evaluation")
    assert len(runs) == 20 and all(r.support.shape == (20, 1, 28, 28) and r.query.shape == (20, 1, 28, 28) for r in runs)
    flat = ev.images.flatten(1)
    # every support / query image is one of the evaluation drawings, and the answer names the query's character
    for r in runs[:3]:
        def char_of(img: torch.Tensor) -> int:
            hits = (flat == img.flatten()).all(1).nonzero().flatten()
            assert hits.numel() >= 1
            return int(ev.labels[hits[0]])

        for q, a in zip(r.query, r.answer.tolist()):
            assert char_of(q) == char_of(r.support[a])
        assert sorted(r.answer.tolist()) == list(range(20))


@pytest.mark.skipif(not SOURCE.is_dir(), reason="the original Omniglot PNGs (../shared/data/omniglot) are not here")
def test_rebuild_check_is_bit_for_bit() -> None:
    r = subprocess.run([sys.executable, str(REPO / "tools" / "build_omniglot_compact.py"), "--check"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "identical to a rebuild" in r.stdout


def test_check_fails_on_a_changed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("build_omniglot_compact", REPO / "tools" / "build_omniglot_compact.py")
    tool = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(tool)  # type: ignore[union-attr]
    with np.load(COMPACT_PATH, allow_pickle=False) as z:
        arrays = {k: z[k][:50] if k == "images" else z[k] for k in z.files}  # small: fast
    good = tmp_path / "good.npz"
    good.write_bytes(tool.npz_bytes(arrays))
    assert tool.check(good, arrays, tool.npz_bytes(arrays)) == 0
    changed = {**arrays, "images": arrays["images"].copy()}
    changed["images"][5, 10, 10] ^= 1
    bad = tmp_path / "bad.npz"
    bad.write_bytes(tool.npz_bytes(changed))
    assert tool.check(bad, arrays, tool.npz_bytes(arrays)) == 1
    assert "images" in capsys.readouterr().err
    # same arrays in another container (numpy's own writer): reported, not passed
    other = tmp_path / "other.npz"
    np.savez_compressed(other, **arrays)
    assert tool.check(other, arrays, tool.npz_bytes(arrays)) == 1
    assert "container" in capsys.readouterr().err
