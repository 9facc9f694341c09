#!/usr/bin/env python
"""Benchmark: siamkit miner + loss against pytorch-metric-learning (PML).

Times one training step's forward + backward (mine, loss, ``loss.backward()``) on CPU for
batches of 128, 512 and 2048 L2-normalised random 128-d embeddings, batch/4 classes x 4,
and checks that both libraries compute the same loss where they define the same thing:

  batch_hard   siamkit BatchHardMiner + triplet_loss(margin=0.2, reduction="mean_nonzero")
               vs PML BatchHardMiner + TripletMarginLoss(margin=0.2) (AvgNonZeroReducer)
  hard_pairs   siamkit HardPairMiner(pos_margin=0.2, neg_margin=0.8)
               + contrastive_loss(pos_margin=0, neg_margin=1, power=1, reduction="none"),
               reduced like PML (mean of the non-zero positive-pair losses + mean of the
               non-zero negative-pair losses)
               vs PML PairMarginMiner(0.2, 0.8) + ContrastiveLoss(pos_margin=0, neg_margin=1)
  semi_hard    siamkit SemiHardMiner + triplet_loss(margin=0.2, reduction="mean_nonzero")
               vs PML TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
               + TripletMarginLoss(margin=0.2). Different triplet sets by definition (PML:
               every semi-hard triplet; siamkit: one per positive pair, FaceNet / TF Addons
               rule), so the values are recorded, not compared; siamkit is checked against
               tests/reference/naive.py at batch 128 instead.

Each (method, batch) runs in its own worker process, the two libraries interleaved
(median of several repeats after warm-up, torch's default thread count), so the
speedup ratio PML / siamkit is measured under the same machine load. The parent
watches every worker: a worker whose resident memory passes --max-rss-gb, or whose
first PML step has not finished within --step-timeout seconds, is killed and the PML
side recorded as skipped with the reason (PML's semi-hard miner enumerates all
batch^3 candidate triplets).

Run it with the separate benchmark venv (it has pytorch-metric-learning installed):

    BENCH_VENV/bin/python bench/bench_miners.py --out bench/results/miners.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import cpu_name

REPO = Path(__file__).resolve().parents[1]
DOC_HEADING = "## Miner + loss vs pytorch-metric-learning"
BATCHES = (128, 512, 2048)
METHODS = ("batch_hard", "hard_pairs", "semi_hard")
DIM = 128
MARGIN = 0.2
POS_MARGIN, NEG_MARGIN = 0.2, 0.8  # hard-pair mining margins
# speedup goals at batch 512 and 2048 (forward + backward)
GOALS = {"batch_hard": 3.0, "semi_hard": 10.0}
GOAL_BATCHES = (512, 2048)


# ============================================================================ worker


def _emit(event: dict) -> None:
    print(json.dumps(event), flush=True)


def _make_batch(n: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(n, DIM, generator=g), dim=1)
    labels = torch.arange(n // 4).repeat_interleave(4)
    return emb, labels


def _avg_nonzero(v):
    nz = v > 0
    return v[nz].mean() if bool(nz.any()) else v.sum() * 0.0


def _build(method: str):
    """Return {side: step(x, labels) -> (loss, tuples as a set-able description)}."""
    import pytorch_metric_learning.losses as pml_losses
    import pytorch_metric_learning.miners as pml_miners

    from siamkit.losses import contrastive_loss, triplet_loss
    from siamkit.miners import BatchHardMiner, HardPairMiner, SemiHardMiner

    if method == "batch_hard":
        s_miner, p_miner = BatchHardMiner(), pml_miners.BatchHardMiner()
        p_loss = pml_losses.TripletMarginLoss(margin=MARGIN)

    elif method == "hard_pairs":
        s_miner = HardPairMiner(pos_margin=POS_MARGIN, neg_margin=NEG_MARGIN)
        p_miner = pml_miners.PairMarginMiner(pos_margin=POS_MARGIN, neg_margin=NEG_MARGIN)
        p_loss = pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=1)

        def siamkit(x, labels):
            pairs = s_miner.mine(x, labels)
            per = contrastive_loss(x, pairs, pos_margin=0.0, neg_margin=1.0, power=1, reduction="none")
            return _avg_nonzero(per[pairs.same]) + _avg_nonzero(per[~pairs.same]), pairs

    elif method == "semi_hard":
        s_miner = SemiHardMiner()
        p_miner = pml_miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard")
        p_loss = pml_losses.TripletMarginLoss(margin=MARGIN)
    else:
        raise ValueError(method)
    if method != "hard_pairs":  # the two triplet methods: same loss, other miners

        def siamkit(x, labels):
            t = s_miner.mine(x, labels)
            return triplet_loss(x, t, margin=MARGIN, reduction="mean_nonzero"), t

    def pml(x, labels):
        t = p_miner(x, labels)
        return p_loss(x, labels, t), t

    return {"siamkit": siamkit, "pml": pml}


def _tuple_sets(method: str, side: str, t) -> tuple[int, set]:
    """Mined tuples as a comparable set: unordered pairs (i, j, same) or triplets."""
    if method == "hard_pairs":
        if side == "siamkit":
            rows = zip(t.a.tolist(), t.b.tolist(), t.same.tolist())
        else:  # PML: ordered positive pairs (a1, p) and negative pairs (a2, n)
            a1, p, a2, n = (v.tolist() for v in t)
            rows = [(i, j, True) for i, j in zip(a1, p)] + [(i, j, False) for i, j in zip(a2, n)]
        s = {(min(i, j), max(i, j), bool(same)) for i, j, same in rows}
        return len(s), s
    cols = [v.tolist() for v in t]
    s = set(zip(*cols))
    return len(cols[0]), s


def _naive_semi_hard_check(emb, labels, siamkit_value: float, siamkit_tuples) -> dict:
    sys.path.insert(0, str(REPO))
    from tests.reference import naive

    t0 = time.perf_counter()
    ref = naive.semi_hard(emb, labels)
    a, p, n = zip(*sorted(ref))
    per = naive.triplet_losses(emb.double().tolist(), a, p, n, margin=MARGIN)
    value = naive.reduce(per, "mean_nonzero")
    got = set(zip(*(v.tolist() for v in siamkit_tuples)))
    return {
        "naive_loss": value,
        "abs_diff_vs_naive": abs(value - siamkit_value),
        "same_triplets_as_naive": got == ref,
        "naive_seconds": round(time.perf_counter() - t0, 2),
    }


def worker(method: str, batch: int, sides: list[str], repeats: int, warmup: int, threads: int | None) -> None:
    # a hard backstop under the parent's RSS watch: address space, not resident memory
    limit = int(float(os.environ.get("BENCH_AS_LIMIT_GB", "14")) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    if threads:
        torch.set_num_threads(threads)
    emb, labels = _make_batch(batch)
    steps = _build(method)
    x = emb.clone().requires_grad_(True)

    def run(side: str) -> tuple[float, float, object]:
        x.grad = None
        t0 = time.perf_counter()
        loss, tuples = steps[side](x, labels)
        loss.backward()
        dt = time.perf_counter() - t0
        if not torch.isfinite(x.grad).all():
            raise RuntimeError(f"{side}: non-finite gradient")
        return dt, float(loss.detach()), tuples

    _emit({"event": "ready", "threads": torch.get_num_threads()})
    first: dict[str, tuple[float, float, object]] = {}
    for side in sides:
        first[side] = run(side)
        _emit({"event": "first_step", "side": side, "seconds": first[side][0]})
    slowest = max(v[0] for v in first.values())
    if slowest > 10.0:  # keep a case under a few minutes on a busy 2-core machine
        repeats, warmup = 3, 0
    for _ in range(warmup):
        for side in sides:
            run(side)
    times: dict[str, list[float]] = {s: [] for s in sides}
    for _ in range(repeats):
        for side in sides:  # interleaved: both sides see the same machine load
            times[side].append(run(side)[0])

    out: dict = {"event": "result", "repeats": repeats, "threads": torch.get_num_threads()}
    for side in sides:
        _, value, tuples = first[side]
        count, tuple_set = _tuple_sets(method, side, tuples)
        out[side] = {
            "ms": 1000 * statistics.median(times[side]),
            "ms_all": [round(1000 * t, 3) for t in times[side]],
            "loss": value,
            "n_tuples": count,
        }
        first[side] = (first[side][0], value, tuple_set)
    if len(sides) == 2 and method != "semi_hard":
        out["same_tuples"] = first["siamkit"][2] == first["pml"][2]
    if method == "semi_hard" and batch <= 128 and "siamkit" in sides:
        loss, tuples = steps["siamkit"](emb, labels)
        out["naive_check"] = _naive_semi_hard_check(emb, labels, float(loss), tuples)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    _emit(out)


# ============================================================================ parent


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_busy_seconds() -> float:
    """Busy CPU time of the whole machine (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return (sum(v[:8]) - idle) / _TICK


def _proc_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def run_case(method: str, batch: int, sides: list[str], args) -> dict:
    """Run one worker under the memory / time guard. Returns its result or the reason."""
    repeats = {128: args.repeats_small, 512: args.repeats_mid}.get(batch, args.repeats_large)
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", method, "--batch", str(batch),
        "--sides", ",".join(sides), "--repeats", str(repeats), "--warmup", str(args.warmup),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    events: list[dict] = []
    stderr: list[str] = []

    def read(stream, sink, parse):
        for line in stream:
            if parse:
                try:
                    sink.append(json.loads(line))
                    continue
                except json.JSONDecodeError:
                    pass
            stderr.append(line)

    threads = [
        threading.Thread(target=read, args=(proc.stdout, events, True), daemon=True),
        threading.Thread(target=read, args=(proc.stderr, stderr, False), daemon=True),
    ]
    for t in threads:
        t.start()
    start = time.monotonic()
    busy0, worker_cpu = _cpu_busy_seconds(), 0.0
    ready_at = None
    peak = 0.0
    reason = None
    while proc.poll() is None:
        time.sleep(0.05)
        peak = max(peak, _rss_gb(proc.pid))
        worker_cpu = _proc_cpu_seconds(proc.pid) or worker_cpu
        now = time.monotonic()
        if ready_at is None and any(e.get("event") == "ready" for e in events):
            ready_at = now
        done_first = {e["side"] for e in events if e.get("event") == "first_step"}
        if peak > args.max_rss_gb:
            reason = f"resident memory passed {args.max_rss_gb:g} GB (killed at {peak:.1f} GB)"
        elif ready_at is not None and "pml" in sides and "pml" not in done_first and now - ready_at > args.step_timeout:
            reason = f"one PML forward+backward step took more than {args.step_timeout:g} s (killed)"
        elif now - start > args.case_timeout:
            reason = f"case took more than {args.case_timeout:g} s (killed)"
        if reason:
            proc.kill()
            break
    proc.wait()
    wall = time.monotonic() - start
    # CPU used by everything else on the machine while this case ran, in cores
    # (this parent's polling is included but negligible)
    other = max(0.0, (_cpu_busy_seconds() - busy0 - worker_cpu) / wall) if wall > 0 else None
    for t in threads:
        t.join(timeout=5)
    result = next((e for e in events if e.get("event") == "result"), None)
    if result is not None:
        result["parent_peak_rss_gb"] = peak
        result["other_load_cores"] = other
        return result
    if reason is None:
        tail = "".join(stderr[-5:]).strip().splitlines()
        reason = f"worker exited with code {proc.returncode}: {tail[-1] if tail else 'no message'}"
        if "memory" in reason.lower() or "alloc" in reason.lower():
            reason = f"out of memory under the address-space limit: {tail[-1]}"
    firsts = {e["side"]: e["seconds"] for e in events if e.get("event") == "first_step"}
    return {
        "event": "failed", "reason": reason, "peak_rss_gb": peak, "first_step_seconds": firsts,
        "other_load_cores": other,
    }


def wait_for_idle(max_wait: float, threshold_cores: float, window: float = 5.0) -> float:
    """Wait until other processes use less than threshold_cores over a window; return the wait."""
    start = time.monotonic()
    while time.monotonic() - start < max_wait:
        b0 = _cpu_busy_seconds()
        time.sleep(window)
        if (_cpu_busy_seconds() - b0) / window < threshold_cores:
            break
    return time.monotonic() - start


def run_case_on_quiet_machine(method: str, batch: int, sides: list[str], args) -> dict:
    """run_case, repeated (after waiting for the machine to go quiet) while other processes
    took more than --max-other-load cores during it; keeps the quietest attempt."""
    best = None
    attempts = []
    for attempt in range(args.retries + 1):
        if attempt:
            waited = wait_for_idle(args.idle_wait, args.max_other_load)
            print(f"  [{method} {batch}] busy machine, waited {waited:.0f}s, retry {attempt}", file=sys.stderr, flush=True)
        r = run_case(method, batch, sides, args)
        load = r.get("other_load_cores")
        attempts.append(load)
        if best is None or (load is not None and load < (best.get("other_load_cores") or float("inf"))):
            best = r
        if load is not None and load <= args.max_other_load:
            break
        if r["event"] == "failed" and "memory" in r["reason"]:
            break  # a memory limit does not depend on the load
    best["other_load_attempts"] = attempts
    return best


def machine_info() -> dict:
    import torch

    try:
        import pytorch_metric_learning

        pml_version = pytorch_metric_learning.__version__
    except ImportError:  # pragma: no cover
        pml_version = None
    return {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "pytorch_metric_learning": pml_version,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(),
    }


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def build_rows(cases: list[dict]) -> list[dict]:
    rows = []
    for c in cases:
        r = c["result"]
        s, p = r.get("siamkit", {}), r.get("pml", {})
        row = {
            "method": c["method"],
            "batch": c["batch"],
            "siamkit_ms": s.get("ms"),
            "pml_ms": p.get("ms"),
            "speedup": (p["ms"] / s["ms"]) if s.get("ms") and p.get("ms") else None,
            "speedup_lower_bound": None,
            "siamkit_loss": s.get("loss"),
            "pml_loss": p.get("loss"),
            "max_abs_diff": None,
            "compared_with": None,
            "siamkit_tuples": s.get("n_tuples"),
            "pml_tuples": p.get("n_tuples"),
            "same_tuples": r.get("same_tuples"),
            "pml_skipped": c.get("pml_skipped"),
            "worker_peak_rss_gb": r.get("peak_rss_gb"),
            "other_load_cores": r.get("other_load_cores"),
            "siamkit_ms_all": s.get("ms_all"),
            "pml_ms_all": p.get("ms_all"),
        }
        if c["method"] != "semi_hard" and row["pml_loss"] is not None:
            row["max_abs_diff"] = abs(row["siamkit_loss"] - row["pml_loss"])
            row["compared_with"] = "pml"
        if "naive_check" in r:
            row["naive_check"] = r["naive_check"]
            row["max_abs_diff"] = r["naive_check"]["abs_diff_vs_naive"]
            row["compared_with"] = "naive reference"
        if row["pml_skipped"] and row["siamkit_ms"]:
            # PML ran for at least the step timeout without finishing one step
            row["speedup_lower_bound"] = c.get("pml_lower_bound_ms", 0) / row["siamkit_ms"] or None
        rows.append(row)
    return rows


def evaluate_goals(rows: list[dict]) -> list[dict]:
    out = []
    for method, goal in GOALS.items():
        for batch in GOAL_BATCHES:
            row = next(r for r in rows if r["method"] == method and r["batch"] == batch)
            sp, lb = row["speedup"], row["speedup_lower_bound"]
            if sp is not None:
                met, shown = sp >= goal, f"{sp:.1f}x"
            elif lb is not None:
                met, shown = lb >= goal, f">= {lb:.1f}x (PML did not finish)"
            else:
                met, shown = None, "not measured"
            out.append({"method": method, "batch": batch, "goal": goal, "measured": shown, "met": met})
    return out


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| method | batch | siamkit ms | PML ms | speedup (PML/siamkit) | siamkit loss | PML loss | max abs diff "
        "| other cores | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["speedup"] is not None:
            sp = f"{r['speedup']:.1f}x"
        elif r["speedup_lower_bound"]:
            sp = f">= {r['speedup_lower_bound']:.1f}x"
        else:
            sp = "n/a"
        notes = []
        if r["compared_with"] == "pml":
            notes.append("same tuples" if r["same_tuples"] else "tuples differ")
        elif r["compared_with"]:
            nc = r.get("naive_check", {})
            notes.append(
                "diff vs naive reference" + ("; same triplets" if nc.get("same_triplets_as_naive") else "; triplets differ")
            )
        if r["method"] == "semi_hard":
            notes.append(f"tuples {r['siamkit_tuples']} vs {_fmt(r['pml_tuples'], 'd')}")
        if r["method"] == "hard_pairs":
            notes.append(f"pairs {r['siamkit_tuples']}")
        if r["pml_skipped"]:
            notes.append(f"PML skipped: {r['pml_skipped']}")
        lines.append(
            f"| {r['method']} | {r['batch']} | {_fmt(r['siamkit_ms'], '.2f')} | {_fmt(r['pml_ms'], '.2f')} | {sp} | "
            f"{_fmt(r['siamkit_loss'], '.6f')} | {_fmt(r['pml_loss'], '.6f')} | {_fmt(r['max_abs_diff'], '.2e')} | "
            f"{_fmt(r['other_load_cores'], '.2f')} | {'; '.join(notes)} |"
        )
    return "\n".join(lines)


def goals_markdown(goals: list[dict]) -> str:
    lines = ["| goal | batch | measured | met |", "|---|---:|---|---|"]
    for g in goals:
        met = {True: "yes", False: "**no**", None: "unknown"}[g["met"]]
        lines.append(f"| {g['method']} >= {g['goal']:g}x | {g['batch']} | {g['measured']} | {met} |")
    return "\n".join(lines)


def write_doc(path: Path, report: dict, table: str, goals_md: str) -> None:
    m = report["machine"]
    busiest = max((r["other_load_cores"] or 0.0) for r in report["results"])
    section = "\n".join(
        [
            DOC_HEADING,
            "",
            f"Measured {m['date']} on {m['cpu']} ({m['cpu_count']} CPUs, torch {m['torch']} with "
            f"{', '.join(map(str, m['worker_threads']))} threads, pytorch-metric-learning {m['pytorch_metric_learning']}, "
            f"Python {m['python']}, {m['platform']}).",
            "",
            "One training step, forward + backward (mine, loss, `loss.backward()`), on L2-normalised random "
            "128-d embeddings, batch/4 classes x 4; median of several repeats after warm-up, the two "
            "libraries interleaved in one process per case, so the speedup ratio is measured under the same "
            "load (other jobs may share this 2-core machine: compare ratios, not absolute times; a case during "
            "which other processes took more than "
            f"{report['config']['max_other_load_cores']:g} cores is re-run up to {report['config']['retries']} "
            "times after waiting for quiet, keeping the quietest attempt; column `other cores`). "
            "Reproduce with `bench/bench_miners.py --out bench/results/miners.json` in a venv that has "
            "pytorch-metric-learning; raw numbers in `bench/results/miners.json`.",
            "",
            *(
                [
                    f"**Warning: the machine was busy during part of this run**: other processes used up to "
                    f"{busiest:.1f} of the {m['cpu_count']} cores during "
                    + ", ".join(
                        f"{r['method']} {r['batch']}" for r in report["results"]
                        if (r["other_load_cores"] or 0.0) > report["config"]["max_other_load_cores"]
                    )
                    + " (column `other cores`), even after the re-runs. "
                    "With torch's default "
                    "of one thread per core, every parallel kernel then waits for a descheduled thread, which "
                    "inflates both libraries' times by a roughly constant cost per kernel and pulls the ratios "
                    "towards the ratio of kernel counts. Re-run on an idle machine (or with `--threads 1`) "
                    "before drawing conclusions.",
                    "",
                ]
                if busiest > report["config"]["max_other_load_cores"]
                else []
            ),
            "- **batch_hard**: siamkit `BatchHardMiner` + `triplet_loss(margin=0.2, reduction=\"mean_nonzero\")` vs PML "
            "`BatchHardMiner` + `TripletMarginLoss(margin=0.2)` (AvgNonZeroReducer). Same loss expected.",
            "- **hard_pairs**: siamkit `HardPairMiner(pos_margin=0.2, neg_margin=0.8)` + "
            "`contrastive_loss(pos_margin=0, neg_margin=1, power=1, reduction=\"none\")`, reduced like PML "
            "(mean of non-zero positive-pair losses + mean of non-zero negative-pair losses) vs PML "
            "`PairMarginMiner(0.2, 0.8)` + `ContrastiveLoss(pos_margin=0, neg_margin=1)`. Same loss expected "
            "(PML's ordered pairs count each pair twice, which leaves the means unchanged).",
            "- **semi_hard**: siamkit `SemiHardMiner` + `triplet_loss(margin=0.2, reduction=\"mean_nonzero\")` vs PML "
            "`TripletMarginMiner(margin=0.2, type_of_triplets=\"semihard\")` + `TripletMarginLoss(margin=0.2)`. "
            "Different triplets by definition (PML: every semi-hard triplet within the margin; siamkit: one "
            "negative per positive pair, FaceNet / TF Addons rule), so the losses are not expected to agree; "
            "siamkit's value is checked against the naive reference (`tests/reference/naive.py`) at batch 128.",
            "",
            table,
            "",
            "Goals (forward + backward, at batch 512 and 2048): >= 3x faster than PML for batch-hard, "
            ">= 10x for semi-hard.",
            "",
            goals_md,
            "",
        ]
    )
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if DOC_HEADING in text:  # replace our own section, leave every other one alone
        start = text.index(DOC_HEADING)
        nxt = text.find("\n## ", start + len(DOC_HEADING))
        end = len(text) if nxt == -1 else nxt + 1
        text = text[:start] + section + ("\n" + text[end:] if end < len(text) else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "miners.json")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--batches", type=lambda s: tuple(int(v) for v in s.split(",")), default=BATCHES)
    ap.add_argument("--methods", type=lambda s: tuple(s.split(",")), default=METHODS)
    ap.add_argument("--repeats-small", type=int, default=30)
    ap.add_argument("--repeats-mid", type=int, default=15)
    ap.add_argument("--repeats-large", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--max-rss-gb", type=float, default=8.0)
    ap.add_argument("--step-timeout", type=float, default=120.0)
    ap.add_argument("--case-timeout", type=float, default=900.0)
    ap.add_argument(
        "--max-other-load", type=float, default=0.25,
        help="re-run a case when other processes used more than this many cores during it",
    )
    ap.add_argument("--retries", type=int, default=3, help="re-runs of a case on a busy machine")
    ap.add_argument("--idle-wait", type=float, default=120.0, help="seconds to wait for quiet before a re-run")
    ap.add_argument(
        "--threads", type=int, default=None,
        help="torch.set_num_threads in the workers (default: leave torch's default)",
    )
    # worker mode (internal)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--sides", default="siamkit,pml", help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        worker(args.worker, args.batch, args.sides.split(","), args.repeats, args.warmup, args.threads)
        return 0

    report = {"machine": machine_info(), "config": {
        "dim": DIM, "margin": MARGIN, "pos_margin": POS_MARGIN, "neg_margin": NEG_MARGIN,
        "labels": "batch/4 classes x 4", "embeddings": "L2-normalised standard normal",
        "timing": "median forward+backward, libraries interleaved, after warm-up",
        "max_rss_gb": args.max_rss_gb, "step_timeout_s": args.step_timeout,
        "threads": args.threads or "torch default",
        "max_other_load_cores": args.max_other_load, "retries": args.retries,
    }}
    cases = []
    t_all = time.monotonic()
    for method in args.methods:
        for batch in args.batches:
            t0 = time.monotonic()
            r = run_case_on_quiet_machine(method, batch, ["siamkit", "pml"], args)
            case = {"method": method, "batch": batch}
            if r["event"] == "failed":
                # retry siamkit alone; the PML side is what blew the limits
                case["pml_skipped"] = r["reason"]
                case["pml_failed_run"] = r
                if "step took more than" in r["reason"]:
                    case["pml_lower_bound_ms"] = 1000 * args.step_timeout
                r = run_case_on_quiet_machine(method, batch, ["siamkit"], args)
                if r["event"] == "failed":
                    raise SystemExit(f"siamkit {method} at batch {batch} failed: {r['reason']}")
            case["result"] = r
            cases.append(case)
            print(f"[{method} {batch}] done in {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)

    rows = build_rows(cases)
    goals = evaluate_goals(rows) if set(GOAL_BATCHES) <= set(args.batches) and set(GOALS) <= set(args.methods) else []
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["machine"]["worker_threads"] = sorted({c["result"].get("threads") for c in cases} - {None})
    report["total_seconds"] = round(time.monotonic() - t_all, 1)
    report["results"] = rows
    report["goals"] = goals
    report["cases_raw"] = cases

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    table = markdown_table(rows)
    print(table)
    if goals:
        print()
        print(goals_markdown(goals))
    if not args.no_doc:
        write_doc(args.doc, report, table, goals_markdown(goals) if goals else "(goals not evaluated)")
    # the loss checks: fail loudly if the libraries disagree where they must agree
    bad = [r for r in rows if r["max_abs_diff"] is not None and r["max_abs_diff"] > 1e-4]
    if bad:
        print(f"LOSS MISMATCH: {[(r['method'], r['batch'], r['max_abs_diff']) for r in bad]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
