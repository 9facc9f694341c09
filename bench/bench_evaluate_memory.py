"""Peak memory of ``siamkit evaluate`` on synthetic image folders.

Each case writes a synthetic folder (one sub-folder per class, class = a bright block at a
class-specific place plus noise), saves an untrained conv4 model for its input size with
``save_model`` and runs ``python -m siamkit.cli evaluate MODEL --data FOLDER`` as a child
process; the peak resident set size is the child's ``ru_maxrss`` from ``os.wait4`` (the
child alone, not this script). ``--before REF`` also runs the same commands on the code of
git revision REF (checked out with ``git worktree add`` into a temporary folder, removed
afterwards) under an address-space limit (``--before-limit-gb``) so that a run that would
need more memory fails instead of swamping the machine.

Run: ``PYTHONPATH=src python bench/bench_evaluate_memory.py [--before 73b09d3]``; one case into the
existing results: ``--cases 2 --variants baseline --merge`` (the 100,000-image folder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _common import RESULTS, ROOT, machine, machine_line, replace_doc_section, write_json

# (name, classes, images per class, height, width)
CASES = [("720 images, 75x110", 60, 12, 75, 110), ("10,000 images, 28x28", 500, 20, 28, 28),
         ("100,000 images, 28x28", 5000, 20, 28, 28)]
GOAL_MB = 2048
NOTE = (
    "At 100,000 images: the retrieval metrics take a seeded subsample of `--retrieval-queries` (10,000) queries, each ranked "
    "against all 100,000 embeddings in chunks (all queries would be 1e10 distances), and the raw-pixel few-shot baseline "
    "converts only the rows each episode draws (a float copy of the set would be 313 MB). "
    "What remains at 75x110 is `embed_all`'s batch of 256 images through conv4 (64 channels at full resolution), the same for any number of images. The pairs (at most `--max-pairs`) are drawn without listing all N^2 of them (before: all 50M pairs of 10,000 images were listed, 4.9 GB) and the raw-pixel distances are computed 8M values at a time (before: every pair's pixel rows at once, 258,840 x 8,250 floats = 8.0 GB per side, so `--no-baseline` died too: it only skipped the plot)."
)


def make_folder(root: Path, classes: int, per_class: int, h: int, w: int, seed: int = 0) -> Path:
    """Write the synthetic folder ``root/cNNNN/i.png``."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"c{c:04d}"
        d.mkdir(parents=True, exist_ok=True)
        r0, c0 = (c * 7) % max(1, h - 8), (c * 13) % max(1, w - 8)
        for i in range(per_class):
            a = (rng.random((h, w)) * 60).astype(np.uint8)
            a[r0 : r0 + 8, c0 : c0 + 8] = 200 + rng.integers(0, 50)
            Image.fromarray(a, "L").save(d / f"{i}.png")
    return root


def save_conv4(path: Path, h: int, w: int) -> Path:
    """An untrained conv4 (64-d embeddings) for 1 x h x w images, saved with save_model."""
    import torch

    from siamkit import SiameseNetwork, create_encoder, save_model

    torch.manual_seed(0)
    spec = {"shape": [1, h, w], "channels": 1, "height": h, "width": w}
    return save_model(SiameseNetwork(create_encoder("conv4", in_channels=1, embedding_dim=64), input_spec=spec), path)


