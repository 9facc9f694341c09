"""Text-pair readers: the generic CSV/TSV, the STS Benchmark, SICK and MRPC layouts
(small copies of each layout, and the real files in ../shared/data when present)."""

from __future__ import annotations

import numpy as np
import pytest

from siamkit.data.text import load_text_pairs, read_mrpc, read_pair_csv, read_sick, read_sts
from siamkit.errors import DataError
from tests.conftest import SHARED_DATA


def test_generic_csv_graded_and_binary(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text('text_a,text_b,score\n"a, b",c,1.5\nd,e,4\n')
    pairs = read_pair_csv(p)
    assert pairs.texts_a == ("a, b", "d") and pairs.targets.tolist() == [1.5, 4.0] and not pairs.binary
    t = tmp_path / "b.tsv"
    t.write_text("x\ty\tsame\nu\tv\tdifferent\nw\tz\t1\n")
    b = read_pair_csv(t)
    assert b.binary and b.targets.tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize("body,match", [
    ("a,b\n", "3 cells|got 2"),
    ("a,b,c\nd,e,maybe\n", "neither a label"),
    ("a,,1\n", "empty text"),
    ("h,h,score\na,b,inf\n", "not finite"),
    ("", "no text pairs"),
])
def test_generic_csv_bad_rows(tmp_path, body, match):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(DataError, match=match):
        read_pair_csv(p)


def test_layouts(tmp_path):
    (tmp_path / "sts").mkdir()
    (tmp_path / "sts" / "sts-train.csv").write_text(
        "main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane.\tAn \"air\" plane.\n"
        "main-news\theadlines\t2013\t0002\t0.500\tx\ty\textra\tcols\n")
    s = load_text_pairs(tmp_path / "sts")
    assert s.texts_b[0] == 'An "air" plane.' and s.targets.tolist() == [5.0, 0.5]
    with pytest.raises(DataError, match="test file"):
        load_text_pairs(tmp_path / "sts", split="test")
    sick = tmp_path / "SICK_train.txt"
    sick.write_bytes(b"pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\r\n"
                     b"1\tA kid\tA child\t4.5\tNEUTRAL\r\n")
    assert read_sick(sick).texts_b == ("A child",)
    mrpc = tmp_path / "msr_paraphrase_test.txt"
    mrpc.write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said \"x\".\tHe told x.\n0\t3\t4\tA\tB\n",
                    encoding="utf-8")
    m = read_mrpc(mrpc)
    assert m.binary and m.targets.tolist() == [1.0, 0.0] and m.texts_a[0] == 'He said "x".'
    assert load_text_pairs(mrpc).texts_a == m.texts_a
    assert load_text_pairs(tmp_path).texts_a == ("A kid",)  # a SICK folder now
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no STS Benchmark"):
        load_text_pairs(tmp_path / "empty")
    with pytest.raises(DataError, match="7 tab-separated"):
        (tmp_path / "sts-bad.csv").write_text("a\tb\n")
        read_sts(tmp_path / "sts-bad.csv")


def test_split_is_disjoint_and_seeded(sts_csv):
    pairs = read_pair_csv(sts_csv)
    rest, held = pairs.split(0.25, seed=1)
    assert len(rest) + len(held) == len(pairs) and len(held) == 6
    again = pairs.split(0.25, seed=1)[1]
    assert held.texts_a == again.texts_a
    with pytest.raises(DataError):
        pairs.split(1.5)


@pytest.mark.skipif(not (SHARED_DATA / "stsbenchmark").is_dir(), reason="../shared/data is not here")
@pytest.mark.parametrize("name,split,n,binary", [
    ("stsbenchmark", "train", 5749, False), ("stsbenchmark", "dev", 1500, False), ("stsbenchmark", "test", 1379, False),
    ("sick", "train", 4500, False), ("sick", "dev", 500, False), ("sick", "test", 4927, False),
    ("mrpc", "train", 4076, True), ("mrpc", "test", 1725, True),
])
def test_real_files(name, split, n, binary):
    pairs = load_text_pairs(SHARED_DATA / name, split=split)
    assert len(pairs) == n and pairs.binary == binary
    if name == "mrpc":
        assert int(pairs.targets.sum()) == {"train": 2753, "test": 1147}[split]
    assert all(t.strip() for t in pairs.texts_a + pairs.texts_b)
    assert np.isfinite(pairs.targets).all()


@pytest.mark.skipif(not (SHARED_DATA / "mrpc").is_dir(), reason="../shared/data is not here")
def test_mrpc_has_no_dev_split():
    with pytest.raises(DataError, match="carve a validation split"):
        load_text_pairs(SHARED_DATA / "mrpc", split="dev")
