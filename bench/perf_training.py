"""Performance suite, training step: ``siamkit.fit``'s full data path (m-per-class
sampling, uint8 indexing, float conversion, augmentation, forward, mining, loss,
backward, Adam) vs the same step on one float batch already in memory (compute bound),
conv4 on real Omniglot 28x28 (bench_throughput's protocol, a reduced set of cases:
compute bound measured before and after the data path and averaged). Goal: ratio >= 0.9.

``--profile`` adds torch.profiler's top operators of a short data-path run (which share
of the step is data handling).

    flock TIMING_LOCK python bench/perf_training.py [--steps 30] [--profile]
"""

from __future__ import annotations

import argparse
import os

import torch

from _common import machine, write_json
from bench_throughput import compute_bound_rate, config, data_path_rate, load
from siamkit import fit

#: (precision, augment)
CASES = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
DATA_OPS = ("index", "_to_copy", "copy_", "div", "grid_sampler", "affine_grid", "randperm", "cat", "stack")


def profile_data_path(ds: object, steps: int) -> dict[str, object]:
    """torch.profiler over a short fp32 + augmentation data-path run.

    Args:
        ds: the training images (an ImageFolderDataset).
        steps: steps to profile.

    Returns:
        The top operators by self CPU time and the share of data-handling operators.
    """
    from torch.profiler import ProfilerActivity, profile

    cfg = config("fp32", 128, steps, True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fit(ds.images, ds.labels, cfg)  # type: ignore[attr-defined]
    ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev) or 1
    data = sum(e.self_cpu_time_total for e in ev if any(k in e.key for k in DATA_OPS))
    return {"top": [{"op": e.key, "self_cpu_share": e.self_cpu_time_total / total} for e in ev[:8]],
            "data_ops_share": data / total, "data_ops": list(DATA_OPS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--alphabets", type=int, default=10, help="background alphabets loaded (fewer: faster start)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    ds = load("images_background", 28, args.alphabets)
    rows = []
    for precision, augment in CASES:
        cfg = config(precision, 128, args.steps, augment)
        before = compute_bound_rate(ds, cfg)
        data = data_path_rate(ds, cfg)
        after = compute_bound_rate(ds, cfg)
        bound = (before + after) / 2
        rows.append({"precision": precision, "augment": augment, "batch": 128, "steps": args.steps,
                     "data_path_img_s": data, "compute_bound_img_s": bound, "compute_bound_spread": [before, after],
                     "ratio": data / bound})
        print(f"{precision} augment={augment}: data path {data:.0f} img/s, compute bound {bound:.0f} img/s, ratio {data / bound:.2f}")
    out = {"machine": machine(), "load_before": load0, "threads": args.threads, "rows": rows,
           "images": int(ds.images.shape[0]), "alphabets": args.alphabets}
    if args.profile:
        out["profile"] = profile_data_path(ds, 10)
    out["load_after"] = os.getloadavg()
    write_json("perf_training", out)


if __name__ == "__main__":
    main()
