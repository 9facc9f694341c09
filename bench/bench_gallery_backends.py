#!/usr/bin/env python
"""Gallery backends: a SQLite file vs a PostgreSQL database, one and two instances.

What is timed is the gallery library (``Gallery.enroll`` / ``Gallery.identify``), not
HTTP: the service adds the same request handling on top of either backend. The model is
a one-layer MLP on 64-d vectors (64-d embeddings, a few microseconds to embed), so the
figures are the storage's and the search's. Per backend:

- enrol: ``--n`` identities, one sample each, one process, each enrolment its own
  transaction (SQLite ``synchronous=FULL``; PostgreSQL with fsync on, its default);
- identify: ``--queries`` single-probe identifications (FAISS flat, k=5) at that size:
  requests/s and p50 / p99 latency, the generation check included;
- new instance: open the gallery and build its index (read every embedding);
- two instances: two processes enrolling ``--n2`` identities each at once (aggregate
  enrolments/s), then two processes identifying at once while a third enrols (how
  identify latency holds up while the instances follow another's writes).

PostgreSQL is a throw-away cluster (``tests/postgres_cluster.py``, durable settings) on
this machine unless ``--postgres-url`` names a database. Run alone (timings)::

    python bench/bench_gallery_backends.py      # (under the shared timing lock) see docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))
from _common import machine, machine_line, replace_doc_section, write_json  # noqa: E402

from siamkit import SiameseNetwork, create_encoder  # noqa: E402
from siamkit.gallery import Gallery  # noqa: E402

DIM = 64
DOC_HEADING = "Gallery backends: SQLite vs PostgreSQL"


def network() -> SiameseNetwork:
    """The benchmark's model (the same weights in every process)."""
    torch.manual_seed(0)
    enc = create_encoder("mlp", in_features=DIM, embedding_dim=DIM, hidden=[])
    return SiameseNetwork(enc, input_spec={"shape": [DIM]}).eval()


def vectors(seed: int, n: int) -> np.ndarray:
    """n random input vectors."""
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def enrol(location: Any, prefix: str, n: int, seed: int) -> float:
    """Enrol n identities (one sample each) one by one; returns the seconds taken."""
    torch.set_num_threads(1)
    x = vectors(seed, n)
    with Gallery.open(location, network(), index="flat", timeout=120) as g:
        t0 = time.perf_counter()
        for i in range(n):
            g.enroll(f"{prefix}{i}", x[i : i + 1])
        return time.perf_counter() - t0


def identify(location: Any, queries: int, seed: int) -> list[float]:
    """Single-probe identifications; returns each one's seconds."""
    torch.set_num_threads(1)
    x = vectors(seed, queries) * 0.1 + vectors(0, queries)  # near enrolled vectors
    out = []
    with Gallery.open(location, network(), index="flat", create=False) as g:
        g.build_index()
        for i in range(queries):
            t0 = time.perf_counter()
            g.identify(x[i], k=5)
            out.append(time.perf_counter() - t0)
    return out


def _worker(args: tuple[str, Any, str, int, int, Any]) -> Any:
    kind, location, prefix, n, seed, start = args
    start.wait(120)
    return enrol(location, prefix, n, seed) if kind == "enrol" else identify(location, n, seed)


