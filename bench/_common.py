"""Shared helpers for the benchmark scripts: machine info, JSON output, results table,
and the protocol shared by the face and signature benchmarks (raw pixels vs the tutorial
network vs our recipe on unseen identities, threshold calibrated on validation, recipe
ablation on validation: :class:`RecipeBench`)."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else ``platform.processor()``, maybe "")."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def machine() -> dict[str, Any]:
    """CPU, cores, torch threads, Python and torch versions, platform and today's date."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": _dt.date.today().isoformat(),
    }


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (indented, keys sorted).

    Args:
        name: the file's stem.
        data: the results.

    Returns:
        The file written.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def replace_doc_section(heading: str, body: str) -> None:
    """Replace (or append) the section ``## heading`` of docs/benchmarks.md.

    Args:
        heading: the section's title (without ``## ``).
        body: the section's Markdown.

    Returns:
        None.
    """
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
    """One sentence naming the machine of :func:`machine`."""
    return f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), {m['date']}."


def shrink_report(folder: Path, max_points: int = 200) -> None:
    """Keep a report folder small: thin the ROC / DET curves in metrics.json to at most
    ``max_points`` points each (the plots are drawn from the full curves) and show the
    data folder relative to the project checkout.

    Args:
        folder: a report folder of ``siamkit.evaluation.report.write_report``.
        max_points: points kept per curve.

    Returns:
        None.
    """
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
    """``mean ± sd`` of the values that are not None (one value: itself; none: "n/a").

    Args:
        vals: the values.
        fmt: format of each number.

    Returns:
        The text.
    """
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(statistics.mean(vals))} ± {fmt.format(statistics.stdev(vals))}"


# ----------------------------------------------------------------------------- faces and signatures


def threads_for_load() -> float:
    """Give torch 2 threads on an idle machine, 1 on a busy one; returns the 1-minute load
    average at the start."""
    load = os.getloadavg()[0]
    torch.set_num_threads(2 if load < 1.0 else 1)
    return load


def raw_embed(x: torch.Tensor) -> torch.Tensor:
    """The raw-pixel baseline's "embedding": the image in [0, 1], flattened."""
    return x.float().div(255).flatten(1)


def tutorial_recipe(seed: int, *, epochs: int, steps_per_epoch: int, **changes: Any) -> Any:
    """The classic tutorial Siamese network (e.g. harveyslash's PyTorch AT&T tutorial):
    three small conv blocks, a 5-d embedding without normalisation, contrastive loss
    with margin 2 on random balanced pairs, Adam 5e-4, no augmentation.

    Args:
        seed: training seed.
        epochs: epochs.
        steps_per_epoch: batches per epoch.
        **changes: other ``TrainConfig`` fields.

    Returns:
        The ``TrainConfig``.
    """
    from siamkit.training.config import TrainConfig

    return TrainConfig(
        precision="fp32",  # the recorded figures were measured in fp32 (the library default became "auto")
        encoder="conv4", encoder_kwargs={"width": 8, "depth": 3, "grid": 4}, embedding_dim=5, normalize=False,
        loss="contrastive", margin=2.0, batching="pairs", batch_size=128, lr=5e-4, schedule="none",
        epochs=epochs, steps_per_epoch=steps_per_epoch,
        val_fraction=0.0, patience=None, seed=seed, progress=False, **changes,
    )


def pair_distances(e: torch.Tensor, a: torch.Tensor, b: torch.Tensor, network: Any) -> torch.Tensor:
    """Distances of the pairs (a[i], b[i]) of embeddings: Euclidean without a network
    (raw pixels), else the network's own distance (its pair head when it has one).

    Args:
        e: (N, D) embeddings.
        a: (P,) first index of each pair.
        b: (P,) second index.
        network: the ``SiameseNetwork`` that made ``e``, or None.

    Returns:
        (P,) distances.
    """
    from siamkit.inference import pair_distances_of_embeddings

    return (e[a] - e[b]).norm(dim=1) if network is None else pair_distances_of_embeddings(network, e, a, b)


