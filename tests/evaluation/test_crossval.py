"""Class-disjoint cross-validation: folds, the runner, the summary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamkit.errors import DataError
from siamkit.evaluation.crossval import CrossValMethod, Fitted, class_folds, cross_validate, summarise_folds


def test_folds_partition_the_classes_and_keep_validation_disjoint():
    names = [f"s{i}" for i in range(23)]
    folds = class_folds(names, k=5, val_classes=4, repeats=2, seed=7)
    assert len(folds) == 10
    for r in (0, 1):
        tests = [c for f in folds if f.repeat == r for c in f.test]
        assert sorted(tests) == sorted(names)  # every class tested exactly once per repeat
        assert {len(f.test) for f in folds if f.repeat == r} <= {4, 5}
    for f in folds:
        assert not set(f.test) & set(f.val) and not set(f.test) & set(f.train) and not set(f.val) & set(f.train)
        assert len(f.val) == 4 and sorted((*f.train, *f.val, *f.test)) == sorted(names)
    assert [f.test for f in folds[:5]] != [f.test for f in folds[5:]]  # repeats reshuffle
    assert class_folds(names, k=5, val_classes=4, seed=7) == folds[:5]  # reproducible


def test_folds_refuse_too_few_classes():
    with pytest.raises(DataError, match="too few"):
        class_folds(["a", "b", "c"], k=2, val_classes=0)
    with pytest.raises(DataError, match="training classes"):
        class_folds([str(i) for i in range(10)], k=5, val_classes=7)
    with pytest.raises(DataError, match="k >= 2"):
        class_folds([str(i) for i in range(10)], k=1)


def _data(n_classes: int = 10, per: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.random((n_classes, 1, 4, 4)) * 255
    x = np.concatenate([np.clip(centres[c] + rng.normal(0, 8, (per, 1, 4, 4)), 0, 255) for c in range(n_classes)])
    return x.astype(np.uint8), np.repeat(np.arange(n_classes), per), [f"c{i}" for i in range(n_classes)]


def _raw(name: str = "raw", noise: float = 0.0, seen: dict | None = None) -> CrossValMethod:
    seen = seen if seen is not None else {"train": []}

    def fit(x, y, vx, vy):
        seen["train"].append(set(y.tolist()))
        g = torch.Generator().manual_seed(0)
        return Fitted(lambda z: z.float().flatten(1) + noise * torch.randn(z.shape[0], 16, generator=g),
                      lambda e, a, b: (e[a] - e[b]).norm(dim=1), {"n_train": len(y)})

    return CrossValMethod(name, lambda imgs: torch.from_numpy(np.asarray(imgs)), fit)


def test_cross_validate_trains_on_train_classes_scores_test_classes_under_every_condition():
    x, y, names = _data()
    folds = class_folds(names, k=5, val_classes=2, seed=0)
    flipped = {"clean": None, "negated": lambda a: 255 - a}
    seen: dict[str, list] = {"train": []}
    method = _raw(seen=seen)
    rows = cross_validate(x, y, names, [method], folds=folds, conditions=flipped)
    assert len(rows) == 5
    for row, fold in zip(rows, folds):
        assert row["test"] == list(fold.test) and row["info"]["n_train"] == 4 * len(fold.train)
        c = row["conditions"]
        assert set(c) == {"clean", "negated"}
        assert c["clean"]["pairs"] == {"genuine": 2 * 6, "impostor": 4 * 4}
        # well separated clusters: raw pixels are near perfect, and negation keeps distances
        assert c["clean"]["roc_auc"] > 0.95
        assert c["negated"]["roc_auc"] == pytest.approx(c["clean"]["roc_auc"])
    # the method saw the training classes only, renumbered 0..k-1
    assert all(s == set(range(6)) for s in seen["train"])


def test_summary_mean_sd_worst_and_beats_reference():
    x, y, names = _data()
    folds = class_folds(names, k=5, val_classes=2, seed=0)
    rows = cross_validate(x, y, names, [_raw("raw"), _raw("noisy", noise=200.0)], folds=folds)
    s = summarise_folds(rows, reference="raw")
    eers = [r["conditions"]["clean"]["eer"] for r in rows if r["method"] == "noisy"]
    cell = s["noisy"]["conditions"]["clean"]["eer"]
    assert cell["mean"] == pytest.approx(np.mean(eers)) and cell["sd"] == pytest.approx(np.std(eers, ddof=1))
    assert cell["worst"] == max(eers)
    auc = s["noisy"]["conditions"]["clean"]["roc_auc"]
    assert auc["worst"] == min(auc["folds"])
    b = s["noisy"]["beats_reference"]
    assert b["of"] == 5 and b["won"] < 5 and b["lost"] == ["clean"]
    assert "beats_reference" not in s["raw"]


def test_cross_validate_refuses_unknown_classes_and_bad_shapes():
    x, y, names = _data()
    folds = class_folds(names, k=5, val_classes=2)
    with pytest.raises(DataError, match="unknown classes"):
        cross_validate(x, y, [n + "x" for n in names], [_raw()], folds=folds)
    with pytest.raises(DataError, match="must agree"):
        cross_validate(x[:5], y, names, [_raw()], folds=folds)
