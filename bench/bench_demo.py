"""``siamkit demo`` over several seeds: the figures it prints (20-way and 5-way one-shot,
official runs, ROC AUC, EER; model and raw pixels measured in the same run) and its
training time, with mean and sd, into bench/results/demo.json and docs/benchmarks.md.

Timings are only comparable under the shared lock with 2 threads:

    OMP_NUM_THREADS=2 python bench/bench_demo.py --seeds 5

``--validate`` instead compares recipes on background alphabets only (train on 25, 20-way
on the other 5; the evaluation alphabets play no part), as used to choose the recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time

import torch

from _common import RESULTS, machine, machine_line, raw_embed, replace_doc_section, write_json
from siamkit.data import load_omniglot_compact
from siamkit.demo import DEFAULT_STEPS, omniglot_demo_config, run_omniglot_demo
from siamkit.evaluation import n_way_k_shot_accuracy
from siamkit.inference import embed_all
from siamkit.training import fit

DEV_VALIDATION = (
    "\nHow the recipe was chosen, on **background** alphabets only (the evaluation alphabets played no part): train on 25 "
    "background alphabets, 20-way 1-shot over 500 random episodes on the other 5 (drawn by the seed), 300 steps of 128, "
    "the demo's other settings; development runs of 2026-12-02 at 1 thread on the shared machine (load 21-30, so their "
    "times say nothing), the same protocol as `--validate`:\n\n"
    "| recipe | val 20-way seed 0 | seed 1 | val ROC AUC seed 0 | seed 1 |\n|---|---|---|---|---|\n"
    "| mnr loss, conv4 depth 4, global pool, 64-d (the 30-minute recipe's encoder) | 0.849 | - | 0.982 | - |\n"
    "| triplet semi-hard, conv4 depth 4, global pool, 64-d | 0.864 | - | 0.983 | - |\n"
    "| mnr loss, conv4 depth 3, 3x3 grid, 128-d | 0.868 | 0.854 | 0.987 | 0.977 |\n"
    "| **triplet semi-hard, conv4 depth 3, 3x3 grid, 128-d (the demo)** | 0.883 | 0.860 | 0.987 | 0.976 |\n\n"
    "Keeping a 3x3 map of where the strokes are (as in the 30-minute recipe's ablation) and semi-hard triplets (as the "
    "training-health work found on Omniglot) each gained 1-2 points; the differences are near the noise of 500 episodes "
    "on 5 alphabets, but both went the same way on both seeds.\n"
)
KEYS = ("one_shot_accuracy", "five_way_accuracy", "official_20way", "roc_auc", "eer")
CANDIDATES = {
    "demo recipe (triplet semi-hard, conv4 depth 3, 3x3 grid, 128-d)": {},
    "mnr (multiple negatives ranking), m_per_class 2, same encoder": dict(loss="mnr", miner=None, mnr_scale=20.0, m_per_class=2),
    "mnr, conv4 depth 4, global pool, 64-d": dict(loss="mnr", miner=None, m_per_class=2, encoder_kwargs={}, embedding_dim=None),
    "triplet semi-hard, conv4 depth 4, global pool, 64-d": dict(encoder_kwargs={}, embedding_dim=None),
}


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value).

    Args:
        values: the numbers.

    Returns:
        (mean, sd).
    """
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def validate(steps: int, seeds: int) -> list[dict]:
    """Each candidate recipe on held-out background alphabets (25 train / 5 validate).

    Args:
        steps: training steps per run.
        seeds: seeds (each also draws the 5 validation alphabets).

    Returns:
        One row per candidate: validation 20-way accuracy (model, raw pixels), seconds.
    """
    bg = load_omniglot_compact("background")
    rows = []
    for name, kw in CANDIDATES.items():
        accs, secs, raws = [], [], []
        for seed in range(seeds):
            held = [bg.alphabets[i] for i in torch.randperm(30, generator=torch.Generator().manual_seed(seed))[:5].tolist()]
            tr, va = bg.alphabet_subset([a for a in bg.alphabets if a not in held]), bg.alphabet_subset(held)
            cfg = dataclasses.replace(omniglot_demo_config(steps=steps, seed=seed, progress=False), **kw)
            t0 = time.perf_counter()
            net = fit(tr.images, tr.labels, cfg).network
            secs.append(time.perf_counter() - t0)
            accs.append(n_way_k_shot_accuracy(embed_all(net, va.images), va.labels, n_way=20, seed=0)[0])
            raws.append(n_way_k_shot_accuracy(raw_embed(va.images), va.labels, n_way=20, seed=0)[0])
        rows.append({"recipe": name, "changes": kw, "steps": steps, "val_20way": mean_sd(accs),
                     "raw_20way": statistics.mean(raws), "train_seconds": mean_sd(secs)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help=f"training steps (default the demo's, {DEFAULT_STEPS})")
    ap.add_argument("--validate", action="store_true", help="compare recipes on background alphabets instead")
    ap.add_argument("--untimed", action="store_true", help="not run under the timing lock: the docs give no timings")
    args = ap.parse_args()
    m = machine()
    m["load_avg_start"] = os.getloadavg()
    m["timed"] = not args.untimed
    prev = json.loads((RESULTS / "demo.json").read_text()) if (RESULTS / "demo.json").exists() else {}
    prev = {"validation": prev["validation"]} if "validation" in prev else {}  # the rest is replaced by this run
    if args.validate:
        prev["validation"] = {"machine": m, "rows": validate(args.steps or 300, args.seeds)}
        write_json("demo", prev)
        return
    runs: list[dict] = []
    t_all = time.perf_counter()
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            r = run_omniglot_demo(tmp, steps=args.steps, seed=seed, progress=False)
        row = {"seed": seed, "model": {k: r["model"][k] for k in KEYS}, "baseline": {k: r["baseline"][k] for k in KEYS},
               "train_seconds": r["train_seconds"], "total_seconds": time.perf_counter() - t0,
               "steps": r["train_steps"], "gallery_correct": r["gallery"]["correct"], "load_avg": os.getloadavg()[0]}
        runs.append(row)
        print(json.dumps(row), flush=True)
        write_results(prev, m, runs, time.perf_counter() - t_all)  # after every seed: a partial run still counts


def write_results(prev: dict, m: dict, runs: list[dict], wall: float) -> None:
    """Summarise the seeds run so far into bench/results/demo.json and the docs.

    Args:
        prev: the previous JSON (its validation rows are kept).
        m: the machine.
        runs: one row per seed.
        wall: seconds so far.

    Returns:
        None.
    """
    m = {**m, "load_avg_end": os.getloadavg()}
    summary = {side: {k: mean_sd([r[side][k] for r in runs]) for k in KEYS} for side in ("model", "baseline")}
    summary["train_seconds"] = mean_sd([r["train_seconds"] for r in runs])
    summary["total_seconds"] = mean_sd([r["total_seconds"] for r in runs])
    out = {**prev, "machine": m, "runs": runs, "summary": summary, "wall_seconds": wall}
    if not m["timed"]:  # never replace a timed run's figures with an untimed one's
        write_json("demo_untimed", out)
        done = json.loads((RESULTS / "demo.json").read_text()) if (RESULTS / "demo.json").exists() else {}
        if done.get("machine", {}).get("timed", False) and len(done.get("runs", [])) >= len(runs):
            return
    else:
        write_json("demo", out)
    replace_doc_section("Demo: one-shot Omniglot", doc_body(out, len(runs)))
    print(doc_body(out, len(runs)), flush=True)

def doc_body(out: dict, seeds: int) -> str:
    """The docs section of a run.

    Args:
        out: the JSON written.
        seeds: how many seeds.

    Returns:
        Markdown.
    """
    s, m = out["summary"], out["machine"]
    timed = m.get("timed", True)

    def cell(side: str, k: str) -> str:
        mu, sd = s[side][k]
        return f"{mu:.3f} ± {sd:.3f}"

    rows = "".join(
        f"| {name} | " + " | ".join(cell(side, k) for k in KEYS) + f" | {t} |\n"
        for name, side, t in (("trained (the demo)", "model", f"{s['train_seconds'][0]:.0f} ± {s['train_seconds'][1]:.0f} s" if timed else "not timed"),
                              ("raw pixels", "baseline", "-"))
    )
    ratio = s["model"]["one_shot_accuracy"][0] / s["baseline"]["one_shot_accuracy"][0]
    gain = s["model"]["roc_auc"][0] - s["baseline"]["roc_auc"][0]
    la = m["load_avg_start"], m["load_avg_end"]
    how = ("" if timed else "Accuracy only: this run was NOT under the timing lock (the lock was held by other jobs "
           "and the machine was oversubscribed), so it reports no timings; ")
    body = (
        how + (f"`OMP_NUM_THREADS=2 python bench/bench_demo.py --seeds {seeds}`" if timed
               else f"`OMP_NUM_THREADS=1 python bench/bench_demo.py --seeds {seeds} --untimed`") + " (what `siamkit demo` "
        f"runs, seeds 0-{seeds - 1}). {machine_line(m)} Load average (1/5/15 min) {la[0][0]:.1f}/{la[0][1]:.1f}/{la[0][2]:.1f} "
        f"at the start, {la[1][0]:.1f}/{la[1][1]:.1f}/{la[1][2]:.1f} at the end" + (": the machine is shared, so the times are wall-clock under that load" if timed else "") + ".\n\n"
        f"Trained on 868 characters of the 30 background alphabets of the compact Omniglot shipped in the package (96 held out "
        f"to calibrate the threshold) for {out['runs'][0]['steps']} steps of 128 drawings; measured on the 20 evaluation "
        "alphabets (659 characters, never seen). 20-way and 5-way: 1,000 random 1-shot episodes over all evaluation characters; "
        "official: Lake et al.'s 20 runs (400 queries, within alphabet) on the compact images; ROC AUC and EER: 200,000 pairs "
        "among drawers 1-6 (all 9,885 genuine). Mean ± sd over seeds; raw pixels on the same episodes and pairs.\n\n"
        "| method | 20-way 1-shot | 5-way 1-shot | official 20 runs | ROC AUC | EER | training |\n|---|---|---|---|---|---|---|\n"
        f"{rows}\n"
        f"| goal | measured | met |\n|---|---|---|\n"
        f"| 20-way 1-shot >= 3x raw pixels | {ratio:.2f}x | {'yes' if ratio >= 3 else '**no**'} |\n"
        f"| ROC AUC >= raw pixels + 0.1 | +{gain:.3f} | {'yes' if gain >= 0.1 else '**no**'} |\n"
        + (f"| the whole demo under 2 minutes | {s['total_seconds'][0]:.0f} ± {s['total_seconds'][1]:.0f} s "
           f"(load, training, evaluation, report) | {'yes' if s['total_seconds'][0] < 120 else '**no**'} |\n\n" if timed else
           "| the whole demo under 2 minutes | not measured in this run | - |\n\n")
        + "Per seed (20-way / AUC" + (" / train s" if timed else "") + " / load): "
        + ", ".join(f"{r['model']['one_shot_accuracy']:.3f} / {r['model']['roc_auc']:.3f}"
                    + (f" / {r['train_seconds']:.0f}" if timed else "") + f" / {r['load_avg']:.1f}" for r in out["runs"])
        + "\n\n"
        "The digits demo (`siamkit demo --dataset digits`; train on 0-6, test on 7-9) measured ROC AUC 0.862 ± 0.010 "
        "against 0.831 for raw pixels and 3-way 1-shot 0.786 ± 0.012 against 0.764 (5 seeds, 2026-12-01): the reason "
        "the default demo moved to Omniglot.\n" + DEV_VALIDATION
    )
    if out.get("validation"):
        v = out["validation"]
        body += (
            "\nRecipe choice on **background** alphabets only (train on 25, 20-way on the other 5, drawn per seed; "
            f"{v['rows'][0]['steps']} steps each; 1 thread, load {v['machine']['load_avg_start'][0]:.0f}: times not comparable):\n\n"
            "| recipe | val 20-way | raw pixels |\n|---|---|---|\n"
            + "".join(f"| {r['recipe']} | {r['val_20way'][0]:.3f} ± {r['val_20way'][1]:.3f} | {r['raw_20way']:.3f} |\n" for r in v["rows"])
        )
    return body


if __name__ == "__main__":
    main()
