"""Anomaly detection with AnomalyDetector (distance to the k nearest normal references),
next to two baselines in the same run: an untrained (randomly initialised) encoder of
the same architecture, and raw pixels.

(a) Signatures as anomalies (CEDAR, writers 1-40): a conv4 encoder is trained on 30
    writers; for each of the 10 unseen test writers, 12 genuine signatures are the
    normal references, the other 12 genuine signatures are normal test samples and the
    writer's 24 skilled forgeries are the anomalies.
(b) Novel classes (Omniglot): conv4 trained on the 30 background alphabets; for each of
    the 20 evaluation alphabets, that alphabet is normal (references and held-out normal
    images) and every image of the 19 other evaluation alphabets is an anomaly.

    python bench/bench_anomaly.py [--ablation] [--omniglot-model DIR] [--cedar-model DIR]

``--ablation`` also compares CEDAR training recipes on *validation* writers (6 of the 30
training writers held out; the test writers take no part) - that is how the recipe used
for (a) was chosen.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)  # other jobs share this machine's cores

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from _common import RESULTS, SHARED_DATA, machine, machine_line, replace_doc_section, write_json
from sklearn.metrics import roc_auc_score

from siamkit import TrainConfig, fit, load_model, save_model
from siamkit.anomaly import AnomalyDetector
from siamkit.data import load_omniglot, load_signatures, split_writers
from siamkit.inference import embed_all
from siamkit.training import build_network

faiss.omp_set_num_threads(1)

CEDAR = SHARED_DATA / "cedar_signatures"
OMNIGLOT = SHARED_DATA / "omniglot"
CEDAR_SIZE = (64, 96)
N_REFS = 12  # genuine references per writer (of 24)
K = 5  # the detector's defaults: k=5, mean of the k distances, quantile 0.99
# Chosen on validation writers (--ablation): training on genuine signatures only (one class
# per writer) beat adding the training writers' forgeries as extra classes (0.991 vs 0.961
# validation AUROC per writer, 2026-11-22).
CEDAR_WITH_FORGERIES = False
METHODS = ("trained", "untrained", "raw pixels")


# --------------------------------------------------------------------------- shared


def cedar_config(seed: int = 0, **over: Any) -> TrainConfig:
    """The CEDAR recipe (chosen on validation writers with --ablation)."""
    base = {
        "encoder": "conv4", "encoder_kwargs": {"width": 32}, "embedding_dim": 64, "normalize": True,
        "loss": "triplet", "miner": "batch_hard", "margin": 0.2, "batch_size": 120, "m_per_class": 4, "epochs": 12,
        "augment": True, "rotation": 5.0, "shear": 0.05, "scale": (0.95, 1.05), "translate": 0.05, "fill": 0.0,
        "val_fraction": 0.0, "patience": None, "seed": seed, "progress": False,
    }
    base.update(over)
    return TrainConfig(**{"precision": "fp32", **base})  # type: ignore[arg-type]


def omniglot_config(seed: int = 0, steps: int = 250, epochs: int = 4) -> TrainConfig:
    return TrainConfig(
        precision="fp32",  # the recorded figures were measured in fp32 (the library default became "auto")
        encoder="conv4", embedding_dim=64, normalize=True, loss="triplet", miner="batch_hard", margin=0.2,
        batch_size=64, m_per_class=4, epochs=epochs, steps_per_epoch=steps, val_fraction=0.0, patience=None,
        seed=seed, progress=False,
    )


def embeddings(images: torch.Tensor, trained: Any, config: TrainConfig, seed: int) -> dict[str, np.ndarray]:
    """Embeddings of every method for the same images."""
    torch.manual_seed(seed + 12345)
    untrained = build_network(config, images.shape[1:])  # the same architecture, random weights
    return {
        "trained": embed_all(trained, images).numpy(),
        "untrained": embed_all(untrained, images).numpy(),
        "raw pixels": images.reshape(images.shape[0], -1).float().div(255.0).numpy(),
    }


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def train_or_load(path: str | None, make: Callable[[], Any]) -> tuple[Any, float, bool]:
    """Reuse a model folder when it exists; else train (and save when a path is given)."""
    if path and Path(path).joinpath("config.json").is_file():
        return load_model(path), 0.0, True
    t0 = time.perf_counter()
    net = make()
    seconds = time.perf_counter() - t0
    if path:
        save_model(net, path)
    return net, seconds, False


# --------------------------------------------------------------------------- (a) CEDAR


TRAINING_DATA = {
    False: "the genuine signatures of the 30 training writers, one class per writer (no forgeries)",
    True: "the 30 training writers' genuine signatures (one class per writer) and their skilled forgeries "
          "(one more class per writer)",
}


def train_signatures(part: Any, config: TrainConfig, with_forgeries: bool) -> Any:
    """Train on one part's writers: class = writer's genuine signatures, and (with
    forgeries) one more class per writer for the skilled forgeries of that writer."""
    y = part.writer_labels.clone()
    if with_forgeries:
        y[~part.is_genuine] += len(part.writers)
        x = part.images
    else:
        x, y = part.images[part.is_genuine], y[part.is_genuine]
    n_classes = int(y.unique().numel())
    if config.batch_size > config.m_per_class * n_classes:  # a batch cannot hold more classes than exist
        config = dataclasses.replace(config, batch_size=config.m_per_class * n_classes)
    return fit(x, y, config).network


def signature_anomaly(part: Any, emb: dict[str, np.ndarray], draws: int, seed: int) -> dict[str, Any]:
    """Per writer: N_REFS random genuine references, the other genuine = normal, forgeries = anomalies."""
    rng = np.random.default_rng(seed)
    wl, gen = part.writer_labels.numpy(), part.is_genuine.numpy()
    plan = []  # the same reference draws for every method
    for d in range(draws):
        for w in range(len(part.writers)):
            g = np.flatnonzero((wl == w) & gen)
            f = np.flatnonzero((wl == w) & ~gen)
            perm = rng.permutation(g.size)
            plan.append((d, w, g[perm[:N_REFS]], np.r_[g[perm[N_REFS:]], f], np.r_[np.zeros(g.size - N_REFS, bool), np.ones(f.size, bool)]))
    out: dict[str, Any] = {}
    for name, e in emb.items():
        per_writer = np.zeros((draws, len(part.writers)))
        pooled_s: list[list[np.ndarray]] = [[] for _ in range(draws)]
        pooled_y: list[list[np.ndarray]] = [[] for _ in range(draws)]
        fa = det_rate = 0.0
        n_norm = n_anom = 0
        for d, w, refs, test, is_anom in plan:
            det = AnomalyDetector(k=K).fit(e[refs])
            s = det.score(e[test])
            per_writer[d, w] = roc_auc_score(is_anom, s)
            pooled_s[d].append(s)
            pooled_y[d].append(is_anom)
            flag = s > det.threshold_
            fa += float(flag[~is_anom].sum())
            det_rate += float(flag[is_anom].sum())
            n_norm += int((~is_anom).sum())
            n_anom += int(is_anom.sum())
        pooled = [roc_auc_score(np.concatenate(pooled_y[d]), np.concatenate(pooled_s[d])) for d in range(draws)]
        wmean = per_writer.mean(axis=0)
        out[name] = {
            "per_writer_auroc": {part.writers[w]: float(wmean[w]) for w in range(len(part.writers))},
            "writer_auroc_mean_sd": mean_sd(wmean.tolist()),
            "pooled_auroc": float(np.mean(pooled)),
            "false_alarm_rate_at_threshold": fa / n_norm,
            "detection_rate_at_threshold": det_rate / n_anom,
        }
    return out


def run_cedar(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    sig = load_signatures(CEDAR, image_size=CEDAR_SIZE, preprocess=True, workers=1)
    train, _, test, info = split_writers(sig, test_writers=10, seed=0)
    load_s = time.perf_counter() - t0
    print(f"CEDAR: {len(sig)} images loaded in {load_s:.0f} s; test writers {info['test']}", flush=True)
    result: dict[str, Any] = {"split": info, "image_size": list(CEDAR_SIZE), "references_per_writer": N_REFS,
                              "k": K, "reduction": "mean", "quantile": 0.99, "reference_draws": args.draws}

    if args.ablation:  # choose the recipe on validation writers carved out of the training writers
        tr, _, val, vinfo = split_writers(train, test_writers=6, seed=1)
        rows = []
        for name, cfg, forg in (
            ("genuine only (30 writer classes)", cedar_config(), False),
            ("genuine + forgeries of training writers (one extra class per writer)", cedar_config(), True),
        ):
            t1 = time.perf_counter()
            net = train_signatures(tr, cfg, forg)
            r = signature_anomaly(val, embeddings(val.images, net, cfg, 0), args.draws, seed=1)
            rows.append({"recipe": name, "val_writer_auroc": r["trained"]["writer_auroc_mean_sd"][0],
                         "val_pooled_auroc": r["trained"]["pooled_auroc"], "train_seconds": time.perf_counter() - t1,
                         "untrained": r["untrained"]["writer_auroc_mean_sd"][0], "raw": r["raw pixels"]["writer_auroc_mean_sd"][0]})
            print(f"  ablation: {rows[-1]}", flush=True)
        result["ablation"] = {"validation_writers": vinfo["test"], "rows": rows}
    else:  # keep the last --ablation run's table (a run without --ablation would otherwise drop it)
        prev_path = RESULTS / "anomaly.json"
        prev = json.loads(prev_path.read_text()).get("cedar", {}).get("ablation") if prev_path.exists() else None
        if prev:
            result["ablation"] = {**prev, "carried_over": True}

    config = cedar_config()
    net, train_s, reused = train_or_load(args.cedar_model, lambda: train_signatures(train, config, CEDAR_WITH_FORGERIES))
    print(f"CEDAR encoder {'loaded' if reused else f'trained in {train_s:.0f} s'}", flush=True)
    result.update(train_seconds=train_s, reused_model=reused, train_config=config.to_dict(),
                  training_data=TRAINING_DATA[CEDAR_WITH_FORGERIES])
    result["results"] = signature_anomaly(test, embeddings(test.images, net, config, 0), args.draws, seed=0)
    return result


# --------------------------------------------------------------------------- (b) Omniglot


def run_omniglot(args: argparse.Namespace) -> dict[str, Any]:
    config = omniglot_config(steps=args.omniglot_steps, epochs=args.omniglot_epochs)

    def make() -> Any:
        bg = load_omniglot(OMNIGLOT, split="background", image_size=28)
        return fit(bg.images, bg.labels, config).network

    net, train_s, reused = train_or_load(args.omniglot_model, make)
    print(f"Omniglot encoder {'loaded' if reused else f'trained in {train_s:.0f} s'}", flush=True)
    ev = load_omniglot(OMNIGLOT, split="evaluation", image_size=28)
    emb = embeddings(ev.images, net, config, 0)
    alpha = ev.image_alphabet.numpy()
    drawer = ev.drawers.numpy()
    labels = ev.labels.numpy()
    rng = np.random.default_rng(0)
    splits: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {"drawers": [], "characters": []}
    for a, name in enumerate(ev.alphabets):
        mine = alpha == a
        # drawers 1-10 are the references; drawers 11-20 of the same characters are normal test images
        splits["drawers"].append((name, mine & (drawer <= 10), mine & (drawer > 10)))
        chars = np.unique(labels[mine])
        held = rng.permutation(chars)[: chars.size // 2]
        # half of the characters (all 20 drawers) are references; the other half are normal test images
        splits["characters"].append((name, mine & ~np.isin(labels, held), mine & np.isin(labels, held)))
    out: dict[str, Any] = {}
    for split, items in splits.items():
        out[split] = {}
        for method, e in emb.items():
            aurocs, fas, dets = {}, [], []
            for name, ref_mask, norm_mask in items:
                det = AnomalyDetector(k=K).fit(e[ref_mask])
                test = norm_mask | (alpha != ev.alphabets.index(name))
                s = det.score(e[test])
                is_anom = ~norm_mask[test]
                aurocs[name] = float(roc_auc_score(is_anom, s))
                flag = s > det.threshold_
                fas.append(float(flag[~is_anom].mean()))
                dets.append(float(flag[is_anom].mean()))
            out[split][method] = {
                "per_alphabet_auroc": aurocs,
                "auroc_mean_sd": mean_sd(list(aurocs.values())),
                "false_alarm_rate_at_threshold": statistics.mean(fas),
                "detection_rate_at_threshold": statistics.mean(dets),
            }
            print(f"  omniglot {split} {method}: AUROC {fmt(out[split][method]['auroc_mean_sd'])}", flush=True)
    return {"train_seconds": train_s, "reused_model": reused, "train_config": config.to_dict(), "image_size": 28,
            "alphabets": list(ev.alphabets), "k": K, "reduction": "mean", "quantile": 0.99, "results": out}


# --------------------------------------------------------------------------- report


def results_and_training(part: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A part's results and how its model came about (reused, or the training time)."""
    return part["results"], "reused model" if part["reused_model"] else f"{part['train_seconds']:.0f} s"


