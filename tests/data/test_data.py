from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from siamkit.data import BalancedPairSampler, ImageFolderDataset, MPerClassSampler, PairCSVDataset, RandomAffine, load_image
from siamkit.errors import DataError

from ..conftest import SHARED_DATA, make_image_folder


def test_image_folder_decodes_once_to_uint8(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", classes=3, per_class=4, size=20)
    ds = ImageFolderDataset.from_folder(root, image_size=16)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (12, 1, 16, 16)
    assert ds.classes == ["class0", "class1", "class2"]
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ds.paths[0].name == "0.png"
    sub = ds.subset([2, 0])
    assert sub.classes == ["class2", "class0"] and sub.labels.tolist() == [1] * 4 + [0] * 4


@pytest.mark.parametrize("ext", ["png", "jpg", "pgm", "gif", "bmp"])
def test_formats(tmp_path: Path, ext: str) -> None:
    img = Image.new("L", (10, 12), 77)
    p = tmp_path / f"a.{ext}"
    img.save(p)
    t = load_image(p)
    assert t.shape == (1, 12, 10) and t.dtype == torch.uint8
    assert abs(int(t.float().mean()) - 77) <= 2
    assert load_image(p, channels=3, size=(6, 5)).shape == (3, 6, 5)


def test_rgb_folder(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", mode="RGB")
    assert ImageFolderDataset.from_folder(root).channels == 3
    assert ImageFolderDataset.from_folder(root, channels=1).channels == 1


def test_skip_corrupt_images(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=3)
    (root / "class0" / "bad.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.png"):
        ImageFolderDataset.from_folder(root)
    ds = ImageFolderDataset.from_folder(root, on_error="skip")
    assert len(ds) == 6


@pytest.mark.skipif(not (SHARED_DATA / "att_faces").is_dir(), reason="shared data not present")
def test_att_faces_pgm() -> None:
    ds = ImageFolderDataset.from_folder(SHARED_DATA / "att_faces", image_size=(56, 46))
    assert len(ds) == 400 and len(ds.classes) == 40 and ds.channels == 1


@pytest.mark.skipif(not (SHARED_DATA / "omniglot").is_dir(), reason="shared data not present")
def test_omniglot_alphabet_class_depth() -> None:
    root = SHARED_DATA / "omniglot" / "images_background"
    alphabet = sorted(p for p in root.iterdir() if p.is_dir())[0]
    ds = ImageFolderDataset.from_folder(alphabet, image_size=28)
    assert ds.class_counts().unique().tolist() == [20]


def test_m_per_class_sampler() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 7 + [3] * 5)
    s = MPerClassSampler(labels, m=4, batch_size=12)
    g = torch.Generator().manual_seed(0)
    batches = list(s.batches(g))
    assert len(batches) == len(s) == 2
    for b in batches:
        lab = labels[b]
        uniq, counts = lab.unique(return_counts=True)
        assert len(uniq) == 3 and (counts == 4).all()
        # classes with >= 4 samples are drawn without replacement
        for c in uniq.tolist():
            idx = b[lab == c]
            if (labels == c).sum() >= 4:
                assert idx.unique().numel() == 4
    # same generator seed, same batches
    again = list(s.batches(torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    with pytest.raises(DataError, match="2 classes"):
        MPerClassSampler(torch.zeros(10, dtype=torch.long), m=2, batch_size=4)
    with pytest.raises(DataError, match="multiple"):
        MPerClassSampler(labels, m=4, batch_size=10)


def test_balanced_pair_sampler() -> None:
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 1)
    s = BalancedPairSampler(labels, batch_size=2000, pairs_per_epoch=2000)
    i, j, same = next(iter(s.batches(torch.Generator().manual_seed(0))))
    assert torch.equal(labels[i] == labels[j], same)
    assert (i[same] != j[same]).all()
    assert 0.45 < same.float().mean() < 0.55


def test_random_affine_shapes_identity_and_fill() -> None:
    x = torch.rand(4, 1, 16, 16)
    ident = RandomAffine(degrees=0, shear=0, scale=(1, 1), translate=0)
    assert torch.allclose(ident(x), x, atol=1e-5)
    shift = RandomAffine(degrees=0, shear=0, scale=(0.5, 0.5), translate=0, fill=1.0)
    y = shift(torch.zeros(2, 1, 16, 16))
    assert y[..., 0, 0].eq(1.0).all()  # corners come from outside: filled white
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = RandomAffine()
    assert torch.equal(a(x, g1), a(x, g2))


def test_pair_csv(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=2)
    csv = tmp_path / "pairs.csv"
    csv.write_text("path_a,path_b,same\nd/class0/0.png,d/class0/1.png,1\nd/class0/0.png,d/class1/0.png,false\n")
    ds = PairCSVDataset.from_csv(csv, image_size=(8, 8), channels=1)
    assert len(ds) == 2 and ds.same.tolist() == [True, False]
    assert ds.images.shape == (3, 1, 8, 8)
    csv.write_text("path_a,path_b,same\nd/class0/0.png,d/class0/1.png,maybe\n")
    with pytest.raises(DataError, match="line 2"):
        PairCSVDataset.from_csv(csv, image_size=(8, 8), channels=1)
    csv.write_text("a,b\n")
    with pytest.raises(DataError, match="header"):
        PairCSVDataset.from_csv(csv, image_size=(8, 8), channels=1)


def _reference_grouped_batch_ok(classes: list[int], class_group: dict[int, int], cap: int | None, size: int) -> bool:
    """The slow definition: the batch's classes, read in order, come group by group;
    every group but the last one read contributes min(cap, its class count) classes."""
    seen: list[int] = []
    for c in classes:
        g = class_group[c]
        if not seen or seen[-1] != g:
            if g in seen:
                return False  # a group came back after another one
            seen.append(g)
    per = {g: sum(class_group[c] == g for c in classes) for g in seen}
    for g in seen[:-1]:
        n_g = sum(1 for v in class_group.values() if v == g)
        if per[g] != (n_g if cap is None else min(cap, n_g)):
            return False
    return len(classes) == size and (cap is None or max(per.values()) <= cap)


@pytest.mark.parametrize("cap", [None, 2, 3])
def test_grouped_sampler_fills_batches_group_by_group(cap: int | None) -> None:
    # 12 classes in 4 groups of sizes 5, 3, 2, 2; 6 samples per class
    class_group = {c: g for c, g in enumerate([0] * 5 + [1] * 3 + [2] * 2 + [3] * 2)}
    labels = torch.arange(12).repeat_interleave(6)
    groups = torch.tensor([class_group[int(c)] for c in labels]) * 10 + 7  # any integers
    s = MPerClassSampler(labels, m=2, batch_size=12, groups=groups, classes_per_group=cap)
    g = torch.Generator().manual_seed(1)
    first_groups = set()
    for _ in range(30):
        for b in s.batches(g):
            lab = labels[b].view(-1, 2)
            assert (lab[:, 0] == lab[:, 1]).all()
            classes = lab[:, 0].tolist()
            assert len(set(classes)) == len(classes) == 6
            assert _reference_grouped_batch_ok(classes, class_group, cap, 6), classes
            first_groups.add(class_group[classes[0]])
    assert first_groups == {0, 1, 2, 3}  # the group order is random


def test_grouped_sampler_bad_input() -> None:
    labels = torch.arange(6).repeat_interleave(4)
    groups = (labels // 3).clone()
    with pytest.raises(DataError, match="one entry per sample"):
        MPerClassSampler(labels, m=2, batch_size=8, groups=groups[:-1])
    split = groups.clone()
    split[0] = 1  # class 0 now has samples in groups 0 and 1
    with pytest.raises(DataError, match="class 0 has samples in more than one group"):
        MPerClassSampler(labels, m=2, batch_size=8, groups=split)
    with pytest.raises(DataError, match="needs groups"):
        MPerClassSampler(labels, m=2, batch_size=8, classes_per_group=2)
    with pytest.raises(DataError, match="1 class"):
        MPerClassSampler(labels, m=2, batch_size=8, groups=torch.zeros_like(labels), classes_per_group=1)
