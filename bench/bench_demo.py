"""The demo's accuracy on unseen digits 7-9 over several seeds, next to the raw-pixel
baseline in the same run, plus the recipe ablation that chose the demo's settings on
validation digits (train 0-3, validate on 4-6; the test digits take no part in choosing).

    python bench/bench_demo.py [--seeds 5] [--ablation]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from _common import RESULTS, machine, machine_line, raw_embed, replace_doc_section, write_json
from siamkit.demo import demo_config, evaluate_embeddings, load_digits_split
from siamkit.inference import embed_all
from siamkit.training import fit

ABLATION = {
    "demo recipe (views loss, conv4 depth 2, 4x4 grid)": {},
    "triplet batch-hard, conv4 depth 4 (ProtoNet conv4)": dict(
        loss="triplet", miner="batch_hard", encoder_kwargs={}, embedding_dim=64, augment=False
    ),
    "triplet batch-hard, depth 2, 4x4 grid": dict(loss="triplet", miner="batch_hard", augment=False),
    "triplet batch-hard + views term (instance_weight 1)": dict(loss="triplet", miner="batch_hard", instance_weight=1.0),
    "contrastive all pairs, depth 2": dict(loss="contrastive", miner="all_pairs", margin=0.5, augment=False),
    "views loss, stronger augmentation (10 deg, 10%)": dict(rotation=10.0, translate=0.1, scale=(0.9, 1.1), shear=0.1),
    "views loss, depth 3, 2x2 grid": dict(encoder_kwargs={"depth": 3, "grid": 2}),
    "views loss, 50 epochs": dict(epochs=50),
}


def run(train_digits: list[int], test_digits: list[int], config) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Train on some digits, measure the model and raw pixels on others.

    Args:
        train_digits: the digits to train on.
        test_digits: the digits to measure on (3-way 1-shot needs 3).
        config: the ``TrainConfig``.

    Returns:
        ROC AUC and 3-way 1-shot accuracy of the model and of raw pixels, and the train time.
    """
    x_tr, y_tr, x_te, y_te = load_digits_split()
    x, y = torch.cat([x_tr, x_te]), torch.cat([y_tr, y_te])
    tr, te = torch.isin(y, torch.tensor(train_digits)), torch.isin(y, torch.tensor(test_digits))
    t0 = time.perf_counter()
    result = fit(x[tr], y[tr], config)
    seconds = time.perf_counter() - t0
    m, _, _ = evaluate_embeddings(embed_all(result.network, x[te]), y[te], seed=0)
    b, _, _ = evaluate_embeddings(raw_embed(x[te]), y[te], seed=0)
    return {"roc_auc": m["roc_auc"], "one_shot": m["one_shot_accuracy"], "base_roc_auc": b["roc_auc"],
            "base_one_shot": b["one_shot_accuracy"], "train_seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--ablation", action="store_true", help="also run the recipe ablation on validation digits")
    args = ap.parse_args()
    m = machine()
    runs = []
    for seed in range(args.seeds):
        r = run(list(range(7)), [7, 8, 9], demo_config(seed=seed, progress=False))
        runs.append({"seed": seed, **r})
        print(f"seed {seed}: {r}", flush=True)

    def agg(key: str) -> tuple[float, float]:
        vals = [r[key] for r in runs]
        return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    out = {"machine": m, "runs": runs, "summary": {k: agg(k) for k in ("roc_auc", "one_shot", "base_roc_auc", "base_one_shot", "train_seconds")}}
    s = out["summary"]
    body = (
        f"`python bench/bench_demo.py --seeds {args.seeds}{' --ablation' if args.ablation else ''}`. {machine_line(m)}\n\n"
        "Train on digits 0-6 of `sklearn.datasets.load_digits`, test on the unseen digits 7-9 "
        "(533 images, all 141,778 pairs; 3-way 1-shot over 1,000 episodes). Mean ± sd over seeds; "
        "the baseline is raw-pixel Euclidean distance on the same pairs and episodes.\n\n"
        "| method | ROC AUC | 3-way 1-shot | train time |\n|---|---|---|---|\n"
        f"| trained (demo recipe, {args.seeds} seeds) | {s['roc_auc'][0]:.4f} ± {s['roc_auc'][1]:.4f} | "
        f"{s['one_shot'][0]:.4f} ± {s['one_shot'][1]:.4f} | {s['train_seconds'][0]:.1f} s |\n"
        f"| raw pixels | {s['base_roc_auc'][0]:.4f} | {s['base_one_shot'][0]:.4f} | - |\n\n"
        f"Per seed (AUC / 1-shot): " + ", ".join(f"{r['roc_auc']:.3f} / {r['one_shot']:.3f}" for r in runs) + "\n"
    )
    rows = []
    carried = False
    if not args.ablation:  # keep the last --ablation run's table (a plain run would otherwise drop it)
        prev = RESULTS / "demo.json"
        rows = json.loads(prev.read_text()).get("ablation", []) if prev.exists() else []
        carried = bool(rows)
    if args.ablation:
        for name, kw in ABLATION.items():
            vals = []
            for seed in (0, 1):
                cfg = dataclasses.replace(demo_config(seed=seed, progress=False), **kw)
                vals.append(run([0, 1, 2, 3], [4, 5, 6], cfg))
            rows.append({"recipe": name, "val_roc_auc": statistics.mean(v["roc_auc"] for v in vals),
                         "val_one_shot": statistics.mean(v["one_shot"] for v in vals),
                         "base_roc_auc": vals[0]["base_roc_auc"], "base_one_shot": vals[0]["base_one_shot"]})
            print(rows[-1], flush=True)
    if rows:
        out["ablation"] = rows
        body += (
            "\nRecipe ablation on **validation** digits (train 0-3, test 4-6; mean of seeds 0 and 1"
            + ("; measured by an earlier run with --ablation" if carried else "") + "). "
            f"Raw pixels on these digits: ROC AUC {rows[0]['base_roc_auc']:.3f}, 1-shot {rows[0]['base_one_shot']:.3f}.\n\n"
            "| recipe | val ROC AUC | val 3-way 1-shot |\n|---|---|---|\n"
            + "".join(f"| {r['recipe']} | {r['val_roc_auc']:.3f} | {r['val_one_shot']:.3f} |\n" for r in rows)
        )
    write_json("demo", out)
    replace_doc_section("Demo: unseen digits", body)
    print(body)


if __name__ == "__main__":
    main()
