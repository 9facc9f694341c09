"""Distributed training on this machine: 1 process vs 2 (torchrun, gloo), same recipe, same cores.

:func:`siamkit.training.fit` on AT&T faces (../shared/data/att_faces, 56x46, 8 identities
held out for validation), run twice per encoder: one process with 2 threads, and
``torchrun --nproc-per-node 2`` with 1 thread per process (the same 2 cores; this script
re-runs itself with ``--worker`` under torchrun, as ``siamkit train`` would run). The
global batch is the same, so the runs should be the same run:

- ``koch``-style encoders without batch norm (here ``mlp`` with batch_norm off) must give
  the same loss curve to float precision;
- ``conv4`` (batch norm in every block) too: on CPU (gloo) siamkit swaps batch norm for
  ``GlobalBatchNorm`` (the global batch's statistics; SyncBatchNorm needs a GPU), so its
  curve must match as well (before it, each rank normalised its own half: 2.7e-2 apart).

Reports per run: wall seconds, images/s of the training epochs (from metrics.jsonl),
the largest difference of the per-epoch training loss between 1 and 2 processes, the
final validation ROC AUC of each.

    python bench/bench_ddp.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import SHARED_DATA, machine, machine_line, replace_doc_section, write_json

RUNS: dict[str, dict[str, Any]] = {
    "mlp, no batch norm": {"encoder": "mlp", "encoder_kwargs": {"hidden": [256], "batch_norm": False}},
    "conv4 (batch norm)": {"encoder": "conv4"},
    # one step per epoch: the per-epoch losses are per-step losses, where the drift starts
    "conv4 (batch norm), 1 step per epoch": {"encoder": "conv4", "steps_per_epoch": 1},
}


def worker(out: Path, run: str, epochs: int) -> None:
    """One training run (in each torchrun process, or alone).

    Args:
        out: the run folder.
        run: a key of RUNS.
        epochs: epochs to train.

    Returns:
        None (``out/metrics.jsonl`` holds the epochs).
    """
    import torch

    from siamkit import TrainConfig, fit
    from siamkit.data.faces import load_face_folder

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ds = load_face_folder(SHARED_DATA / "att_faces", image_size=(56, 46))
    kw = {"steps_per_epoch": 20, **RUNS[run]}
    cfg = TrainConfig(epochs=epochs, batch_size=32, m_per_class=4, patience=None, progress=False,
                      health=False, precision="fp32", val_fraction=0.2, **kw)
    fit(ds.images, ds.labels, cfg, out_dir=out)


BATCH_NORM_NOTE = "Batch norm: under gloo siamkit swaps batch norm for `GlobalBatchNorm` (the global batch's statistics through the autograd-aware gather; SyncBatchNorm runs only on GPUs), which took conv4's largest per-epoch loss difference from 2.7e-02 (2026-12-02, each rank its own statistics) to the figure above. The rest is float32 rounding, not a different computation: in float64, 2 processes give conv4's embeddings, input gradients, DDP-averaged weight gradients and running statistics of one process to 1e-12 (tests/training/test_distributed.py), and a batch-norm mlp trained by `fit` ends with the one-process weights to 1e-5; in float32 the sums are split differently across ranks, and Adam's first updates (about lr x sign(g) while its second moment is young) turn rounding-level differences of near-zero gradients into lr-sized steps, which conv4's loss curve then carries. The 1-step-per-epoch run shows where it starts: the first step's losses agree to float precision (the forward and the statistics are the same), and the gap then grows with every Adam step."


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train(out: Path, run: str, procs: int, epochs: int) -> dict[str, Any]:
    """One run, under torchrun when ``procs`` > 1.

    Args:
        out: the run folder (must not exist).
        run: a key of RUNS.
        procs: processes (1 = plain, with 2 threads).
        epochs: epochs to train.

    Returns:
        ``{"seconds", "images_per_s", "losses", "val_roc_auc"}``.
    """
    me = [str(Path(__file__).resolve()), "--worker", str(out), "--recipe", run, "--epochs", str(epochs)]
    if procs == 1:
        cmd, env = [sys.executable, *me], dict(os.environ, OMP_NUM_THREADS="2")
    else:
        torchrun = Path(sys.executable).with_name("torchrun")
        cmd = [str(torchrun), "--nproc-per-node", str(procs), "--master-port", str(_port()), *me]
        env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return {
        "seconds": round(seconds, 1),
        "images_per_s": round(sum(r["images_per_s"] for r in rows) / len(rows), 1),
        "losses": [r["train_loss"] for r in rows],
        "val_roc_auc": rows[-1].get("val_roc_auc"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--recipe", default=None, help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.worker is not None:
        worker(opts.worker, opts.recipe, opts.epochs)
        return
    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="siamkit-ddp-"))
    results: dict[str, Any] = {}
    try:
        for name in RUNS:
            one = train(tmp / f"{len(results)}-1", name, 1, opts.epochs)
            two = train(tmp / f"{len(results)}-2", name, 2, opts.epochs)
            diffs = [abs(a - b) for a, b in zip(one["losses"], two["losses"])]
            results[name] = {"one_process": one, "two_processes": two, "max_loss_difference": max(diffs),
                             "loss_differences": diffs,
                             "throughput_ratio": round(two["images_per_s"] / one["images_per_s"], 3)}
            print(name, json.dumps(results[name]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    m = machine()
    out = {"machine": m, "load_before": load0, "load_after": os.getloadavg()[0], "epochs": opts.epochs, "results": results}
    path = write_json("ddp", out)
    lines = [
        f"{machine_line(m)}; load average {load0:.1f} before, {out['load_after']:.1f} after. "
        f"`python bench/bench_ddp.py --epochs {opts.epochs}` ({path.name}): `fit` on AT&T faces 56x46, "
        "global batch 32 (8 identities x 4), 20 steps per epoch, fp32; one process with 2 threads vs "
        "`torchrun --nproc-per-node 2` with 1 thread each.",
        "",
        "| encoder | 1 process: s, images/s | 2 processes: s, images/s | ratio | max per-epoch loss difference | val ROC AUC 1 / 2 |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        a, b = r["one_process"], r["two_processes"]
        lines.append(f"| {name} | {a['seconds']}, {a['images_per_s']} | {b['seconds']}, {b['images_per_s']} | "
                     f"{r['throughput_ratio']} | {r['max_loss_difference']:.2e} | {a['val_roc_auc']:.4f} / {b['val_roc_auc']:.4f} |")
    lines += ["", "Per-epoch loss differences: " + "; ".join(
        f"{k}: " + ", ".join(f"{d:.1e}" for d in r["loss_differences"]) for k, r in results.items()), "", BATCH_NORM_NOTE]
    replace_doc_section("Distributed training (1 vs 2 processes)", "\n".join(lines))


if __name__ == "__main__":
    main()
