"""Performance suite, cross-batch memory: ms per training step (mine, loss, backward,
enqueue) of siamkit's :mod:`siamkit.memory` vs pytorch-metric-learning's (PML)
``CrossBatchMemory`` on the same inputs, batch-hard triplets (margin 0.2), a full memory
of 16,384 L2-normalised 128-d embeddings, batch 512 / 2048 / 8192 (goal >= 3x, no OOM,
memory O(batch x memory)).

- Timing: one worker process per batch, the two libraries interleaved step by step
  (median of the repeats after a warm-up), so the ratio is measured under one load.
- Peak memory: one fresh worker per (library, batch) runs 2 steps; the figure is its
  peak resident memory minus its resident memory after building the inputs and the full
  memory (what a step adds).
- Same inputs, same candidates: PML enqueues the batch first and mines it against its
  memory (batch included, oldest rows dropped); siamkit mines the batch against the batch
  plus its memory, then enqueues. Given a memory of PML's memory's other rows, siamkit
  mines the same candidate set: the first step's triplet loss (reduced like PML's, mean
  over the non-zero triplets) is compared. In the timed steady state siamkit's memory is
  full, so it scores B more candidates than PML.

PML is not a siamkit dependency; install it beside the venv without its dependencies
(torch stays the pinned CPU build):

    pip install --no-deps --target PML_DIR -c .ci/constraints.txt pytorch-metric-learning
    flock TIMING_LOCK env PYTHONPATH=src:PML_DIR OMP_NUM_THREADS=2 python bench/perf_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import machine, write_json

MEMORY, DIM, CLASSES, MARGIN = 16384, 128, 4096, 0.2


def _rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def _inputs(batch: int):  # type: ignore[no-untyped-def]
    import torch

    g = torch.Generator().manual_seed(batch)
    norm = torch.nn.functional.normalize
    mem_e = norm(torch.randn(MEMORY, DIM, generator=g), dim=1)
    mem_y = torch.randint(0, CLASSES, (MEMORY,), generator=g)
    x = norm(torch.randn(batch, DIM, generator=g), dim=1)
    y = torch.randperm(CLASSES, generator=g)[: batch // 4].repeat_interleave(4)
    return x, y, mem_e, mem_y


def _sides(batch: int, mem_e, mem_y):  # type: ignore[no-untyped-def]
    """{library: step(x, y) -> loss} with full 16k memories, forward + backward + enqueue."""
    import pytorch_metric_learning.losses as pml_losses
    import pytorch_metric_learning.miners as pml_miners

    from siamkit.memory import CrossBatchMemory, memory_loss
    from siamkit.miners import BatchHardMiner

    xbm = pml_losses.CrossBatchMemory(pml_losses.TripletMarginLoss(margin=MARGIN), DIM, memory_size=MEMORY,
                                      miner=pml_miners.BatchHardMiner())
    xbm.embedding_memory.copy_(mem_e)
    xbm.label_memory.copy_(mem_y)
    xbm.has_been_filled, xbm.queue_idx = True, 0
    mem, miner = CrossBatchMemory(size=MEMORY).enqueue(mem_e, mem_y), BatchHardMiner()

    def siamkit(x, y):  # type: ignore[no-untyped-def]
        loss = memory_loss(x, y, mem, miner, loss="triplet", margin=MARGIN)
        loss.backward()
        mem.enqueue(x, y)
        return loss

    def pml(x, y):  # type: ignore[no-untyped-def]
        loss = xbm(x, y)
        loss.backward()
        return loss

    return {"siamkit": siamkit, "pml": pml}


def _same_candidates_check(x, y, mem_e, mem_y) -> dict:  # type: ignore[no-untyped-def]
    """The first step's loss of both libraries over the same candidate set."""
    import pytorch_metric_learning.losses as pml_losses
    import pytorch_metric_learning.miners as pml_miners
    import torch

    from siamkit.losses import triplet_loss
    from siamkit.memory import CrossBatchMemory, memory_triplets
    from siamkit.miners import BatchHardMiner

    b = x.shape[0]
    xbm = pml_losses.CrossBatchMemory(pml_losses.TripletMarginLoss(margin=MARGIN), DIM, memory_size=MEMORY,
                                      miner=pml_miners.BatchHardMiner())
    xbm.embedding_memory.copy_(mem_e)
    xbm.label_memory.copy_(mem_y)
    xbm.has_been_filled, xbm.queue_idx = True, 0
    with torch.no_grad():
        pml_loss = float(xbm(x, y))  # PML overwrote rows 0..b-1 with the batch
    mem = CrossBatchMemory(size=MEMORY).enqueue(mem_e[b:], mem_y[b:])
    e_m, y_m = mem.contents()
    cand, cand_y = torch.cat([x, e_m]), torch.cat([y, y_m])
    t = memory_triplets(BatchHardMiner(), cand, cand_y, b)
    ours = float(triplet_loss(cand, t, margin=MARGIN, reduction="mean_nonzero"))
    return {"siamkit_loss": ours, "pml_loss": pml_loss, "abs_diff": abs(ours - pml_loss), "triplets": int(t.anchor.numel())}