def peak_rss(cmd: list[str], src: Path, limit_gb: float | None = None, tmp: Path | None = None) -> dict[str, Any]:
    """Run ``cmd`` with ``PYTHONPATH=src``; its peak RSS (MB), wall time and exit status
    (its last lines, with the temporary folder ``tmp`` written as ``TMPDIR``)."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}

    def limit() -> None:
        if limit_gb is not None:
            cap = int(limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=limit)
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if tmp is not None:
        output = output.replace(str(tmp), "TMPDIR")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 1), "exit_code": proc.returncode,
            "tail": output.strip().splitlines()[-2:], "address_space_limit_gb": limit_gb, "load_avg": os.getloadavg()[0]}


def run_case(tmp: Path, case: tuple[str, int, int, int, int], src: Path, limit_gb: float | None = None,
             variants: tuple[str, ...] = ("baseline", "no_baseline")) -> dict[str, Any]:
    """The variants (with and without the raw-pixel baseline) of one case on the code in ``src``."""
    name, classes, per, h, w = case
    folder = tmp / f"data_{classes * per}_{h}x{w}"
    if not folder.exists():
        make_folder(folder, classes, per, h, w)
    if not (tmp / f"model_{h}x{w}").exists():
        save_conv4(tmp / f"model_{h}x{w}", h, w)
    row: dict[str, Any] = {"case": name, "images": classes * per, "classes": classes, "size": [h, w]}
    for variant, extra in (("baseline", []), ("no_baseline", ["--no-baseline"])):
        if variant not in variants:
            continue
        cmd = [sys.executable, "-m", "siamkit.cli", "evaluate", str(tmp / f"model_{h}x{w}"), "--data", str(folder),
               "--out", str(tmp / f"rep_{classes * per}_{h}x{w}_{variant}"), *extra]
        row[variant] = peak_rss(cmd, src, limit_gb, tmp)
        print(name, variant, row[variant], flush=True)
    return row


def _rev_src(rev: str, tmp: Path) -> Path:
    where = tmp / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev], check=True, capture_output=True)
    return where / "src"


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "not run"
    if r["exit_code"] == 0:
        load = f", load {r['load_avg']:.0f}" if "load_avg" in r else ""
        return f"{r['peak_rss_mb']:,.0f} MB ({r['wall_s']:.0f} s{load})"
    asked = re.search(r"allocate (\d+) bytes", " ".join(r["tail"]))
    what = f": one allocation of {int(asked.group(1)) / 2**30:.1f} GB" if asked else ""
    return f"failed at the {r['address_space_limit_gb']:g} GB limit after {r['peak_rss_mb']:,.0f} MB{what}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="a git revision to measure too (the code before the fix)")
    ap.add_argument("--before-limit-gb", type=float, default=6.0, help="address-space limit of the --before runs")
    ap.add_argument("--cases", type=int, nargs="+", default=None, help="indices of CASES to run (default: all)")
    ap.add_argument("--variants", nargs="+", default=["baseline", "no_baseline"], choices=["baseline", "no_baseline"])
    ap.add_argument("--merge", action="store_true", help="keep the rows of bench/results/evaluate_memory.json for the cases not run")
    ap.add_argument("--doc-only", action="store_true", help="rewrite the docs section from bench/results/evaluate_memory.json")
    args = ap.parse_args()
    if args.doc_only:
        write_doc(json.loads((RESULTS / "evaluate_memory.json").read_text()))
        return
    cases = [CASES[i] for i in args.cases] if args.cases is not None else CASES
    out: dict[str, Any] = {"machine": machine(), "goal_mb": GOAL_MB, "rows": []}
    if args.merge and (RESULTS / "evaluate_memory.json").is_file():
        old = json.loads((RESULTS / "evaluate_memory.json").read_text())
        out.update({k: v for k, v in old.items() if k in ("before", "before_rev")})
        run_names = {c[0] for c in cases}
        out["rows"] = [dict(r, measured=r.get("measured", old["machine"]["date"])) for r in old["rows"] if r["case"] not in run_names]
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_mem_"))
    try:
        for case in cases:
            out["rows"].append({**run_case(tmp, case, ROOT / "src", variants=tuple(args.variants)), "measured": out["machine"]["date"]})
        out["rows"].sort(key=lambda r: r["images"])
        if args.before:
            out["before_rev"] = args.before
            src = _rev_src(args.before, tmp)
            out["before"] = [run_case(tmp, case, src, args.before_limit_gb) for case in cases]
    finally:
        if args.before:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "before")], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    write_json("evaluate_memory", out)
    write_doc(out)


def write_doc(out: dict[str, Any]) -> None:
    """The docs section from the results (``--doc-only``: from bench/results/evaluate_memory.json)."""
    before = {r["case"]: r for r in out.get("before", [])}
    lines = [
        "`bench/bench_evaluate_memory.py`: peak resident memory of `siamkit evaluate MODEL --data FOLDER` "
        "(default `--max-pairs 500000`) on synthetic folders, an untrained conv4 (64-d) saved with "
        "`save_model`; the child process's `ru_maxrss` (`os.wait4`). Goal: under 2 GB."
        + (f" \"Before\" is revision `{out['before_rev']}` run under an address-space limit of "
           f"{out['before'][0]['baseline']['address_space_limit_gb']:g} GB." if out.get("before") else ""),
        "",
        "| folder | measured | pairs scored | with raw-pixel baseline | `--no-baseline` |" + (" before, with baseline | before, `--no-baseline` |" if before else ""),
        "|---|---|---|---|---|" + ("---|---|" if before else ""),
    ]
    for r in out["rows"]:
        n = r["images"]
        pairs = min(n * (n - 1) // 2, 500_000)
        row = (f"| {r['case']} ({r['classes']} classes) | {r.get('measured', '-')} | {pairs:,} | {_cell(r.get('baseline'))} | "
               f"{_cell(r.get('no_baseline'))} |")
        if before:
            b = before.get(r["case"], {})
            row += f" {_cell(b.get('baseline'))} | {_cell(b.get('no_baseline'))} |"
        lines.append(row)
    lines += ["", NOTE, "", machine_line(out["machine"])]
    replace_doc_section("Evaluation memory", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
