"""``siamkit demo``: one-shot recognition of Omniglot characters the network never saw.

Trains on the 30 background alphabets of the compact Omniglot shipped in the package
(:func:`siamkit.data.load_omniglot_compact`; a few background characters are held out to
calibrate the decision threshold) for a fixed number of steps (about a minute on 2 CPU
cores; or a wall-clock budget), then measures on the 20 evaluation alphabets, next to raw
pixels on the same episodes and pairs: 20-way and 5-way one-shot accuracy (random
episodes), Lake et al.'s official 20 runs, pair ROC AUC and EER. The report folder also
shows one worked 20-way example and a small gallery tour (:mod:`.tour`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch

from .._atomic import write_json_atomic, write_text_atomic
from ..calibration import Calibrator
from ..data import compact_official_runs, load_omniglot_compact, split_by_class
from ..errors import DataError
from ..evaluation.few_shot import n_way_k_shot_accuracy, official_one_shot_accuracy
from ..evaluation.metrics import labelled_pair_distances, verification_metrics
from ..evaluation.plots import plot_distance_histogram, plot_embedding_map, plot_roc
from ..evaluation.verification import confusion_at_threshold
from ..inference import embed_all
from ..io import save_model
from ..training import TrainConfig, fit
from .tour import gallery_tour, plot_worked_example

__all__ = ["DEFAULT_STEPS", "omniglot_demo_config", "steps_for_minutes", "evaluate_omniglot", "run_omniglot_demo"]

#: the default budget: steps measured to take about a minute on 2 CPU cores (see
#: docs/benchmarks.md); a fixed count, so a seed gives the same network on any machine
DEFAULT_STEPS = 1000
CALIBRATION_FRACTION = 0.1  # background characters held out for the threshold
EPISODES = 1000
PAIR_DRAWERS = 6  # verification pairs: all pairs among drawers 1-6's drawings (subsampled)
MAX_PAIRS = 200_000


def omniglot_demo_config(*, steps: int = DEFAULT_STEPS, seed: int = 0, progress: bool | None = None) -> TrainConfig:
    """The demo's recipe (chosen on held-out background alphabets; docs/benchmarks.md).

    Args:
        steps: training steps (batches).
        seed: seeds training.
        progress: show a progress bar (None = when stderr is a terminal).

    Returns:
        The :class:`TrainConfig` (one epoch of ``steps`` steps, cosine annealed per step).
    """
    return TrainConfig(
        encoder="conv4",
        encoder_kwargs={"depth": 3, "grid": 3},  # keeps a 3x3 map of where the strokes are
        embedding_dim=128,
        normalize=True,
        distance="euclidean",
        loss="triplet",
        miner="semi_hard",
        margin=0.2,
        batch_size=128,
        m_per_class=4,
        epochs=1,
        steps_per_epoch=steps,
        lr=2e-3,
        schedule="cosine",
        augment=True,
        rotation=10.0,
        shear=0.1,
        scale=(0.9, 1.1),
        translate=0.07,
        fill=1.0,
        val_fraction=0.0,
        patience=None,
        precision="auto",
        health=False,
        seed=seed,
        progress=progress,
    )


def steps_for_minutes(x: torch.Tensor, y: torch.Tensor, config: TrainConfig, minutes: float, *, probe_steps: int = 10) -> int:
    """How many steps of ``config`` fit in ``minutes`` of wall time on this machine.

    Times a second short probe run (the first pays for start-up) and subtracts what the
    probe itself took from the budget.

    Args:
        x: training images.
        y: their labels.
        config: the recipe.
        minutes: the budget, probe included.
        probe_steps: steps per probe epoch.

    Returns:
        The steps (at least 1).
    """
    if not (minutes > 0 and math.isfinite(minutes)):
        raise DataError(f"minutes must be a positive number, got {minutes}")
    t0 = time.perf_counter()
    secs: list[float] = []
    probe = dataclasses.replace(config, epochs=2, steps_per_epoch=probe_steps, schedule="none", progress=False)
    fit(x, y, probe, callbacks=[lambda rec: secs.append(float(rec["seconds"]))])
    left = minutes * 60.0 - (time.perf_counter() - t0)
    return max(1, int(left / (secs[-1] / probe_steps)))


def evaluate_omniglot(
    embeddings: torch.Tensor, labels: torch.Tensor, drawers: torch.Tensor, embed_fn: Any, *, seed: int = 0
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """The demo's numbers for embeddings of the evaluation drawings (a model's, or raw pixels).

    Args:
        embeddings: (N, D), one row per evaluation drawing.
        labels: (N,) character of each drawing.
        drawers: (N,) drawer of each drawing; pairs are drawn among drawers 1..PAIR_DRAWERS.
        embed_fn: uint8 images -> (B, D), for the official runs.
        seed: seeds the episodes (the same for the model and raw pixels).

    Shapes:
        embeddings (N, D), labels (N,), drawers (N,) -> distances (P,), same (P,).

    Returns:
        ``(metrics, distances, same)``: ``roc_auc``, ``eer``, ``one_shot_accuracy``
        (20-way) and ``one_shot_ci95``, ``five_way_accuracy`` and its ``five_way_ci95``,
        ``official_20way``; the scored pairs (for plots).
    """
    few = drawers <= PAIR_DRAWERS  # all 86.8M pairs of 13,180 drawings would take long to list
    d, same = labelled_pair_distances(embeddings[few], labels[few], max_pairs=MAX_PAIRS, seed=seed)
    v = verification_metrics(d, same)
    a20, c20 = n_way_k_shot_accuracy(embeddings, labels, n_way=20, episodes=EPISODES, seed=seed)
    a5, c5 = n_way_k_shot_accuracy(embeddings, labels, n_way=5, episodes=EPISODES, seed=seed)
    off = official_one_shot_accuracy(embed_fn, compact_official_runs())
    m = {"roc_auc": v.roc_auc, "eer": v.eer, "one_shot_accuracy": a20, "one_shot_ci95": c20,
         "five_way_accuracy": a5, "five_way_ci95": c5, "official_20way": off.accuracy}
    return m, d, same


def raw_pixels(images: torch.Tensor) -> torch.Tensor:
    """The baseline's embedding: pixels in [0, 1], flattened.

    Shapes: (N, C, H, W) uint8 -> (N, C*H*W) float.
    """
    return images.float().div(255).flatten(1)


def _train(steps: int | None, minutes: float | None, seed: int, progress: bool | None) -> dict[str, Any]:
    """Load, hold out calibration characters, train; returns what the report needs."""
    bg = load_omniglot_compact("background")
    tr_idx, cal_idx = split_by_class(bg.labels, CALIBRATION_FRACTION, seed)
    x, y = bg.images[tr_idx], bg.labels[tr_idx]
    config = omniglot_demo_config(steps=steps or DEFAULT_STEPS, seed=seed, progress=progress)
    t0 = time.perf_counter()
    if minutes is not None:
        config = dataclasses.replace(config, steps_per_epoch=steps_for_minutes(x, y, config, minutes))
    result = fit(x, y, config)
    return {"net": result.network, "config": config, "train_seconds": time.perf_counter() - t0, "background": bg,
            "cal_x": bg.images[cal_idx], "cal_y": bg.labels[cal_idx], "train_classes": int(torch.unique(y).numel())}


def run_omniglot_demo(
    out: str | Path,
    *,
    steps: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train on the background alphabets, report on the evaluation alphabets, write the folder.

    Writes ``metrics.json``, ``README.md``, ``roc.png``, ``distances.png``,
    ``embeddings.png``, ``example.png`` (one worked 20-way episode) and the trained,
    calibrated ``model/`` into ``out``.

    Args:
        out: the report folder (created).
        steps: training steps (None = :data:`DEFAULT_STEPS`, unless ``minutes`` is given).
        minutes: a wall-clock budget instead (the steps are measured on this machine).
        seed: seeds training, the calibration split and the episodes.
        progress: show a progress bar (None = when stderr is a terminal).

    Returns:
        The metrics dictionary (also in ``metrics.json``).

    Raises:
        DataError: both ``steps`` and ``minutes``, or a non-positive one.
    """
    if steps is not None and minutes is not None:
        raise DataError("give steps or minutes, not both")
    if steps is not None and steps < 1:
        raise DataError(f"steps must be >= 1, got {steps}")
    if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
        raise DataError(f"minutes must be a positive number, got {minutes}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _train(steps, minutes, seed, progress)
    net, config = run["net"], run["config"]
    ev = load_omniglot_compact("evaluation")
    e_ev = embed_all(net, ev.images)
    model_m, d_model, same = evaluate_omniglot(e_ev, ev.labels, ev.drawers, lambda im: embed_all(net, im), seed=seed)
    base_m, d_base, _ = evaluate_omniglot(raw_pixels(ev.images), ev.labels, ev.drawers, raw_pixels, seed=seed)

    save_model(net, out / "model", extra={"train_config": config.to_dict(), "demo": "omniglot"})  # sets net.fingerprint
    d_cal, s_cal = labelled_pair_distances(embed_all(net, run["cal_x"]), run["cal_y"], max_pairs=MAX_PAIRS, seed=seed)
    cal = Calibrator(threshold_method="eer").fit(d_cal, s_cal, "held-out background characters", model_fingerprint=net.fingerprint)
    conf = confusion_at_threshold(d_model.numpy(), same.numpy(), cal.threshold_)
    model_m["accuracy_at_threshold"] = conf.accuracy
    cal.save(out / "model")

    example = plot_worked_example(net, compact_official_runs()[0], out / "example.png")
    tour = gallery_tour(net, cal, ev, seed=seed)
    metrics = _metrics(model_m, base_m, run, cal, conf, example, tour, int(same.numel()), len(ev))
    _plots(out, e_ev, ev, d_model, d_base, same, cal.threshold_)
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "README.md", report_text(metrics))
    return metrics


