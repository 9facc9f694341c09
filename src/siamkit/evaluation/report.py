"""Evaluation reports: one folder with a Markdown page, PNG plots and a JSON of every number.

The page leads with the numbers a person needs in a minute (ROC AUC, EER, TAR at fixed
FAR, accuracy at the calibrated threshold) and says which split every number and the
threshold came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import write_text_atomic
from .curve import to_numpy
from .plots import plot_distance_histogram, plot_embedding_map, plot_roc, pyplot, save_figure
from .verification import confusion_at_threshold, det_curve, verification_report

__all__ = ["write_report"]


def _plot_det(d: np.ndarray, s: np.ndarray, path: Path) -> None:
    plt = pyplot()
    from scipy.stats import norm

    fpr, fnr, _ = det_curve(d, s)
    keep = (fpr > 0) & (fnr > 0) & (fpr < 1) & (fnr < 1)
    fig, ax = plt.subplots(figsize=(5, 5))
    if keep.any():
        ax.plot(norm.ppf(fpr[keep]), norm.ppf(fnr[keep]))
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5]
    ax.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set(xlabel="false accept rate", ylabel="false reject rate", title="DET curve (normal deviate scale)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_confusion(conf: Any, path: Path) -> None:
    plt = pyplot()
    m = np.array([[conf.tp, conf.fn], [conf.fp, conf.tn]])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(m, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{m[i, j]:,}", ha="center", va="center", color="black", fontsize=12)
    ax.set_xticks([0, 1], ["said same", "said different"])
    ax.set_yticks([0, 1], ["truly same", "truly different"])
    ax.set_title(f"at threshold {conf.threshold:.4g}")
    fig.tight_layout()
    save_figure(fig, path)


def write_report(
    out_dir: str | Path,
    distances: torch.Tensor | np.ndarray,
    same: torch.Tensor | np.ndarray,
    *,
    title: str,
    split: dict[str, Any],
    calibration: dict[str, Any] | None = None,
    threshold: float | None = None,
    embeddings: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    class_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    baseline: tuple[str, torch.Tensor | np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write ``report.md``, ``metrics.json`` and the plots into ``out_dir``.

    Args:
        distances, same: the evaluated pairs (lower = closer; True = same identity).
        title: the page title.
        split: where the pairs came from (data path, protocol, seed...), shown and saved.
        calibration: the model's calibration (``Calibrator.to_dict()``), if any; its
            threshold is drawn and the confusion is reported at it.
        threshold: a threshold to use when there is no calibration (e.g. the EER point,
            marked as fitted on the test split itself).
        embeddings, labels, class_names: for the 2-D map (at most 2,000 points are drawn).
        extra: more numbers to save and list (e.g. one-shot accuracy, retrieval).
        baseline: (name, distances on the same pairs) drawn on the ROC for comparison.

    Returns:
        the metrics dictionary written to ``metrics.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d, s = to_numpy(distances), to_numpy(same).astype(bool)
    rep = verification_report(d, s)
    metrics: dict[str, Any] = {"title": title, "split": split, "verification": rep, **(extra or {})}
    thr_source = None
    if calibration is not None:
        threshold = float(calibration["threshold"])
        thr_source = f"calibration fitted on '{calibration.get('fitted_on')}' ({calibration.get('method')})"
        metrics["calibration"] = calibration
    elif threshold is None:
        threshold = float(rep["eer_threshold"])
        thr_source = "EER point of THIS split (no calibration: optimistic)"
    else:
        thr_source = "given"
    conf = confusion_at_threshold(d, s, threshold)
    metrics["at_threshold"] = {"threshold": threshold, "source": thr_source, **conf.__dict__}

    curves = {"model": (d, s)}
    if baseline is not None:
        curves[baseline[0]] = (to_numpy(baseline[1]), s)
        metrics["baseline"] = {"name": baseline[0], **verification_report(to_numpy(baseline[1]), s, include_curves=False)}
    plot_roc(curves, out / "roc.png", title=title)
    _plot_det(d, s, out / "det.png")
    plot_distance_histogram(d, s, out / "distances.png", threshold=threshold, title="genuine vs impostor distances")
    _plot_confusion(conf, out / "confusion.png")
    plots = ["roc.png", "det.png", "distances.png", "confusion.png"]
    if embeddings is not None and labels is not None:
        e, y = embeddings, labels
        if len(e) > 2000:
            keep = torch.randperm(len(e), generator=torch.Generator().manual_seed(0))[:2000]
            e, y = e[keep], y[keep]
        uniq, y = torch.unique(y, return_inverse=True)
        names = [class_names[int(c)] for c in uniq] if class_names else None
        plot_embedding_map(e, y, out / "embeddings.png", class_names=names if names and len(names) <= 20 else None)
        plots.append("embeddings.png")
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=float) + "\n")
    write_text_atomic(out / "report.md", _page(metrics, plots))
    return metrics


def _fmt(x: Any) -> str:
    return "n/a" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))


def _page(m: dict[str, Any], plots: list[str]) -> str:
    v, t = m["verification"], m["at_threshold"]
    lines = [
        f"# {m['title']}",
        "",
        "| | |",
        "|---|---|",
        f"| ROC AUC | **{v['roc_auc']:.4f}** |",
        f"| equal error rate | **{v['eer']:.4f}** (threshold {v['eer_threshold']:.4g}) |",
    ]
    for row in v["tar_at_far"]:
        val = f"{row['tar']:.4f}" if row["resolvable"] else f"not resolvable ({row['reason']})"
        lines.append(f"| TAR at FAR {row['far']:g} | {val} |")
    lines += [
        f"| accuracy at threshold {t['threshold']:.4g} | {t['accuracy']:.4f} (precision {t['precision']:.4f}, recall {t['recall']:.4f}) |",
        f"| threshold from | {t['source']} |",
        f"| pairs | {v['num_positive']:,} genuine, {v['num_negative']:,} impostor |",
    ]
    if "baseline" in m:
        b = m["baseline"]
        lines.append(f"| baseline ({b['name']}) | ROC AUC {b['roc_auc']:.4f}, EER {b['eer']:.4f} |")
    for key, val in m.items():
        if key in ("title", "split", "verification", "at_threshold", "calibration", "baseline"):
            continue
        if isinstance(val, dict):
            lines.append(f"| {key} | " + ", ".join(f"{k} {_fmt(x)}" for k, x in val.items() if not isinstance(x, (list, dict))) + " |")
        elif not isinstance(val, list):
            lines.append(f"| {key} | {_fmt(val)} |")
    lines += ["", "## Where the numbers come from", "", "```", json.dumps(m["split"], indent=2, default=str), "```", ""]
    lines += [f"![{p[:-4]}]({p})" for p in plots]
    lines += ["", "Every number, with the ROC and DET curves: `metrics.json`.", ""]
    return "\n".join(lines)