def calibrated_verification(
    val: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *, fars: Sequence[float],
    negative: str = "impostor",
) -> tuple[dict[str, Any], Any]:
    """Calibrate the EER threshold on validation pairs, report on test pairs.

    Args:
        val: (distances, same) of the validation pairs.
        test: (distances, same) of the test pairs.
        fars: FARs of the test TAR@FAR.
        negative: the name of the different pairs under "pairs" ("impostor", "forgery").

    Returns:
        ``(numbers, calibrator)``: ROC AUC, EER, TAR@FAR, the threshold and accuracy /
        FAR / FRR at it, validation ROC AUC / EER, pair counts; and the ``Calibrator``.
    """
    from siamkit.calibration import Calibrator
    from siamkit.evaluation import confusion_at_threshold, verification_report

    (d_val, s_val), (d_test, s_test) = val, test
    cal = Calibrator(threshold_method="eer").fit(d_val.numpy(), s_val.numpy(), split_name="validation")
    cal.check_not_fitted_on("test")
    rep = verification_report(d_test.numpy(), s_test.numpy(), fars=fars, include_curves=False)
    conf = confusion_at_threshold(d_test.numpy(), s_test.numpy(), cal.threshold_)
    val_rep = verification_report(d_val.numpy(), s_val.numpy(), fars=(1e-2,), include_curves=False)
    return {
        "roc_auc": rep["roc_auc"],
        "eer": rep["eer"],
        "tar_at_far": {f"{t['far']:g}": (t["tar"] if t["resolvable"] else None) for t in rep["tar_at_far"]},
        "threshold": cal.threshold_,
        "accuracy_at_threshold": conf.accuracy,
        "far_at_threshold": conf.fp / max(1, conf.fp + conf.tn),
        "frr_at_threshold": conf.fn / max(1, conf.fn + conf.tp),
        "val_roc_auc": val_rep["roc_auc"],
        "val_eer": val_rep["eer"],
        "pairs": {"genuine": rep["num_positive"], negative: rep["num_negative"]},
    }, cal


def val_verification(d: torch.Tensor, s: torch.Tensor) -> dict[str, float]:
    """Validation ROC AUC and EER of pairs (what the ablation ranks recipes by).

    Args:
        d: (P,) distances.
        s: (P,) bool, same.

    Returns:
        ``{"val_roc_auc", "val_eer"}``.
    """
    from siamkit.evaluation import verification_report

    rep = verification_report(d.numpy(), s.numpy(), fars=(1e-2,), include_curves=False)
    return {"val_roc_auc": rep["roc_auc"], "val_eer": rep["eer"]}


def ablation_row(name: str, per: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """One ablation row: the per-seed numbers and their means.

    Args:
        name: the recipe.
        per: one dict per split seed (with ``seed`` and ``keys``).
        keys: the numbers to average.

    Returns:
        ``{"recipe", "per_seed", <key>: mean, ...}``.
    """
    return {"recipe": name, "per_seed": per, **{k: statistics.mean(p[k] for p in per) for k in keys}}


def recorded_row(name: str, keys: Sequence[str], *per: tuple[Any, ...]) -> dict[str, Any]:
    """An ablation row from recorded tuples ``(seed, *values of keys)``.

    Args:
        name: the recipe.
        keys: the names of the values after the seed.
        *per: one tuple per seed.

    Returns:
        The row, as :func:`ablation_row`.
    """
    return ablation_row(name, [dict(zip(("seed", *keys), p)) for p in per], keys)


def run_ablation_rows(
    recipes: dict[str, Any], measure: Callable[[Any, int], dict[str, Any]], seeds: Sequence[int], keys: Sequence[str]
) -> list[dict[str, Any]]:
    """Measure every recipe on every split seed (printing each row).

    Args:
        recipes: name -> what ``measure`` takes.
        measure: ``(recipe, seed) -> {"seed", <key>: value, ...}``.
        seeds: split seeds.
        keys: the numbers to average.

    Returns:
        One :func:`ablation_row` per recipe.
    """
    rows = []
    for name, recipe in recipes.items():
        row = ablation_row(name, [measure(recipe, seed) for seed in seeds], keys)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "per_seed"}), flush=True)
    return rows


METHODS = ("raw pixels", "tutorial", "ours")


def summarise_runs(runs: list[dict[str, Any]], keys: Sequence[str], fars: Sequence[float]) -> dict[str, Any]:
    """Per method, the list over split seeds of each number (for mean ± sd).

    Args:
        runs: the per-seed rows (``row[method][key]``).
        keys: the numbers to collect.
        fars: the TAR@FAR points to collect (as ``tar_at_far_<far>``).

    Returns:
        ``{method: {key: [value per seed], ...}}`` with ``train_seconds`` too.
    """
    out: dict[str, Any] = {}
    for m in METHODS:
        rs = [r[m] for r in runs]
        s = {k: [r[k] for r in rs] for k in keys}
        for f in fars:
            s[f"tar_at_far_{f:g}"] = [r["tar_at_far"][f"{f:g}"] for r in rs]
        s["train_seconds"] = [r.get("train_seconds", 0.0) for r in rs]
        out[m] = s
    return out


def run_header(out: dict[str, Any], cmd: str) -> str:
    """The first line of a section: command, machine, load and wall time.

    Args:
        out: the results (``machine``, ``load_start``, ``wall_seconds``).
        cmd: the command line.

    Returns:
        The Markdown line.
    """
    return (f"`{cmd}`. {machine_line(out['machine'])} Load average at start {out['load_start']:.1f} "
            f"(the machine was shared: times are wall-clock under that load); total wall time {out['wall_seconds'] / 60:.1f} min.")


