#!/usr/bin/env python
"""The learned pair-head re-ranker (:class:`siamkit.gallery.pair_head.PairHeadReranker`) on
Omniglot: identification R@1 with and without it, through two-stage search.

A model trained on the background alphabets (``bench_matryoshka.py --save-models DIR``
saves it; the Matryoshka model by default) embeds every image. The head is trained on the
embeddings of the TRAINING characters (background less the 10% held out, the split
bench_matryoshka uses); its blend weight is chosen on the held-out background characters
(gallery: each character's first drawing, queries: the other 19); it is reported once on
the 659 evaluation characters (gallery: first drawing, queries: the other 12,521 drawings).
Search: :class:`TwoStageIndex` (32-value prefix, flat stage 1, 50 candidates, exact
re-ranking on the 128 values), with the head as its third stage or without.

Accuracy only (no timings; 1 thread, niced):

    nice -n 10 OMP_NUM_THREADS=1 python bench/bench_pair_head.py --model DIR/omniglot_matryoshka
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch

from _common import machine, machine_line, replace_doc_section, write_json
from siamkit.data import load_omniglot_compact, split_by_class
from siamkit.gallery.pair_head import PairHeadReranker, recall_at_1
from siamkit.gallery.two_stage import TwoStageIndex
from siamkit.inference import embed_all
from siamkit.io import load_model

SECTION = "Learned pair-head re-ranker (Omniglot identification)"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def one_shot_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gallery rows: each label's first row, query rows: the rest).

    Args:
        labels: the label of each row.

    Returns:
        The two index arrays.
    """
    _, first = np.unique(labels, return_index=True)
    mask = np.zeros(len(labels), bool)
    mask[first] = True
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def r_at_1(e: np.ndarray, y: np.ndarray, head: Any, short: int, candidates: int) -> float:
    """R@1 of the one-shot gallery of ``e`` through two-stage search (head: None or a reranker).

    Args:
        e: embeddings.
        y: labels.
        head: the reranker (None: none).
        short: stage 1's prefix.
        candidates: stage 1's candidates.

    Returns:
        R@1.
    """
    g, q = one_shot_split(y)
    idx = TwoStageIndex(short_dim=short, candidates=candidates, kind="flat", reranker=head).build(e[g])
    return recall_at_1(idx.search(e[q], 1)[1], y[g], y[q])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a model folder trained on the background alphabets")
    ap.add_argument("--seed", type=int, default=0, help="the calibration split's seed (as bench_matryoshka)")
    ap.add_argument("--short", type=int, default=32)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--no-doc", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "load_start": _load(), "args": vars(a)}
    net = load_model(a.model)
    bg, ev = load_omniglot_compact("background"), load_omniglot_compact("evaluation")
    tr_idx, cal_idx = split_by_class(bg.labels, 0.1, a.seed)
    e_bg = embed_all(net, bg.images).numpy()
    e_ev = embed_all(net, ev.images).numpy()
    y_bg, y_ev = np.asarray(bg.labels), np.asarray(ev.labels)
    var = e_ev.var(0)  # the prefix statistics bench_matryoshka_search's synthetic data imitates
    out["variance_share_of_prefix"] = {d: round(float(var[:d].sum() / var.sum()), 4) for d in (16, 32, 64)}
    print("variance share of the prefixes:", out["variance_share_of_prefix"], flush=True)
    t0 = time.perf_counter()
    head = PairHeadReranker(top=a.top, epochs=a.epochs, seed=a.seed).fit(e_bg[tr_idx], y_bg[tr_idx])
    out["head_fit_s"] = round(time.perf_counter() - t0, 1)
    g, q = one_shot_split(y_bg[cal_idx])
    e_cal, y_cal = e_bg[cal_idx], y_bg[cal_idx]
    out["validation_r_at_1_by_blend"] = head.choose_blend(e_cal[q], y_cal[q], e_cal[g], y_cal[g])
    out["blend"] = head.blend
    out["train_loss"] = head.train_loss_
    out["test"] = {"without_head": r_at_1(e_ev, y_ev, None, a.short, a.candidates),
                   "with_head": r_at_1(e_ev, y_ev, head, a.short, a.candidates)}
    best_any = max(out["validation_r_at_1_by_blend"], key=lambda b: out["validation_r_at_1_by_blend"][b])
    head.blend = best_any if best_any > 0 else 0.1
    out["test"]["with_head_blend"] = head.blend
    out["test"]["with_head_forced"] = r_at_1(e_ev, y_ev, head, a.short, a.candidates)
    out["load_end"] = _load()
    print(out["validation_r_at_1_by_blend"], out["test"], flush=True)
    write_json("pair_head", out)
    if not a.no_doc:
        replace_doc_section(SECTION, doc(out))


def doc(out: dict[str, Any]) -> str:
    """The docs/benchmarks.md section."""
    t, a = out["test"], out["args"]
    val = ", ".join(f"{b:g}: {r:.4f}" for b, r in out["validation_r_at_1_by_blend"].items())
    verdict = ("helps: kept as an option" if t["with_head"] > t["without_head"] else
               "does not help: the blend chosen on validation is 0 (off); kept only as an option, off by default")
    return "\n".join([
        f"`nice -n 10 OMP_NUM_THREADS=1 python bench/bench_pair_head.py --model MODEL --epochs {a['epochs']}` ({out['date']}; load average "
        f"{out['load_start']} at the start, {out['load_end']} at the end; accuracy only). {machine_line(out['machine'])}",
        "",
        f"Model: `{os.path.basename(os.path.normpath(a['model']))}` from `bench_matryoshka.py --save-models` (trained on the "
        "background alphabets). Head: 2 hidden layers of 128 on [|a-b|, a*b] of the 128-value embeddings, trained on "
        "the training characters' embeddings (same-character positives, 10 closest other-character negatives per "
        f"anchor, {a['epochs']} epochs, {out['head_fit_s']} s); it re-orders the top {a['top']} by distance - "
        "blend x logit. Blend chosen on the held-out background characters (R@1 by blend: " + val + f"): {out['blend']:g}.",
        "",
        f"Evaluation alphabets (659 characters; gallery: first drawing; 12,521 queries), two-stage search "
        f"({a['short']}-value prefix, {a['candidates']} candidates, exact re-ranking on 128 values):",
        "",
        "| re-ranking | R@1 |", "|---|---|",
        f"| exact full-size distance | {t['without_head']:.4f} |",
        f"| + pair head (blend {out['blend']:g}, chosen on validation) | {t['with_head']:.4f} |",
        f"| + pair head (blend {t['with_head_blend']:g}, the best non-zero on validation; for reference) | {t['with_head_forced']:.4f} |",
        "",
        f"Verdict: the pair head {verdict}.",
    ])


if __name__ == "__main__":
    main()