def time_worker(batch: int, repeats: int, warmup: int) -> dict:
    import torch

    x0, y, mem_e, mem_y = _inputs(batch)
    check = _same_candidates_check(x0, y, mem_e, mem_y)
    steps = _sides(batch, mem_e, mem_y)
    x = x0.clone().requires_grad_(True)
    times: dict[str, list[float]] = {s: [] for s in steps}
    for k in range(warmup + repeats):
        for side, step in steps.items():  # interleaved: both see the same load
            x.grad = None
            t0 = time.perf_counter()
            step(x, y)
            dt = time.perf_counter() - t0
            assert x.grad is not None and bool(torch.isfinite(x.grad).all())
            if k >= warmup:
                times[side].append(dt)
    out = {s: {"ms": 1000 * statistics.median(v), "ms_all": [round(1000 * t, 2) for t in v]} for s, v in times.items()}
    return {"batch": batch, "threads": torch.get_num_threads(), "check": check, **out,
            "speedup": out["pml"]["ms"] / out["siamkit"]["ms"]}


def peak_worker(batch: int, side: str) -> dict:
    import torch

    x0, y, mem_e, mem_y = _inputs(batch)
    step = _sides(batch, mem_e, mem_y)[side]
    x = x0.clone().requires_grad_(True)
    base = _rss_gb()
    for _ in range(2):
        x.grad = None
        step(x, y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"batch": batch, "side": side, "base_rss_gb": base, "peak_rss_gb": peak, "step_peak_gb": peak - base,
            "threads": torch.get_num_threads()}


def _spawn(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()
        return {"error": f"exit {r.returncode}: {tail[-1] if tail else ''}"[:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="512,2048,8192")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--worker", choices=["time", "peak"], help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker == "time":
        print(json.dumps(time_worker(a.batch, a.repeats, a.warmup)))
        return 0
    if a.worker == "peak":
        print(json.dumps(peak_worker(a.batch, a.side)))
        return 0
    out: dict = {"machine": machine(), "load_before": os.getloadavg(), "memory_rows": MEMORY, "dim": DIM,
                 "classes": CLASSES, "miner": "batch_hard", "margin": MARGIN, "rows": []}
    for batch in (int(b) for b in a.batches.split(",")):
        repeats = a.repeats if batch <= 2048 else max(3, a.repeats // 2)
        row = _spawn(["--worker", "time", "--batch", str(batch), "--repeats", str(repeats), "--warmup", str(a.warmup)], a.timeout)
        row["batch"] = batch
        for side in ("siamkit", "pml"):
            row[f"peak_{side}"] = _spawn(["--worker", "peak", "--batch", str(batch), "--side", side], a.timeout)
        print(json.dumps(row), flush=True)
        out["rows"].append(row)
    out["load_after"] = os.getloadavg()
    write_json("perf_memory", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
