#!/usr/bin/env python
"""Multi-granularity twins on Omniglot: conv4 (the demo's encoder: the last block's map)
against ``conv4_multiscale`` (the last block plus the second block pooled to 3x3:
``fused``, one projection of both; ``concat``, 96 global + 32 local values, the local
part a quarter of the squared distance) and, with the Matryoshka model's ordering, the
two granularities as the two stages of a search is not measured here (see the docs).

The demo's recipe and split (background less 10% of the characters to train, those 10%
as validation, the 20 evaluation alphabets to test), every variant trained the same
number of steps from the same seed. Reported: 20-way and 5-way one-shot (1,000 episodes,
the same for every variant) and ROC AUC on 100,000 pairs, on validation and test.
The verdict is read on validation; test is reported beside it.

Accuracy only (1 thread, niced):

    nice -n 10 OMP_NUM_THREADS=1 python bench/bench_multiscale.py [--steps 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any

import torch
from _common import machine, machine_line, replace_doc_section, write_json

from siamkit.data import load_omniglot_compact, split_by_class
from siamkit.demo import omniglot_demo_config
from siamkit.evaluation.sizes import score_sizes
from siamkit.training import fit

SECTION = "Multi-granularity twins (Omniglot)"
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "conv4 (last block)": ("conv4", {}),
    "multiscale fused (last + block 2)": ("conv4_multiscale", {"tap": 2, "tap_grid": 3, "mode": "fused"}),
    "multiscale concat 96 + 32 (local weight 0.25)": ("conv4_multiscale", {"tap": 2, "tap_grid": 3, "mode": "concat",
                                                                          "local_dim": 32, "local_weight": 0.25}),
}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _numbers(net: Any, x: torch.Tensor, y: torch.Tensor, n_way: tuple[int, ...]) -> dict[str, float]:
    r = score_sizes(net, x, y, (net.embedding_dim,), n_way=n_way, max_pairs=100_000, episodes=1000, seed=0).rows[0]
    return {"roc_auc": r["roc_auc"], **{f"{n}_way": r[f"{n}_way_1_shot"]["accuracy"] for n in n_way}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-doc", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "load_start": _load(),
                           "steps": a.steps, "seed": a.seed, "variants": {}}
    bg, ev = load_omniglot_compact("background"), load_omniglot_compact("evaluation")
    tr, va = split_by_class(bg.labels, 0.1, a.seed)
    base = omniglot_demo_config(steps=a.steps, seed=a.seed, progress=False)
    for name, (encoder, extra) in VARIANTS.items():
        cfg = dataclasses.replace(base, encoder=encoder, encoder_kwargs={**base.encoder_kwargs, **extra})
        t0 = time.perf_counter()
        net = fit(bg.images[tr], bg.labels[tr], cfg).network
        secs = round(time.perf_counter() - t0, 1)
        res = {"seconds": secs, "validation": _numbers(net, bg.images[va], bg.labels[va], (20, 5)),
               "test": _numbers(net, ev.images, ev.labels, (20, 5))}
        out["variants"][name] = res
        print(f"{name} ({secs} s, load {_load()}): {res}", flush=True)
        write_json("multiscale_omniglot", {**out, "load_end": _load()})  # what is done so far, after each variant
    out["load_end"] = _load()
    write_json("multiscale_omniglot", out)
    if not a.no_doc:
        replace_doc_section(SECTION, doc(out))


def doc(out: dict[str, Any]) -> str:
    """The docs/benchmarks.md section."""
    v = out["variants"]
    base = v["conv4 (last block)"]
    red = f" (**reduced**: {out['steps']} of the demo's 1,000 steps)" if out["steps"] != 1000 else ""
    lines = [f"`nice -n 10 OMP_NUM_THREADS=1 python bench/bench_multiscale.py --steps {out['steps']}` ({out['date']}; load "
             f"average {out['load_start']} at the start, {out['load_end']} at the end; accuracy only). "
             f"{machine_line(out['machine'])}", "",
             f"Omniglot, the demo's recipe{red}, seed {out['seed']}, 128-value embeddings; validation: the 10% of background "
             "characters held out of training; test: the 20 evaluation alphabets (1,000 episodes, the same for every variant).", "",
             "| encoder | val 20-way | val AUC | test 20-way | test 5-way | test AUC |", "|---|---|---|---|---|---|"]
    for name, r in v.items():
        lines.append(f"| {name} | {r['validation']['20_way']:.4f} | {r['validation']['roc_auc']:.4f} | {r['test']['20_way']:.4f} | "
                     f"{r['test']['5_way']:.4f} | {r['test']['roc_auc']:.4f} |")
    best = max(v, key=lambda n: v[n]["validation"]["20_way"])
    gain = v[best]["validation"]["20_way"] - base["validation"]["20_way"]
    verdict = (f"on validation `{best}` is best, {100 * gain:+.1f} points of 20-way over conv4"
               if best != "conv4 (last block)" else "on validation neither multi-granularity variant beats conv4")
    return "\n".join(lines + ["", f"Verdict: {verdict}."])


if __name__ == "__main__":
    main()