def _metrics(model_m: dict, base_m: dict, run: dict, cal: Calibrator, conf: Any, example: dict, tour: dict, pairs: int, n_test: int) -> dict[str, Any]:
    config: TrainConfig = run["config"]
    return {
        "model": model_m,
        "baseline": {**base_m, "method": "raw-pixel Euclidean distance, no training"},
        "improvement": {k: model_m[k] - base_m[k] for k in ("roc_auc", "one_shot_accuracy", "five_way_accuracy", "official_20way")},
        "calibration": {"threshold": cal.threshold_, "method": "eer", "fitted_on": cal.fitted_on_,
                        "pairs": cal.n_pos_ + cal.n_neg_, "test_far": conf.fp / max(1, conf.fp + conf.tn),
                        "test_frr": conf.fn / max(1, conf.fn + conf.tp)},
        "example": example,
        "gallery": tour,
        "protocol": {
            "dataset": "Omniglot (Lake et al. 2015), the compact 28x28 copy shipped in siamkit (load_omniglot_compact)",
            "train": f"{run['train_classes']} characters of the 30 background alphabets "
                     f"({len(run['background'].classes) - run['train_classes']} held out for calibration)",
            "test": "the 20 evaluation alphabets (659 characters, never seen in training)",
            "one_shot": f"20-way and 5-way 1-shot, {EPISODES:,} random episodes over all evaluation characters, "
                        "1 query per class; official_20way: Lake et al.'s 20 runs (400 queries, within alphabet)",
            "verification_pairs": f"{pairs:,} pairs among the drawings of drawers 1-{PAIR_DRAWERS} "
                                  "(every genuine pair, a seeded sample of the impostor pairs)",
        },
        "train_config": config.to_dict(),
        "train_steps": config.steps_per_epoch,
        "train_seconds": run["train_seconds"],
        "test_images": n_test,
    }