def method_row(label: str, method: str, v: dict[str, list[Any]], extra: Sequence[str] = ()) -> str:
    """A row of the methods table: AUC, EER, TAR@FAR 1e-2 / 1e-3, accuracy and FAR / FRR
    at the validation threshold, the ``extra`` cells, train time (mean ± sd).

    Args:
        label: the method's name in the table.
        method: its key (raw pixels have no train time).
        v: its lists of :func:`summarise_runs`.
        extra: more cells before the train time.

    Returns:
        The Markdown row.
    """
    t = "-" if method == "raw pixels" else mean_sd(v["train_seconds"], "{:.0f}") + " s"
    return (
        f"| {label} | {mean_sd(v['roc_auc'])} | {mean_sd(v['eer'])} | {mean_sd(v['tar_at_far_0.01'])} | "
        f"{mean_sd(v['tar_at_far_0.001'])} | {mean_sd(v['accuracy_at_threshold'])} | "
        f"{mean_sd(v['far_at_threshold'], '{:.3f}')} / {mean_sd(v['frr_at_threshold'], '{:.3f}')} | "
        + "".join(f"{c} | " for c in extra) + f"{t} |"
    )


def goal_lines(goals: Sequence[tuple[str, float, bool]]) -> list[str]:
    """The goal table: one row per (goal, measured mean, met).

    Args:
        goals: (the goal in words, the measured value, whether it is met).

    Returns:
        Markdown lines.
    """
    return ["| goal | measured (mean) | met |", "|---|---|---|",
            *(f"| {g} | {v:.4f} | {'yes' if met else '**no**'} |" for g, v, met in goals)]


def per_seed_line(runs: list[dict[str, Any]], cols: Sequence[tuple[str, str, str]]) -> str:
    """Our recipe's numbers on each split seed, in one line.

    Args:
        runs: the per-seed rows.
        cols: (title, key, format) of each number.

    Returns:
        "Per seed (ours: A / B): seed 0: a / b, seed 1: ...".
    """
    head = " / ".join(t for t, _, _ in cols)
    return f"Per seed (ours: {head}): " + ", ".join(
        f"seed {r['seed']}: " + " / ".join(f.format(r["ours"][k]) for _, k, f in cols) for r in runs)


def closing_lines(name: str, gap_note: str, recipe_note: str, first_seed: int) -> list[str]:
    """The notes after the goal table: why the gap, the recipe, where the report is.

    Args:
        name: the benchmark (its report folder).
        gap_note: why the goals are out of reach.
        recipe_note: the recipe in words.
        first_seed: the split seed of the report.

    Returns:
        Markdown lines.
    """
    return [gap_note, "", "Recipe (`ours_config` in the script): " + recipe_note, "",
            f"Report of split seed {first_seed} (plots, calibration): `bench/results/reports/{name}/report.md`."]


def ablation_section(
    abl: dict[str, Any] | None, intro: Callable[[str], str], cols: Sequence[tuple[str, str, str]]
) -> list[str]:
    """The ablation paragraph and table (per seed: each of ``cols``, then train time) and
    its findings; nothing without an ablation.

    Args:
        abl: ``{"rows": [...], "note": str, "findings": str}``, or None.
        intro: the paragraph, given the ablation's note.
        cols: (title, key, format) of the columns between the seeds and the train time.

    Returns:
        Markdown lines.
    """
    if not abl:
        return []
    titles = [t for t, _, _ in cols]
    lines = ["", intro(abl["note"]), "", "| recipe | split seeds | " + " | ".join(titles) + " | train time |",
             "|---|---|" + "---|" * len(cols) + "---|"]
    for r in abl["rows"]:
        per = r["per_seed"]
        cells = [" / ".join(f.format(p[k]) for p in per) for _, k, f in (*cols, ("", "train_seconds", "{:.0f}"))]
        lines.append(f"| {r['recipe']} | {' / '.join(str(p['seed']) for p in per)} | " + " | ".join(cells) + " s |")
    if abl.get("findings"):
        lines += ["", abl["findings"]]
    return lines


def write_ours_report(
    report_dir: Path, r: dict[str, Any], raw: dict[str, Any], *, title: str, split: dict[str, Any],
    labels: torch.Tensor, class_names: list[str], extra: dict[str, Any],
) -> None:
    """The report folder of our recipe on a split (raw pixels drawn on its ROC), kept small.

    Args:
        report_dir: the folder.
        r: our numbers, with ``_cache`` = (test distances, same, embeddings, calibrator).
        raw: the raw-pixel numbers on the same pairs (with ``_cache``).
        title: the report's title.
        split: where the pairs came from.
        labels: (N,) class of each test embedding, for the map.
        class_names: the names of those classes.
        extra: more numbers to list.

    Returns:
        None.
    """
    from siamkit.evaluation.report import write_report

    d, s, e, cal = r["_cache"]
    write_report(
        report_dir, d, s, title=title, split=split, calibration=cal.to_dict(), embeddings=e, labels=labels,
        class_names=class_names, extra=extra, baseline=("raw pixels", raw["_cache"][0]),
    )
    shrink_report(report_dir)


