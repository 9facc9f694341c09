"""Shared helpers for the benchmark scripts: machine info, JSON output, results table."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": _dt.date.today().isoformat(),
    }


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def replace_doc_section(heading: str, body: str) -> None:
    """Replace (or append) the section ``## heading`` of docs/benchmarks.md."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nEvery figure here is written by a script under `bench/`.\n"
    start_tag = f"## {heading}\n"
    section = start_tag + "\n" + body.strip() + "\n\n"
    if start_tag in text:
        i = text.index(start_tag)
        j = text.find("\n## ", i + len(start_tag))
        text = text[:i] + section + (text[j + 1 :] if j != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.write_text(text.rstrip() + "\n")


def machine_line(m: dict[str, Any]) -> str:
    return f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), {m['date']}."


def shrink_report(folder: Path, max_points: int = 200) -> None:
    """Keep a report folder small: thin the ROC / DET curves in metrics.json to at most
    ``max_points`` points each (the plots are drawn from the full curves) and show the
    data folder relative to the project checkout."""
    path = folder / "metrics.json"
    m = json.loads(path.read_text())
    for curve in ("roc", "det"):
        c = m.get("verification", {}).get(curve)
        if c:
            n = len(next(iter(c.values())))
            if n > max_points:
                keep = sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})
                m["verification"][curve] = {k: [v[i] for i in keep] for k, v in c.items()}
                m["verification"][curve + "_thinned_from"] = n
    data = m.get("split", {}).get("data")
    if data and data.startswith(str(SHARED_DATA.parent)):
        m["split"]["data"] = "shared/" + str(Path(data).relative_to(SHARED_DATA.parent))
    path.write_text(json.dumps(m, indent=1) + "\n")
    page = folder / "report.md"
    page.write_text(page.read_text().replace(str(SHARED_DATA.parent) + "/", "shared/"))


def mean_sd(vals: list[float | None], fmt: str = "{:.4f}") -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(statistics.mean(vals))} ± {fmt.format(statistics.stdev(vals))}"