def run_parallel(jobs: list[tuple[str, Any, str, int, int]]) -> list[Any]:
    """Run jobs in spawned processes that start together; returns their results."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Event()
        with ctx.Pool(len(jobs)) as pool:
            res = pool.map_async(_worker, [(*j, start) for j in jobs])
            time.sleep(8.0)  # let every process import torch and siamkit
            start.set()
            return res.get(1800)


def latency_row(seconds: list[float]) -> dict[str, float]:
    a = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "per_s": float(1000 / a.mean())}


def bench_backend(location: Any, n: int, n2: int, queries: int) -> dict[str, Any]:
    """Every measurement of one backend."""
    row: dict[str, Any] = {}
    s = enrol(location, "id", n, 0)
    row["enrol_per_s"] = n / s
    row["identify"] = latency_row(identify(location, queries, 1))
    t0 = time.perf_counter()
    with Gallery.open(location, network(), index="flat", create=False) as g:
        g.build_index()
    row["new_instance_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    times = run_parallel([("enrol", location, "a", n2, 2), ("enrol", location, "b", n2, 3)])
    row["two_enrol_per_s"] = 2 * n2 / max(times)
    lat = run_parallel([("identify", location, "", queries, 4), ("identify", location, "", queries, 5), ("enrol", location, "c", n2, 6)])
    row["two_identify_while_enrolling"] = latency_row(lat[0] + lat[1])
    row["load_after"] = os.getloadavg()
    return row


def table(results: dict[str, Any], n: int) -> str:
    lines = [
        f"| backend | enrol/s (1 instance) | enrol/s (2 instances) | identify/s | p50 ms | p99 ms | 2 instances identifying while a 3rd enrols: p50 / p99 ms | new instance: open + index of {n:,} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        i, j = r["identify"], r["two_identify_while_enrolling"]
        lines.append(
            f"| {name} | {r['enrol_per_s']:.0f} | {r['two_enrol_per_s']:.0f} | {i['per_s']:.0f} | {i['p50_ms']:.2f} | {i['p99_ms']:.2f} "
            f"| {j['p50_ms']:.2f} / {j['p99_ms']:.2f} | {r['new_instance_s']:.2f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="identities enrolled by one instance")
    ap.add_argument("--n2", type=int, default=1_000, help="identities each of two instances enrols at once")
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--postgres-url", default=None, help="an empty database (default: a throw-away cluster)")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg(), "n": args.n, "n2": args.n2, "queries": args.queries}
    cluster = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.postgres_url
        if url is None:
            from tests.postgres_cluster import Cluster

            cluster = Cluster(durable=True)
            url = cluster.new_database()
        try:
            results = {"SQLite file": bench_backend(Path(tmp) / "g.db", args.n, args.n2, args.queries)}
            results["PostgreSQL"] = bench_backend(url, args.n, args.n2, args.queries)
        finally:
            if cluster is not None:
                cluster.destroy()
    out["results"] = results
    out["load_after"] = os.getloadavg()
    path = write_json("gallery_backends", out)
    print(table(results, args.n))
    print(f"wrote {path}")
    if not args.no_doc:
        body = "\n".join([
            "`bench/bench_gallery_backends.py`: the gallery library on each backend, a one-layer MLP on 64-d vectors "
            "(embedding costs microseconds: the figures are the storage's and the search's). Enrol: one identity, one "
            "sample, one transaction each (SQLite `synchronous=FULL`; PostgreSQL 15 with fsync on, on the same disk, "
            f"over loopback TCP). Identify: single probes, FAISS flat, k=5, at {args.n:,} identities (two instances: {args.n + 2 * args.n2:,}+). "
            "Two instances: two processes at once on the same file / database.",
            "",
            table(results, args.n),
            "",
            machine_line(out["machine"]) + f" Load average before: {out['load_before'][0]:.1f}, after: {out['load_after'][0]:.1f} "
            "(a shared 2-core machine: absolute figures move with the load, the comparison was measured in one run). "
            "Load average (1 min) at the end of each backend's runs: "
            + ", ".join(f"{k} {v['load_after'][0]:.1f}" for k, v in results.items()) + ".",
            "",
            "Reading: a PostgreSQL enrolment is about ten round trips to the server in one transaction (lock the "
            "generation, check, insert identity and samples, bump, record the change, audit, notify, commit), each a "
            "context switch to another process on an overloaded 2-core machine, so it enrols several times slower than "
            "the embedded file here; identification reads nothing from the database unless something changed (the "
            "listener's generation), so it runs at in-memory speed on both.",
        ])
        replace_doc_section(DOC_HEADING, body)


if __name__ == "__main__":
    main()