def report(res: dict[str, Any], args: argparse.Namespace, m: dict[str, Any]) -> str:
    lines = [
        (f"`python bench/bench_anomaly.py{' --ablation' if args.ablation else ''}` (one torch / FAISS thread). "
        f"{machine_line(m)} Raw numbers: `bench/results/anomaly.json`."),
        "",
        (f"`AnomalyDetector(k={K}, reduction=\"mean\")` with the library defaults: the anomaly score is the mean "
        "distance to the 5 nearest normal references (the network's distance: Euclidean on L2-normalised "
        "embeddings; Euclidean on pixels in [0, 1] for raw pixels), and the threshold is the 0.99 quantile of the "
        "references' leave-one-out scores. All three methods score the same references and test images in the "
        "same run: *trained* (conv4, triplet loss with batch-hard mining), *untrained* (the same architecture "
        "with random weights) and *raw pixels*. AUROC is threshold-free; the false alarm rate (normal test "
        "images flagged) and detection rate (anomalies flagged) are at the quantile threshold."),
    ]
    if "cedar" in res:
        c = res["cedar"]
        r, how = results_and_training(c)
        lines += [
            "",
            "### (a) Skilled forgeries as anomalies (CEDAR)",
            "",
            (f"CEDAR writers 1-40, signatures preprocessed (Otsu, crop to ink, pad to aspect, invert) to "
            f"{c['image_size'][0]}x{c['image_size'][1]}. conv4 (width 32, 64-d, batch-hard triplet loss, small "
            f"affine augmentation, {c['train_config']['epochs']} epochs) trained ({how}) on {c['training_data']}; "
            "the 10 test writers and their forgeries are never seen. (Adding the training writers' forgeries as "
            "extra classes would be fair too, but was worse on validation writers: see the recipe table.) "
            f"Per test writer: {c['references_per_writer']} random genuine signatures are the normal references, "
            "the other 12 genuine signatures are normal test images, the 24 skilled forgeries are the anomalies "
            f"(averaged over {c['reference_draws']} random reference draws). Pooled = one AUROC over all writers' "
            "scores together (a single global threshold)."),
            "",
            "| method | AUROC per writer (mean ± sd over 10 writers) | pooled AUROC | false alarm rate | detection rate |",
            "|---|---|---|---|---|",
        ]
        for meth in METHODS:
            x = r[meth]
            lines.append(
                f"| {meth} | {fmt(x['writer_auroc_mean_sd'])} | {x['pooled_auroc']:.3f} | "
                f"{x['false_alarm_rate_at_threshold']:.3f} | {x['detection_rate_at_threshold']:.3f} |"
            )
        lines += [
            "",
            (f"With {c['references_per_writer']} references, the 0.99 quantile of their leave-one-out scores is "
            f"essentially the largest one, so about 1/{c['references_per_writer'] + 1} of a writer's genuine "
            "signatures are expected to score above it: the false alarm rates are that, not 1%. One training run "
            "(seed 0); per-writer AUROC below."),
        ]
        writers = list(r["trained"]["per_writer_auroc"])
        lines += ["", "| test writer | " + " | ".join(writers) + " |", "|---|" + "---|" * len(writers)]
        for meth in METHODS:
            lines.append(f"| {meth} | " + " | ".join(f"{r[meth]['per_writer_auroc'][w]:.2f}" for w in writers) + " |")
        if "ablation" in c:
            a = c["ablation"]
            lines += [
                "",
                (f"Recipe choice on **validation** writers ({', '.join(a['validation_writers'])}, held out of the 30 "
                "training writers; trained on the other 24"
                + ("; measured by an earlier run with --ablation" if a.get("carried_over") else "") + "):"),
                "",
                "| recipe | val AUROC per writer | val pooled AUROC | untrained | raw pixels |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {row['recipe']} | {row['val_writer_auroc']:.3f} | {row['val_pooled_auroc']:.3f} | "
                f"{row['untrained']:.3f} | {row['raw']:.3f} |"
                for row in a["rows"]
            ]
    if "omniglot" in res:
        o = res["omniglot"]
        r, how = results_and_training(o)
        tc = o["train_config"]
        lines += [
            "",
            "### (b) Novel classes (Omniglot)",
            "",
            (f"conv4 (64-d) trained on the 30 background alphabets at 28x28 "
            f"({how}, "
            f"{tc['epochs']} x {tc['steps_per_epoch']} steps of 64 images). For each of the 20 evaluation "
            "alphabets, that alphabet is normal and every image of the 19 other evaluation alphabets is an anomaly "
            "(~12,500 per alphabet). Two ways to hold out normal test images: **drawers**: the references are "
            "drawers 1-10 of every character, the normal test images drawers 11-20 (known characters, new "
            "hands); **characters**: the references are half of the alphabet's characters, the normal test images "
            "the other half (characters the references do not contain: only the alphabet's style is shared)."),
            "",
            "| method | drawers: AUROC (mean ± sd, 20 alphabets) | false alarm / detection | characters: AUROC | false alarm / detection |",
            "|---|---|---|---|---|",
        ]
        for meth in METHODS:
            d, ch = r["drawers"][meth], r["characters"][meth]
            lines.append(
                f"| {meth} | {fmt(d['auroc_mean_sd'])} | {d['false_alarm_rate_at_threshold']:.3f} / "
                f"{d['detection_rate_at_threshold']:.3f} | {fmt(ch['auroc_mean_sd'])} | "
                f"{ch['false_alarm_rate_at_threshold']:.3f} / {ch['detection_rate_at_threshold']:.3f} |"
            )
    if "omniglot" in res:
        lines += [
            "",
            ("In the character split the references' nearest neighbours are drawings of the *same* characters, so "
            "their leave-one-out scores are lower than those of the held-out characters and the quantile threshold "
            "flags many normal test images (false alarm column): there, a threshold fitted on labelled validation "
            "images of the expected kind (`AnomalyDetector.fit_threshold`) is the right tool. AUROC does not "
            "depend on the threshold. One training run (seed 0)."),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ablation", action="store_true", help="also compare CEDAR recipes on validation writers")
    ap.add_argument("--cedar-model", help="model folder to reuse (or to save the trained CEDAR encoder to)")
    ap.add_argument("--omniglot-model", help="model folder to reuse (or to save the trained Omniglot encoder to)")
    ap.add_argument("--omniglot-steps", type=int, default=250, help="training steps per epoch (batch 64)")
    ap.add_argument("--omniglot-epochs", type=int, default=4)
    ap.add_argument("--draws", type=int, default=5, help="random reference draws per CEDAR writer")
    ap.add_argument("--skip-cedar", action="store_true")
    ap.add_argument("--skip-omniglot", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 epoch, few steps; writes no results")
    args = ap.parse_args()
    if args.quick:
        global cedar_config
        full = cedar_config
        cedar_config = lambda seed=0, **over: full(seed, **{"epochs": 1, **over})
        args.omniglot_steps, args.omniglot_epochs, args.draws = 5, 1, 1
    m = machine()
    res: dict[str, Any] = {"machine": m}
    t0 = time.perf_counter()
    if not args.skip_cedar:
        res["cedar"] = run_cedar(args)
    if not args.skip_omniglot:
        res["omniglot"] = run_omniglot(args)
    res["total_seconds"] = time.perf_counter() - t0
    body = report(res, args, m)
    if not args.quick:
        write_json("anomaly", res)
        replace_doc_section("Anomaly detection", body)
    print(body)
    print(f"total {res['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