def _plots(out: Path, e_ev: torch.Tensor, ev: Any, d_model: torch.Tensor, d_base: torch.Tensor, same: torch.Tensor, threshold: float) -> None:
    plot_roc({"trained": (d_model, same), "raw pixels": (d_base, same)}, out / "roc.png",
             title="unseen Omniglot alphabets: pair verification")
    plot_distance_histogram(d_model, same, out / "distances.png", threshold=threshold,
                            title="trained model: distances of unseen-character pairs")
    chars = torch.arange(0, len(ev.classes), max(1, len(ev.classes) // 12))[:12]
    keep = torch.isin(ev.labels, chars)
    _, lab = torch.unique(ev.labels[keep], return_inverse=True)
    plot_embedding_map(e_ev[keep], lab, out / "embeddings.png", class_names=[ev.classes[c] for c in chars.tolist()],
                       title="12 unseen characters, 20 drawings each (t-SNE of embeddings)")


def report_text(m: dict[str, Any]) -> str:
    """The report folder's README.md.

    Args:
        m: the metrics of :func:`run_omniglot_demo`.

    Returns:
        Markdown.
    """
    a, b = m["model"], m["baseline"]
    rows = "".join(
        f"| {name} | {r['one_shot_accuracy']:.3f} ± {r['one_shot_ci95']:.3f} | {r['five_way_accuracy']:.3f} ± {r['five_way_ci95']:.3f} "
        f"| {r['official_20way']:.3f} | {r['roc_auc']:.4f} | {r['eer']:.4f} |\n"
        for name, r in (("trained Siamese network", a), ("raw pixels, no training", b))
    )
    g = m["gallery"]
    tour = "".join(f"| {p['truth']} | {p['decision']} | {p['distance']:.3f} |\n" for p in g["probes"])
    return (
        "# siamkit demo report\n\n"
        f"Trained on {m['protocol']['train']} for {m['train_steps']} steps ({m['train_seconds']:.0f} s); "
        "every number below is on the 20 evaluation alphabets, never seen in training.\n\n"
        "| method | 20-way 1-shot | 5-way 1-shot | official 20 runs | ROC AUC | EER |\n|---|---|---|---|---|---|\n"
        f"{rows}\n"
        f"Threshold {m['calibration']['threshold']:.3f} (EER point on held-out background characters): "
        f"accuracy {a['accuracy_at_threshold']:.3f} on the evaluation pairs.\n\n"
        "![worked example](example.png)\n\n"
        f"Gallery tour: {g['enrolled']} characters enrolled from one drawing each; new drawings identified:\n\n"
        f"| drawing of | answer | distance |\n|---|---|---|\n{tour}\n"
        "![ROC](roc.png)\n\n![distances](distances.png)\n\n![embeddings](embeddings.png)\n\n"
        "Full numbers: `metrics.json`. Data: Omniglot, Lake et al. 2015 (MIT licence).\n"
    )