def drop_caches(row: dict[str, Any]) -> dict[str, Any]:
    """Remove the ``_cache`` (tensors for the report) of every method of a row."""
    for k in METHODS:
        row[k].pop("_cache")
    return row


@dataclass
class RecipeBench:
    """The command line of a raw pixels / tutorial / ours benchmark over split seeds.

    ``--doc-only`` re-renders the docs from the results file; a run measures every split
    seed, keeps the last ``--ablation`` table (or the recorded development runs) when
    ``--ablation`` is not given, and writes ``bench/results/<name>.json`` and the docs
    section (nothing with ``--quick``).
    """

    name: str  # results file and script: bench/bench_<name>.py
    section: str  # docs heading
    description: str  # --help
    unit: str  # "identities", "writers"
    quick_help: str
    load: Callable[[], Any]
    run_split: Callable[[int, Any, bool, Path | None], dict[str, Any]]
    run_ablation: Callable[[Any, bool], list[dict[str, Any]]]
    summary: Callable[[list[dict[str, Any]]], dict[str, Any]]
    doc_body: Callable[[dict[str, Any], str], str]
    recorded_rows: list[dict[str, Any]]
    recorded_note: str
    findings: str
    image_size: tuple[int, int]
    load_start: float

    def main(self) -> None:
        """Parse the command line and run."""
        ap = argparse.ArgumentParser(description=self.description)
        ap.add_argument("--seeds", type=int, default=3, help="split seeds 0..N-1")
        ap.add_argument("--ablation", action="store_true", help=f"also run the recipe ablation on validation {self.unit}")
        ap.add_argument("--quick", action="store_true", help=self.quick_help)
        ap.add_argument("--doc-only", action="store_true",
                        help=f"rewrite the docs section from bench/results/{self.name}.json (no training)")
        args = ap.parse_args()
        if args.doc_only:
            self.rewrite_doc()
        else:
            self.run(args.seeds, args.ablation, args.quick)

    def rewrite_doc(self) -> None:
        """Re-render the docs section from the results file (no training)."""
        out = json.loads((RESULTS / f"{self.name}.json").read_text())
        if out.get("ablation", {}).get("note") == self.recorded_note:
            out["ablation"]["rows"] = self.recorded_rows
        if out.get("ablation"):
            out["ablation"]["findings"] = self.findings
        write_json(self.name, out)
        replace_doc_section(self.section, self.doc_body(out, out.get("command", f"python bench/bench_{self.name}.py")))

    def run(self, n_seeds: int, ablation: bool, quick: bool) -> None:
        """Measure, print, and (unless ``quick``) write the results and the docs.

        Args:
            n_seeds: split seeds 0..n-1 (1 seed with ``quick``).
            ablation: also run the recipe ablation.
            quick: smoke run, nothing written.

        Returns:
            None.
        """
        t_start = time.perf_counter()
        m = machine()
        data = self.load()
        seeds = [0] if quick else list(range(n_seeds))
        report_dir = None if quick else RESULTS / "reports" / self.name
        runs = [self.run_split(s, data, quick, report_dir if i == 0 else None) for i, s in enumerate(seeds)]
        out: dict[str, Any] = {"machine": m, "load_start": self.load_start, "image_size": list(self.image_size),
                               "runs": runs, "summary": self.summary(runs)}
        prev_path = RESULTS / f"{self.name}.json"
        if ablation:
            out["ablation"] = {"rows": self.run_ablation(data, quick), "note": f"measured {m['date']} with --ablation",
                               "findings": self.findings}
        elif not quick:
            prev = json.loads(prev_path.read_text()).get("ablation") if prev_path.exists() else None
            if prev and prev.get("note") == self.recorded_note:
                prev = None  # the recorded development runs: take the current list
            # carried over from the last --ablation run, else the development runs recorded in the script
            out["ablation"] = prev or {"rows": self.recorded_rows, "note": self.recorded_note}
            out["ablation"]["findings"] = self.findings
        out["wall_seconds"] = time.perf_counter() - t_start
        cmd = f"python bench/bench_{self.name}.py" + (f" --seeds {n_seeds}" if n_seeds != 3 else "") + (
            " --ablation" if ablation else "")
        out["command"] = cmd
        body = self.doc_body(out, cmd)
        print(body)
        if quick:
            return
        write_json(self.name, out)
        replace_doc_section(self.section, body)
