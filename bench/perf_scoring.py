"""Performance suite, pair scoring: distances of 1M (a_i, b_i) pairs of 128-d float32
embeddings (the work behind a batch of verifications) vs numpy on the same arrays and vs
a memcpy of the same bytes (``torch.Tensor.copy_`` of the 1 GB of embeddings into a
preallocated buffer: the memory-bandwidth limit of a pass that reads every byte once).

Goal: scoring time <= 2 x memcpy time (>= 0.5 of memcpy bandwidth). Every case is timed
in interleaved rounds (median) in one process, so the ratios share the load.

    flock TIMING_LOCK python bench/perf_scoring.py [--pairs 1000000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

from _common import machine, write_json
from siamkit.distances import get_distance


def timed(fn: Callable[[], Any], rounds: int) -> list[float]:
    """Seconds of each of ``rounds`` calls after one warm-up call.

    Args:
        fn: the work.
        rounds: timed calls.

    Returns:
        The times.
    """
    fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def cases(a: torch.Tensor, b: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """The scoring implementations and the memcpy reference, all on the same arrays.

    Args:
        a: the first embedding of each pair.
        b: the second embedding of each pair.

    Shapes:
        a (N, D), b (N, D).

    Returns:
        name -> a zero-argument call.
    """
    an, bn = a.numpy(), b.numpy()
    both = torch.cat([a, b])  # the same bytes in one buffer (setup, not timed)
    dst = torch.empty_like(both)
    euclid, cosine = get_distance("euclidean"), get_distance("cosine")

    def no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return fn()
        return run

    return {
        "memcpy": lambda: dst.copy_(both),
        "siamkit euclidean": no_grad(lambda: euclid.paired(a, b)),
        "siamkit cosine": no_grad(lambda: cosine.paired(a, b)),
        "numpy euclidean": lambda: np.sqrt(((an - bn) ** 2).sum(1)),
        "numpy einsum euclidean": lambda: np.sqrt(np.einsum("ij,ij->i", an - bn, an - bn)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's table for siamkit euclidean")
    args = ap.parse_args()
    load0 = os.getloadavg()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(args.pairs, args.dim, generator=g)
    b = torch.randn(args.pairs, args.dim, generator=g)
    fns = cases(a, b)
    with torch.no_grad():
        ref = np.sqrt(((a.numpy().astype(np.float64) - b.numpy()) ** 2).sum(1))
        err = float(np.abs(get_distance("euclidean").paired(a, b).numpy() - ref).max())
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.rounds):  # interleaved: every case sees the same load
        for k, fn in fns.items():
            times[k] += timed(fn, 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    nbytes = 2 * args.pairs * args.dim * 4
    rows = [
        {"case": k, "median_s": med[k], "min_s": min(times[k]), "gb_per_s": nbytes / med[k] / 1e9,
         "fraction_of_memcpy": med["memcpy"] / med[k]}
        for k in fns
    ]
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fns["siamkit euclidean"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    out = {
        "machine": machine(), "load_before": load0, "load_after": os.getloadavg(),
        "pairs": args.pairs, "dim": args.dim, "bytes": nbytes, "rounds": args.rounds,
        "max_abs_error_vs_float64": err, "rows": rows,
    }
    write_json("perf_scoring", out)
    for r in rows:
        print(f"{r['case']:24s} {r['median_s'] * 1e3:8.1f} ms  {r['gb_per_s']:6.2f} GB/s  {r['fraction_of_memcpy']:.2f} of memcpy")


if __name__ == "__main__":
    main()
