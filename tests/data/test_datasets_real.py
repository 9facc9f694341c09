"""Dataset loaders on the real shared data (skipped when absent) and on tiny synthetic folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.data.faces import load_face_folder, split_identities
from siamkit.data.omniglot import OmniglotDataset, drawer_of, load_official_one_shot_runs, load_omniglot
from siamkit.data.signatures import (
    SignaturePreprocess,
    load_signatures,
    otsu_threshold,
    signature_pairs,
    split_writers,
)
from siamkit.errors import DataError
from siamkit.evaluation.few_shot import koch_within_alphabet_trials, official_one_shot_accuracy, score_trials

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
OMNIGLOT = SHARED_DATA / "omniglot"
ATT = SHARED_DATA / "att_faces"
CEDAR = SHARED_DATA / "cedar_signatures"

needs_omniglot = pytest.mark.skipif(not OMNIGLOT.is_dir(), reason="shared Omniglot data not present")
needs_att = pytest.mark.skipif(not ATT.is_dir(), reason="shared AT&T faces not present")
needs_cedar = pytest.mark.skipif(not CEDAR.is_dir(), reason="shared CEDAR signatures not present")

# two background alphabets and three evaluation alphabets keep the Omniglot tests fast
BG_ALPHABETS = ["Greek", "Blackfoot_(Canadian_Aboriginal_Syllabics)"]
EVAL_ALPHABETS = ["Angelic", "Atlantean", "Kannada"]


# --------------------------------------------------------------------------- Omniglot


@pytest.fixture(scope="module")
def eval_alphabets() -> OmniglotDataset:
    return load_omniglot(OMNIGLOT, "evaluation", image_size=28, alphabets=EVAL_ALPHABETS)


@needs_omniglot
def test_omniglot_counts_and_metadata() -> None:
    ds = load_omniglot(OMNIGLOT, "background", image_size=28, alphabets=BG_ALPHABETS)
    root = OMNIGLOT / "images_background"
    chars = {a: sorted(p.name for p in (root / a).iterdir() if p.is_dir()) for a in BG_ALPHABETS}
    n_chars = sum(len(c) for c in chars.values())
    assert len(ds.classes) == n_chars and len(ds) == 20 * n_chars
    assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 28, 28)
    assert ds.class_counts().unique().tolist() == [20]
    assert ds.alphabets == sorted(BG_ALPHABETS)
    for c, name in enumerate(ds.classes):
        alphabet, char = name.split("/")
        assert ds.alphabets[int(ds.class_alphabet[c])] == alphabet and char in chars[alphabet]
    # every character has drawers 1..20 once; the drawer is the file name's _YY
    for c in range(len(ds.classes)):
        assert sorted(ds.drawers[ds.labels == c].tolist()) == list(range(1, 21))
    assert all(int(ds.drawers[i]) == int(ds.paths[i].stem.split("_")[1]) for i in range(0, len(ds), 97))
    # white background, black ink, nothing inverted
    assert ds.images.float().mean() > 200
    full = load_omniglot(OMNIGLOT / "images_background", None, alphabets=["Greek"])
    assert full.images.shape[2:] == (105, 105) and set(full.images.unique().tolist()) == {0, 255}


@needs_omniglot
def test_omniglot_rotations_are_new_classes() -> None:
    plain = load_omniglot(OMNIGLOT, "evaluation", image_size=105, alphabets=["Angelic"])
    rot = load_omniglot(OMNIGLOT, "evaluation", image_size=105, alphabets=["Angelic"], rotations=(0, 90, 180, 270))
    n, k = len(plain), len(plain.classes)
    assert len(rot) == 4 * n and len(rot.classes) == 4 * k
    assert rot.classes[:k] == plain.classes
    assert rot.classes[k] == plain.classes[0] + "/rot90" and rot.classes[-1] == plain.classes[-1] + "/rot270"
    assert rot.class_rotation.tolist() == [r for r in (0, 90, 180, 270) for _ in range(k)]
    for r in range(4):
        block = rot.images[r * n : (r + 1) * n]
        assert torch.equal(block, torch.rot90(plain.images, k=r, dims=(-2, -1)))
        assert torch.equal(rot.labels[r * n : (r + 1) * n], plain.labels + r * k)
    assert not torch.equal(rot.images[n : 2 * n], plain.images)
    # subset keeps the metadata
    sub = rot.subset([k, 0])
    assert isinstance(sub, OmniglotDataset) and sub.class_rotation.tolist() == [90, 0]
    assert len(sub) == 40 and sub.drawers.shape == (40,)
    # Koch trials ignore the rotated copies
    t = koch_within_alphabet_trials(rot, n_way=20, trials=20)
    assert bool((rot.class_rotation[rot.labels[t.support]] == 0).all()) and int(rot.labels[t.query].max()) < k


@needs_omniglot
def test_official_runs_reproduce_answer_files(capsys: pytest.CaptureFixture[str]) -> None:
    runs_dir = OMNIGLOT / "one_shot_runs"
    runs = load_official_one_shot_runs(runs_dir, 105)
    assert [r.name for r in runs] == [f"run{i:02d}" for i in range(1, 21)]
    for run in runs:
        assert run.support.shape == (20, 1, 105, 105) and run.query.shape == (20, 1, 105, 105)
        assert run.answer.shape == (20,) and 0 <= int(run.answer.min()) and int(run.answer.max()) <= 19
        # re-read the answer file independently
        for line in (runs_dir / run.name / "class_labels.txt").read_text().split("\n"):
            if line.strip():
                q, s = line.split()
                qi = [p.name for p in run.query_paths].index(Path(q).name)
                assert run.support_paths[int(run.answer[qi])].name == Path(s).name
    res = official_one_shot_accuracy(lambda x: x.flatten(1).float(), runs)
    assert len(res.per_run_accuracy) == 20 and res.num_queries == 400
    assert res.error_rate == pytest.approx(100 * (1 - res.accuracy))
    with capsys.disabled():
        print(f"\n[official 20-way one-shot, raw pixels, euclidean] accuracy {res.accuracy:.4f} "
              f"(error {res.error_rate:.1f}%, chance 5%)")
    assert 0.10 < res.accuracy < 0.60
    smaller = load_official_one_shot_runs(runs_dir, 28)
    assert smaller[0].support.shape == (20, 1, 28, 28)


@needs_omniglot
def test_koch_within_alphabet_trials(eval_alphabets: OmniglotDataset) -> None:
    ds = eval_alphabets
    trials = koch_within_alphabet_trials(ds, n_way=20, trials=100, seed=3)
    assert trials.support.shape == (100, 20) and trials.query.shape == (100,) and trials.answer.shape == (100,)
    img_alpha = ds.class_alphabet[ds.labels]
    for t in range(100):
        sup, q, ans = trials.support[t], int(trials.query[t]), int(trials.answer[t])
        assert img_alpha[sup].unique().numel() == 1  # one alphabet per trial
        assert int(img_alpha[q]) == int(img_alpha[sup[0]]) == int(trials.alphabet[t])
        assert ds.labels[sup].unique().numel() == 20  # 20 distinct characters
        sup_drawers = {drawer_of(ds.paths[i]) for i in sup.tolist()}
        assert sup_drawers == {int(trials.support_drawer[t])}  # drawer A for all supports
        assert drawer_of(ds.paths[q]) == int(trials.query_drawer[t]) != int(trials.support_drawer[t])
        assert int(ds.labels[q]) == int(ds.labels[sup[ans]])  # the query's character is a support
        assert int((ds.labels[sup] == ds.labels[q]).sum()) == 1
    # Koch's protocol: each episode's 20 queries share a support set, alphabets balanced
    assert trials.episode.tolist() == [e for e in range(5) for _ in range(20)]
    assert sorted(torch.bincount(trials.alphabet, minlength=3).tolist()) == [20, 40, 40]
    again = koch_within_alphabet_trials(ds, ds.class_alphabet, n_way=20, trials=100, seed=3)
    assert torch.equal(again.support, trials.support) and torch.equal(again.query, trials.query)
    other = koch_within_alphabet_trials(ds, n_way=20, trials=100, seed=4)
    assert not torch.equal(other.support, trials.support)
    single = koch_within_alphabet_trials(ds, n_way=5, trials=7, seed=0, queries_per_episode=1)
    assert len(single) == 7 and single.episode.tolist() == list(range(7))

    # scoring: perfect embeddings score 1, raw pixels are between chance and perfect
    perfect = torch.nn.functional.one_hot(ds.labels).float()
    acc, ci = score_trials(perfect, trials)
    assert acc == 1.0 and ci == 0.0
    acc, ci = score_trials(ds.images.flatten(1).float(), trials, "euclidean")
    assert 0.05 < acc < 0.9 and 0 < ci < 0.2
    acc2, _ = score_trials(ds.images.flatten(1).float(), (trials.support, trials.query, trials.answer))
    assert acc2 == acc


@needs_omniglot
def test_koch_skips_small_alphabets_and_needs_drawers() -> None:
    ds = load_omniglot(OMNIGLOT, "background", image_size=14, alphabets=BG_ALPHABETS)
    small = ds.alphabets.index("Blackfoot_(Canadian_Aboriginal_Syllabics)")  # 14 characters
    trials = koch_within_alphabet_trials(ds, n_way=20, trials=40)
    assert small not in trials.alphabet.tolist()
    with pytest.raises(DataError, match="no alphabet has 30 characters"):
        koch_within_alphabet_trials(ds, n_way=30, trials=10)


# --------------------------------------------------------------------------- AT&T faces


@pytest.fixture(scope="module")
def att() -> object:
    return load_face_folder(ATT)


@needs_att
def test_att_faces_layout(att) -> None:
    assert len(att) == 400 and len(att.classes) == 40
    assert att.class_counts().tolist() == [10] * 40
    assert att.images.shape[1:] == (1, 112, 92) and att.images.dtype == torch.uint8
    assert load_face_folder(ATT, image_size=(56, 46), channels=3).images.shape[1:] == (3, 56, 46)


def _assert_disjoint(parts) -> None:
    names = [set(p.classes) for p in parts]
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            assert not names[i] & names[j], f"identity leak: {names[i] & names[j]}"
    for p in parts:  # each image's identity (its folder) belongs to its part
        assert {path.parent.name for path in p.paths} <= set(p.classes)
        assert all(p.classes[int(lab)] == path.parent.name for lab, path in zip(p.labels, p.paths))


@needs_att
def test_att_fixed_split_is_honoured(att) -> None:
    train, val, test, info = split_identities(att, ["s5", "s6", "s7"])
    assert info["test"] == ["s5", "s6", "s7"] and sorted(test.classes) == ["s5", "s6", "s7"]
    assert len(test) == 30 and len(train) == 370 and len(val) == 0 and val.images.shape[1:] == att.images.shape[1:]
    assert len(train.classes) == 37 and info["num_images"] == {"train": 370, "val": 0, "test": 30}
    _assert_disjoint([train, val, test])
    json.dumps(info)
    # a validation part drawn from the rest
    train, val, test, info = split_identities(att, ["s5", "s6", "s7"], val_identities=4, seed=1)
    assert info["test"] == ["s5", "s6", "s7"] and len(val.classes) == 4 and len(train.classes) == 33
    _assert_disjoint([train, val, test])


@needs_att
def test_att_random_split_reproducible(att) -> None:
    a = split_identities(att, 8, val_identities=4, seed=7)
    b = split_identities(att, 8, val_identities=4, seed=7)
    c = split_identities(att, 8, val_identities=4, seed=8)
    assert a.info == b.info and a.info != c.info
    assert torch.equal(a.test.images, b.test.images)
    assert len(a.test.classes) == 8 and len(a.val.classes) == 4 and len(a.train.classes) == 28
    _assert_disjoint([a.train, a.val, a.test])
    assert a.info["test_given"] == "random" and a.info["seed"] == 7


def test_split_leak_is_detected() -> None:
    # the checker itself must fail when an identity is in two parts
    from siamkit.data.images import ImageFolderDataset

    ds = ImageFolderDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 0]), ["s1"], [Path("s1/1.pgm"), Path("s1/2.pgm")])
    with pytest.raises(AssertionError, match="leak"):
        _assert_disjoint([ds, ds])


def test_split_identities_errors(tmp_path: Path) -> None:
    root = _face_folder(tmp_path / "faces", ids=4)
    ds = load_face_folder(root)
    with pytest.raises(DataError, match="unknown identity name"):
        split_identities(ds, ["s9"])
    with pytest.raises(DataError, match="listed twice"):
        split_identities(ds, ["s1", "s1"])
    with pytest.raises(DataError, match="both the test and the val"):
        split_identities(ds, ["s1"], ["s1"])
    with pytest.raises(DataError, match="at least one must stay for training"):
        split_identities(ds, 3, val_identities=1)
    with pytest.raises(TypeError, match="list of names"):
        split_identities(ds, "s1")


# --------------------------------------------------------------------------- CEDAR signatures

SIG_SIZE = (60, 90)


@pytest.fixture(scope="module")
def cedar():
    return load_signatures(CEDAR, image_size=SIG_SIZE)


@needs_cedar
def test_cedar_counts(cedar) -> None:
    assert len(cedar.writers) == 40 and cedar.writers[:3] == ["01", "02", "03"]
    for w in range(40):
        mine = cedar.writer_labels == w
        assert int((mine & cedar.is_genuine).sum()) == 24 and int((mine & ~cedar.is_genuine).sum()) == 24
    for i in range(0, len(cedar), 37):
        p = cedar.paths[i]
        assert p.parent.parent.name == cedar.writers[int(cedar.writer_labels[i])]
        assert p.parent.name == ("genuine" if cedar.is_genuine[i] else "forged")
    g = cedar.genuine_only()
    assert len(g) == 960 and g.class_counts().tolist() == [24] * 40


@needs_cedar
def test_cedar_preprocessing(cedar) -> None:
    x = cedar.images
    assert x.shape == (1920, 1, *SIG_SIZE) and x.dtype == torch.uint8
    # ink bright on a black background
    assert float((x == 0).float().mean()) > 0.5 and float(x.float().mean()) < 60
    assert int(x.amax(dim=(1, 2, 3)).min()) > 30  # faint thin strokes blur at 60x90
    # cropped: along the axis the signature fills, ink reaches (almost) both borders
    h, w = SIG_SIZE
    touches = 0
    for img in x[::20, 0]:
        ink = img > 0  # the cleaned background is exactly 0
        rows, cols = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
        fills_w = cols[0] <= 0.08 * w and cols[-1] >= 0.92 * w - 1
        fills_h = rows[0] <= 0.08 * h and rows[-1] >= 0.92 * h - 1
        touches += bool(fills_w or fills_h)
    assert touches == len(x[::20])
    raw = load_signatures(CEDAR, image_size=SIG_SIZE, preprocess=False, writers=["02"])
    assert raw.images.float().mean() > 200  # not inverted without preprocessing
    assert len(raw) == 48 and raw.writers == ["02"]


@needs_cedar
def test_cedar_protocol_pairs(cedar) -> None:
    a, b, same = signature_pairs(cedar.writer_labels, cedar.is_genuine)
    per_writer = math.comb(24, 2) + 24 * 24
    assert len(a) == 40 * per_writer and int(same.sum()) == 40 * 276 and int((~same).sum()) == 40 * 576
    assert torch.equal(cedar.writer_labels[a], cedar.writer_labels[b])  # never mixes writers
    assert bool(cedar.is_genuine[a].all())  # the reference is always genuine
    assert torch.equal(cedar.is_genuine[b], same)  # questioned: genuine iff "same"
    assert bool((a != b).all())
    pairs = set(zip(a.tolist(), b.tolist()))
    assert len(pairs) == len(a)
    # a set of writers, and a capped, seeded subset
    sub = signature_pairs(cedar.writer_labels, cedar.is_genuine, writers=[3, 5])
    assert len(sub) == 2 * per_writer and set(cedar.writer_labels[sub.a].tolist()) == {3, 5}
    capped = signature_pairs(cedar.writer_labels, cedar.is_genuine, max_pairs_per_writer=100, seed=1)
    assert len(capped) == 4000 and int(capped.same.sum()) == 2000
    assert set(zip(capped.a.tolist(), capped.b.tolist())) <= pairs
    again = signature_pairs(cedar.writer_labels, cedar.is_genuine, max_pairs_per_writer=100, seed=1)
    assert torch.equal(again.a, capped.a) and torch.equal(again.b, capped.b)
    other = signature_pairs(cedar.writer_labels, cedar.is_genuine, max_pairs_per_writer=100, seed=2)
    assert not torch.equal(other.a, capped.a)
    assert torch.bincount(cedar.writer_labels[capped.a]).tolist() == [100] * 40


@needs_cedar
def test_cedar_writer_split(cedar) -> None:
    train, val, test, info = split_writers(cedar, test_writers=10, val_writers=5, seed=0)
    assert len(test.writers) == 10 and len(val.writers) == 5 and len(train.writers) == 25
    assert not set(train.writers) & set(test.writers) and not set(val.writers) & set(test.writers)
    assert len(test) == 480 and info["num_images"]["train"] == 1200
    for part in (train, val, test):
        assert {p.parent.parent.name for p in part.paths} == set(part.writers)
        a, b, same = signature_pairs(part.writer_labels, part.is_genuine)
        assert len(a) == len(part.writers) * 852
    assert split_writers(cedar, 10, 5, seed=0).info == info
    fixed = split_writers(cedar, ["01", "02"]).test
    assert fixed.writers == ["01", "02"] and len(fixed) == 96
    json.dumps(info)


# --------------------------------------------------------------------------- preprocessing units


def test_otsu_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    img = np.concatenate([rng.normal(60, 15, 3000), rng.normal(190, 20, 7000)]).clip(0, 255).astype(np.uint8)
    t = otsu_threshold(img)

    def within(th: int) -> float:  # within-class variance, minimised by Otsu's threshold
        lo, hi = img[img <= th].astype(float), img[img > th].astype(float)
        return sum(x.size * x.var() for x in (lo, hi) if x.size)

    best = min(range(int(img.min()), int(img.max())), key=within)
    assert within(t) == pytest.approx(within(best))
    assert 90 < t < 150
    assert otsu_threshold(np.full((4, 4), 7, np.uint8)) == 7


def test_signature_preprocess_synthetic() -> None:
    a = np.full((200, 300), 250, np.uint8)
    a[80:120, 100:140] = 30  # a 40x40 ink square
    a[5, 5] = 0  # a one-pixel speck far away
    pre = SignaturePreprocess(size=(50, 100), margin=0.0)
    out = np.asarray(pre(Image.fromarray(a)))
    assert out.shape == (50, 100)
    # the square fills the height, is centred and padded with black to keep its aspect
    assert out[:, 50].min() > 200 and out[25, :20].max() == 0 and out[25, -20:].max() == 0
    ink_cols = np.flatnonzero(out.max(0) > 128)
    assert 22 <= ink_cols[0] <= 28 and 72 <= ink_cols[-1] <= 77
    # without speck removal, the speck stretches the bounding box
    keep = np.asarray(SignaturePreprocess(size=(50, 100), margin=0.0, min_speck_area=0)(Image.fromarray(a)))
    assert keep[:3, :].max() > 0 or keep[:, :3].max() > 0
    # bright ink on black input gives the same result
    inv = np.asarray(pre(Image.fromarray(255 - a)))
    assert np.abs(inv.astype(int) - out.astype(int)).max() <= 1
    # a blank scan gives a blank image of the right size
    assert np.asarray(pre(Image.new("L", (30, 20), 255))).max() == 0
    assert pre(Image.new("L", (30, 20), 255)).size == (100, 50)


# --------------------------------------------------------------------------- error cases


def _png(path: Path, value: int = 255, size: tuple[int, int] = (12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full(size, value, np.uint8)
    a[3:8, 4:6] = 0
    Image.fromarray(a).save(path)


def _face_folder(root: Path, ids: int = 3, per: int = 2) -> Path:
    for i in range(1, ids + 1):
        for j in range(1, per + 1):
            _png(root / f"s{i}" / f"{j}.png", 200 - i)
    return root


def test_omniglot_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_omniglot(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="images_background"):
        load_omniglot(tmp_path / "empty", "background")
    (tmp_path / "empty" / "images_background").mkdir()
    with pytest.raises(DataError, match="no alphabet folders"):
        load_omniglot(tmp_path / "empty", "background")
    flat = tmp_path / "flat" / "images_background"
    _png(flat / "Greek" / "0001_01.png")
    with pytest.raises(DataError, match="no character sub-folders"):
        load_omniglot(tmp_path / "flat")
    good = tmp_path / "good"
    for c in (1, 2):
        for d in (1, 2, 3):
            _png(good / "Abc" / f"character{c:02d}" / f"{c:04d}_{d:02d}.png")
    ds = load_omniglot(good, None, image_size=12)
    assert len(ds) == 6 and ds.classes == ["Abc/character01", "Abc/character02"] and ds.drawers.tolist() == [1, 2, 3] * 2
    with pytest.raises(DataError, match="not found"):
        load_omniglot(good, None, alphabets=["Greek"])
    with pytest.raises(ValueError, match="rotations"):
        load_omniglot(good, None, rotations=(0, 45))
    # Koch trials need drawers in the file names
    _png(good / "Abc" / "character02" / "noname.png")
    with pytest.raises(DataError, match="XXXX_YY"):
        koch_within_alphabet_trials(load_omniglot(good, None, image_size=12), n_way=2, trials=2)


def _run(root: Path, lines: list[str]) -> Path:
    for k in (1, 2):
        _png(root / "run01" / "training" / f"class{k:02d}.png", 255 - k)
        _png(root / "run01" / "test" / f"item{k:02d}.png", 250 - k)
    (root / "run01" / "class_labels.txt").write_text("\n".join(lines) + "\n")
    return root


def test_one_shot_runs_errors(tmp_path: Path) -> None:
    ok = _run(tmp_path / "ok", ["run01/test/item01.png run01/training/class02.png", "run01/test/item02.png run01/training/class01.png"])
    runs = load_official_one_shot_runs(ok, 8)
    assert runs[0].answer.tolist() == [1, 0] and runs[0].support.shape == (2, 1, 8, 8)
    res = official_one_shot_accuracy(lambda x: x.flatten(1).float(), runs)
    assert 0 <= res.accuracy <= 1 and len(res.predictions[0]) == 2
    with pytest.raises(ValueError, match="embed_fn"):
        official_one_shot_accuracy(lambda x: x.float(), runs)
    bad = _run(tmp_path / "missing", ["run01/test/item01.png run01/training/class07.png", "run01/test/item02.png run01/training/class01.png"])
    with pytest.raises(DataError, match=r"line 1 refers to 'run01/training/class07.png'"):
        load_official_one_shot_runs(bad)
    swapped = _run(tmp_path / "swapped", ["run01/training/class01.png run01/test/item01.png"])
    with pytest.raises(DataError, match="is not an image of"):
        load_official_one_shot_runs(swapped)
    short = _run(tmp_path / "short", ["run01/test/item01.png run01/training/class01.png"])
    with pytest.raises(DataError, match="no answer for 1 test image"):
        load_official_one_shot_runs(short)
    twice = _run(tmp_path / "twice", ["run01/test/item01.png run01/training/class01.png"] * 2)
    with pytest.raises(DataError, match="answered twice"):
        load_official_one_shot_runs(twice)
    junk = _run(tmp_path / "junk", ["run01/test/item01.png"])
    with pytest.raises(DataError, match="line 1: expected"):
        load_official_one_shot_runs(junk)
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no run folders"):
        load_official_one_shot_runs(tmp_path / "none")


def test_face_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no identity sub-folders"):
        load_face_folder(tmp_path / "empty")
    _png(tmp_path / "loose" / "1.png")
    with pytest.raises(DataError, match="images lie directly in it"):
        load_face_folder(tmp_path / "loose")
    split = tmp_path / "split"
    _face_folder(split / "training")
    _face_folder(split / "testing")
    with pytest.raises(DataError, match="hold sub-folders, not images"):
        load_face_folder(split)
    (tmp_path / "noimg" / "s1").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_face_folder(tmp_path / "noimg")
    ds = load_face_folder(_face_folder(tmp_path / "ok"), image_size=8)
    assert len(ds) == 6 and ds.classes == ["s1", "s2", "s3"]


def _sig_folder(root: Path, writers: int = 2, forged: bool = True) -> Path:
    for w in range(1, writers + 1):
        for k in (1, 2, 3):
            _png(root / f"{w:02d}" / "genuine" / f"original_{w}_{k}.png", size=(20, 30))
            if forged:
                _png(root / f"{w:02d}" / "forged" / f"forgeries_{w}_{k}.png", size=(20, 30))
    return root


def test_signature_errors(tmp_path: Path) -> None:
    ok = load_signatures(_sig_folder(tmp_path / "ok"), image_size=(10, 16))
    assert len(ok) == 12 and ok.images.shape == (12, 1, 10, 16) and ok.is_genuine.tolist() == [True] * 3 + [False] * 3 + [True] * 3 + [False] * 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no writer folders"):
        load_signatures(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        load_signatures(tmp_path / "nope")
    noforg = _sig_folder(tmp_path / "noforg", forged=False)
    with pytest.raises(DataError, match=r"01 has no forged/ sub-folder"):
        load_signatures(noforg)
    assert load_signatures(noforg, image_size=(10, 16), require_forged=False).is_genuine.all()
    flat = tmp_path / "flat"
    _png(flat / "01" / "original_1_1.png")
    with pytest.raises(DataError, match="has no genuine/ sub-folder"):
        load_signatures(flat)
    with pytest.raises(DataError, match="one writer's folder"):
        load_signatures(tmp_path / "ok" / "01")
    emptyg = _sig_folder(tmp_path / "emptyg", writers=1)
    for p in (emptyg / "01" / "genuine").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="genuine has no images"):
        load_signatures(emptyg)
    with pytest.raises(DataError, match="no images"):
        signature_pairs(ok.writer_labels, ok.is_genuine, writers=[5])
    with pytest.raises(TypeError, match="bool"):
        signature_pairs(ok.writer_labels, ok.is_genuine.long())
