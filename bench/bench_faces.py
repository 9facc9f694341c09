"""AT&T faces: verification and 10-way 1-shot on identities never seen in training.

Protocol (per split seed): 10 test identities drawn at random from the 40, 5 validation
identities drawn from the remaining 30, the other 25 train. Validation identities are
used for early stopping, for choosing the recipe (``--ablation``) and for calibrating the
decision threshold; the test identities only for the reported numbers. Test pairs: all
pairs of the 100 test images (450 genuine, 4,500 impostor); 10-way 1-shot: 1,000 episodes
over the 10 test identities.

Every method is measured in the same run on the same pairs: raw pixels (Euclidean on the
image), the classic tutorial Siamese network (small CNN, contrastive loss, random pairs),
and our recipe.

    python bench/bench_faces.py [--seeds 3] [--ablation] [--quick]
"""

from __future__ import annotations

from _common import threads_for_load

_LOAD = threads_for_load()

import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import SHARED_DATA, RecipeBench, ablation_section, calibrated_verification, closing_lines
from _common import drop_caches, mean_sd, method_row, pair_distances, raw_embed, recorded_row
from _common import run_ablation_rows, run_header, summarise_runs, tutorial_recipe
from _common import goal_lines, per_seed_line, val_verification, write_ours_report

from siamkit.data.faces import load_face_folder, split_identities
from siamkit.evaluation import n_way_k_shot_accuracy
from siamkit.inference import embed_all
from siamkit.training import fit
from siamkit.training.config import TrainConfig
from siamkit.training.recipes import load_recipe
from siamkit.tuples import all_pairs

DATA = SHARED_DATA / "att_faces"
RECIPE = load_recipe("faces")  # src/siamkit/recipes/faces.toml: `siamkit train --recipe faces`
SIZE = RECIPE.input.image_size  # half of AT&T's 112x92
SECTION = "AT&T faces: verification on unseen identities"
FARS = (1e-2, 1e-3)


# ----------------------------------------------------------------------------- recipes


def tutorial_config(seed: int, quick: bool = False) -> TrainConfig:
    """The classic tutorial Siamese network (:func:`_common.tutorial_recipe`), 300 steps.

    Args:
        seed: training seed.
        quick: 3 epochs instead of 100 (smoke run).

    Returns:
        The config (ties between epochs go to the later one, as for our recipe).
    """
    return tutorial_recipe(seed, epochs=3 if quick else 100, steps_per_epoch=3, tie_break="later")


def ours_config(seed: int, quick: bool = False, **changes: Any) -> TrainConfig:
    """Our recipe (the shipped ``faces`` recipe file), chosen on the validation identities (see ABLATION): triplet loss with
    batch-hard mining on 16 identities x 4 images, a conv4 encoder of width 32 cut to 3
    blocks whose 7x5 map is pooled to a 6x6 grid (faces are aligned: where a feature is
    matters), 128-d L2-normalised embeddings, mild random affine augmentation, 400 steps
    with a cosine schedule; the epoch with the best validation ROC AUC is kept, ties going
    to the later epoch (all 20 epochs run, as in the development runs).

    Args:
        seed: training seed.
        quick: 2 epochs x 3 steps instead of 20 x 20 (smoke run).
        **changes: ``TrainConfig`` fields to change (the variants of ``ABLATION``).

    Returns:
        The config (ties between epochs go to the later one).
    """
    cfg = dataclasses.replace(RECIPE.train, seed=seed, progress=False)
    if quick:
        cfg = dataclasses.replace(cfg, epochs=2, steps_per_epoch=3)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _enc(depth: int, grid: int, width: int = 32) -> dict[str, Any]:
    return {"encoder_kwargs": {"width": width, "depth": depth, "grid": grid}}


# what --ablation re-measures on the validation identities (name -> changes to ours_config)
ABLATION: dict[str, dict[str, Any]] = {
    "triplet, depth 4, 2x2 grid": _enc(4, 2),
    "triplet, depth 3, 4x4 grid": _enc(3, 4),
    "triplet, depth 2, 4x4 grid": _enc(2, 4),
    "triplet, depth 2, 8x8 grid": _enc(2, 8),
    "**ours**: triplet, depth 3, 6x6 grid": {},
    "ours without augmentation": {"augment": False},
    "mnr loss (25 ids x 2 per batch), depth 4, 2x2 grid": {"loss": "mnr", "miner": None, "m_per_class": 2,
                                                            "batch_size": 50, **_enc(4, 2)},
    "views loss, depth 4, 2x2 grid": {"loss": "views", "miner": None, **_enc(4, 2)},
}

# The development runs that chose the recipe (same protocol and code path as --ablation:
# fit() on the 25 training identities with the 5 validation identities for best-epoch
# selection, then val metrics), 2026-11-22, machine load 6-10, 1 torch thread.
RECORDED_NOTE = ("development runs of 2026-11-22 (load 6-10, 1 thread), recorded in the script; "
                 "`--ablation` re-measures the main rows")


ABLATION_KEYS = ("val_roc_auc", "val_eer", "val_5way_1shot", "train_seconds")


def _rec(name: str, *per: tuple[int, float, float, float, float]) -> dict[str, Any]:
    return recorded_row(name, ABLATION_KEYS, *per)


RECORDED_ABLATION = [
    _rec("raw pixels (Euclidean)", (0, 0.9587, 0.102, 0.920, 0), (1, 0.9833, 0.077, 0.972, 0)),
    _rec("tutorial (w8 depth 3, 5-d, contrastive margin 2, random pairs, 300 steps)",
         (0, 0.9103, 0.134, 0.841, 50), (1, 0.9351, 0.138, 0.773, 57)),
    _rec("views loss, conv4 w64 depth 4 2x2 grid, 90 steps", (0, 0.9319, 0.142, 0.841, 185)),
    _rec("views loss, w32 depth 4 2x2 grid, 400 steps", (0, 0.9292, 0.164, 0.789, 436)),
    _rec("mnr loss (25 ids x 2), w32 depth 4 2x2 grid, 400 steps", (0, 0.9544, 0.124, 0.846, 123)),
    _rec("triplet batch-hard, w32 depth 4 2x2 grid, 400 steps", (0, 0.9579, 0.107, 0.884, 140)),
    _rec("triplet, depth 3, 4x4 grid", (0, 0.9865, 0.073, 0.936, 154), (1, 0.9900, 0.067, 0.983, 206)),
    _rec("triplet, depth 2, 4x4 grid", (0, 0.9899, 0.062, 0.949, 178), (1, 0.9936, 0.049, 0.992, 172)),
    _rec("triplet, depth 2, 8x8 grid", (0, 0.9899, 0.049, 0.978, 171), (1, 0.9882, 0.080, 0.975, 108)),
    _rec("**ours**: triplet, depth 3, 6x6 grid", (0, 0.9946, 0.044, 0.967, 178), (1, 0.9920, 0.044, 0.975, 177)),
    _rec("ours without augmentation", (0, 0.9886, 0.059, 0.957, 111), (1, 0.9992, 0.013, 0.989, 159)),
]

# ----------------------------------------------------------------------------- evaluation


def _all_pair_distances(e: torch.Tensor, y: torch.Tensor, network: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    a, b, same = all_pairs(y)
    return pair_distances(e, a, b, network), same


def evaluate(
    embed: Callable[[torch.Tensor], torch.Tensor], network: Any, val: Any, test: Any, *, one_shot: bool = True
) -> dict[str, Any]:
    """Calibrate on validation pairs, report on test pairs (and 10-way 1-shot).

    Args:
        embed: images -> embeddings.
        network: the network behind ``embed`` (its distance), or None for raw pixels.
        val: the validation identities (``images``, ``labels``, ``classes``).
        test: the test identities.
        one_shot: also measure N-way 1-shot accuracy.

    Returns:
        The numbers, with ``_cache`` = (test distances, same, embeddings, calibrator).
    """
    e_val, e_test = embed(val.images), embed(test.images)
    d_val, s_val = _all_pair_distances(e_val, val.labels, network)
    d_test, s_test = _all_pair_distances(e_test, test.labels, network)
    out, cal = calibrated_verification((d_val, s_val), (d_test, s_test), fars=FARS)
    dist = network.distance if network is not None else "euclidean"
    if one_shot:
        acc, ci = n_way_k_shot_accuracy(e_test, test.labels, n_way=10, k_shot=1, episodes=1000, distance=dist, seed=0)
        out["ten_way_one_shot"], out["ten_way_one_shot_ci95"] = acc, ci
        vacc, _ = n_way_k_shot_accuracy(e_val, val.labels, n_way=len(val.classes), k_shot=1, episodes=1000, distance=dist, seed=0)
        out["val_one_shot"] = vacc
    out["_cache"] = (d_test, s_test, e_test, cal)
    return out


def train(cfg: TrainConfig, tr: Any, va: Any) -> tuple[Any, float, int]:
    """Fit on the training identities, choosing the epoch on the validation ones.

    Args:
        cfg: the recipe.
        tr: training identities.
        va: validation identities.

    Returns:
        (network, seconds, best epoch).
    """
    t0 = time.perf_counter()
    res = fit(tr.images, tr.labels, cfg, val_x=va.images, val_y=va.labels)
    return res.network, time.perf_counter() - t0, res.best_epoch


def run_split(seed: int, faces: Any, quick: bool, report_dir: Path | None) -> dict[str, Any]:
    """Raw pixels, the tutorial and ours on one split seed (and the report of ours).

    Args:
        seed: the split seed.
        faces: the AT&T dataset.
        quick: smoke run (see the configs).
        report_dir: where to write the report of ours, or None.

    Returns:
        ``{"seed", "split": identities of each part, <method>: numbers}``.
    """
    tr, va, te, info = split_identities(faces, 10, 5, seed=seed)
    row: dict[str, Any] = {"seed": seed, "split": info}
    raw = evaluate(raw_embed, None, va, te)
    row["raw pixels"] = raw
    for name, cfg in (("tutorial", tutorial_config(seed, quick)), ("ours", ours_config(seed, quick))):
        net, secs, best = train(cfg, tr, va)
        r = evaluate(lambda x, net=net: embed_all(net, x), net, va, te)
        r.update(train_seconds=secs, best_epoch=best, config=cfg.to_dict())
        row[name] = r
        print(f"seed {seed} {name}: AUC {r['roc_auc']:.4f} EER {r['eer']:.4f} 1-shot {r['ten_way_one_shot']:.4f} "
              f"({secs:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
        if name == "ours" and report_dir is not None:
            write_ours_report(
                report_dir, r, raw, title=f"AT&T faces, 10 unseen identities (split seed {seed})",
                split={"data": str(DATA), "image_size": list(SIZE), "protocol": "all pairs of the 10 test identities",
                       **info},
                labels=te.labels, class_names=te.classes,
                extra={"ten_way_one_shot": {"accuracy": r["ten_way_one_shot"], "ci95": r["ten_way_one_shot_ci95"],
                                            "episodes": 1000},
                       "train_seconds": round(secs, 1), "recipe": cfg.to_dict()},
            )
    print(f"seed {seed} raw: AUC {raw['roc_auc']:.4f} EER {raw['eer']:.4f} 1-shot {raw['ten_way_one_shot']:.4f}", flush=True)
    return drop_caches(row)


def run_ablation(faces: Any, quick: bool, seeds: tuple[int, ...] = (0, 1)) -> list[dict[str, Any]]:
    """Each recipe trained on the 25 training identities, judged on the 5 validation ones.

    Args:
        faces: the AT&T dataset.
        quick: smoke run.
        seeds: split seeds (each: its 25 training and 5 validation identities).

    Returns:
        One row per recipe: validation ROC AUC, EER and 5-way 1-shot per seed and their means.
    """
    recipes: dict[str, Callable[[int], TrainConfig | None]] = {"raw pixels": lambda s: None,
                                                              "tutorial": lambda s: tutorial_config(s, quick)}
    recipes.update({k: (lambda s, kw=kw: ours_config(s, quick, **kw)) for k, kw in ABLATION.items()})

    def measure(make: Callable[[int], TrainConfig | None], seed: int) -> dict[str, Any]:
        tr, va, _, _ = split_identities(faces, 10, 5, seed=seed)
        cfg = make(seed)
        if cfg is None:
            e = raw_embed(va.images)
            net, secs = None, 0.0
        else:
            net, secs, _ = train(cfg, tr, va)
            e = embed_all(net, va.images)
        d, s = _all_pair_distances(e, va.labels, net)
        acc, _ = n_way_k_shot_accuracy(e, va.labels, n_way=5, episodes=1000, distance=net.distance if net else "euclidean")
        return {"seed": seed, **val_verification(d, s), "val_5way_1shot": acc, "train_seconds": secs}

    return run_ablation_rows(recipes, measure, seeds, ABLATION_KEYS)


# ----------------------------------------------------------------------------- output


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method, each number over the split seeds (see :func:`_common.summarise_runs`)."""
    keys = ["roc_auc", "eer", "accuracy_at_threshold", "far_at_threshold", "frr_at_threshold", "ten_way_one_shot"]
    return summarise_runs(runs, keys, FARS)


def doc_body(out: dict[str, Any], cmd: str) -> str:
    """The docs section.

    Args:
        out: the results (as in bench/results/faces.json).
        cmd: the command line shown.

    Returns:
        Markdown: protocol, methods table, goals, notes, ablation.
    """
    s, runs = out["summary"], out["runs"]
    n = len(runs)
    lines = [
        run_header(out, cmd),
        "",
        (f"Protocol: AT&T / ORL faces at {SIZE[0]}x{SIZE[1]} (half size). Per split seed, 10 test identities are drawn "
        "at random from the 40, then 5 validation identities from the other 30; the remaining 25 train. "
        "Validation identities serve early stopping, recipe choice and the EER threshold (`Calibrator`); "
        "the test identities only the numbers below: all pairs of their 100 images (450 genuine, 4,500 impostor) "
        f"and 10-way 1-shot over 1,000 episodes. Mean ± sd over {n} split seed(s) "
        f"({', '.join(str(r['seed']) for r in runs)}; the identities of every split are in `bench/results/faces.json`). "
        "Accuracy, FAR and FRR are at the threshold calibrated on validation."),
        "",
        "| method | ROC AUC | EER | TAR@FAR 1e-2 | TAR@FAR 1e-3 | acc. @ val threshold | FAR / FRR @ val threshold | 10-way 1-shot | train time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    labels = {"raw pixels": "raw pixels (Euclidean)", "tutorial": "tutorial Siamese (small CNN, contrastive, random pairs)",
              "ours": "**siamkit recipe**"}
    lines += [method_row(labels[m], m, s[m], [mean_sd(s[m]["ten_way_one_shot"])]) for m in labels]
    o = s["ours"]
    eer, auc, one = statistics.mean(o["eer"]), statistics.mean(o["roc_auc"]), statistics.mean(o["ten_way_one_shot"])
    lines += [
        "",
        ("Published anchor: the Siamese-network tutorials on AT&T (e.g. harveyslash/Facial-Similarity-with-"
        "Siamese-Networks-in-Pytorch) report no number; the tutorial row above is that setup measured here."),
        "",
        *goal_lines([("EER <= 1%", eer, eer <= 0.01), ("ROC AUC >= 0.999", auc, auc >= 0.999),
                     ("10-way 1-shot >= 97%", one, one >= 0.97)]),
        "",
        per_seed_line(runs, [("AUC", "roc_auc", "{:.4f}"), ("EER", "eer", "{:.4f}"), ("1-shot", "ten_way_one_shot", "{:.3f}")]),
        "",
        *closing_lines("faces", GAP_NOTE, RECIPE_NOTE, runs[0]["seed"]),
    ]
    lines += ablation_section(out.get("ablation"), lambda note: (
        "Ablation on the **validation** identities only: train on the 25 training identities, judge on the 5 "
        f"validation identities (all their pairs, 5-way 1-shot over 1,000 episodes), per split seed; {note}. "
        "Five identities make a noisy judge (compare within a seed; raw pixels give the seed's difficulty): "
        "differences under ~0.005 AUC are not meaningful."),
        [("val ROC AUC", "val_roc_auc", "{:.4f}"), ("val EER", "val_eer", "{:.3f}"), ("val 5-way 1-shot", "val_5way_1shot", "{:.3f}")])
    return "\n".join(lines)


RECIPE_NOTE = (
    "triplet loss, batch-hard mining, 16 identities x 4 images per batch; conv4 encoder of width 32 cut to "
    "3 blocks, its 7x5 map average-pooled to a 6x6 grid, linear to 128-d, L2-normalised, Euclidean; random affine "
    "augmentation (10 deg, shear 0.1, scale 0.9-1.1, 10% shift); Adam 1e-3, cosine over 20 epochs x 20 steps, "
    "the epoch with the best validation ROC AUC kept (ties go to the later epoch; all 20 epochs run). Why: keeping the spatial layout was the one "
    "change that lifted the validation AUC clearly above raw pixels (see the ablation)."
)
GAP_NOTE = (
    "Why the goals are out of reach here, and what would close the gap: the encoder learns faces from 25 people "
    "(250 images). In the second round of validation runs the best epoch came at 5-10 of 40, "
    "and more steps, a higher resolution, no augmentation or test-time flips (all tried, see the ablation) did not move "
    "it; the split seed (which 10 people are tested) moves the test AUC by more (0.932-0.986 over the 3 seeds) than any recipe "
    "change. An EER under 1% on unseen people is what face encoders trained on thousands of identities reach "
    "(e.g. public models trained on CASIA-WebFace or VGGFace2); the way there is such a pretrained encoder, "
    "registered with `register_encoder` and fine-tuned on the 25 identities, which needs weights this offline "
    "machine does not have. Between the two, pre-training on the Omniglot background set or self-supervised "
    "pre-training on unlabelled faces are untried."
)


ABLATION_FINDINGS = (
    "What helped on validation: (1) keeping the spatial layout in the embedding (conv4 cut to 2-3 blocks and pooled "
    "to a 4x4-8x8 grid instead of 4 blocks and 2x2) was the big step, 0.958 -> 0.987-0.995 val AUC at the same "
    "loss and steps: AT&T faces are aligned, so where a feature sits carries identity; 6x6 after 3 blocks was best "
    "on both seeds. (2) Triplet batch-hard beat the mnr and views losses at depth 4 (0.958 vs 0.954 vs 0.929); the "
    "views loss that wins the digits demo does not help here. (3) Augmentation on vs off is a tie over the two "
    "seeds (mean 0.9933 vs 0.9939: better on seed 0, worse on seed 1); it was kept as the safer choice for unseen "
    "data. (4) Enough steps: 90 steps were far from converged. (5) The tutorial setup (5-d embedding, contrastive "
    "margin 2, random pairs) is below raw pixels on every split. (6) Five validation identities saturate: on split "
    "seed 2 the validation AUC reached 1.0 at epoch 2, and fit()'s rule (keep the first best epoch, stop after "
    "`patience` epochs without a strictly better one) froze that barely trained network in a first run of this "
    "script; ties now go to the later epoch (`TrainConfig(tie_break='later')`). That did not change seed 2's test result "
    "(AUC 0.935 both ways): its test identities are hard for raw pixels too (0.939). Training times in this table "
    "are inflated: up to 3 of these runs shared the 2 cores with other jobs (load 6-10). "
    "(7) Second round (validation AUC seed 0 / 1, bf16 on an idle machine, cosine annealed every step; not in the "
    "table because 5-way accuracy was not measured): the recipe in bf16 with 400 steps 0.9877 / 0.9835; 1,000 "
    "steps 0.9940 / 0.9835; 1,000 steps without augmentation 0.9898 / 0.9995; 112x92 input with 4 blocks (the same "
    "7x5 map pooled to 6x6), 1,000 steps 0.9782 / 0.9895; averaging each embedding with its mirror image's "
    "(flip TTA) moved AUC by -0.007 to +0.003. Longer training does not help: the best validation epoch came at "
    "5-10 of 40, after which the network fits its 25 training identities. None of these was adopted; with 25 "
    "training identities the encoder, not the recipe, is the limit (see the note under the goal table)."
)


BENCH = RecipeBench(
    name="faces", section=SECTION, description=__doc__.split("\n")[0], unit="identities",
    quick_help="smoke run: 1 seed, a few steps, nothing written to docs",
    load=lambda: load_face_folder(DATA, image_size=SIZE, preprocess=RECIPE.input_spec().preprocessor()), run_split=run_split, run_ablation=run_ablation,
    summary=summary, doc_body=doc_body, recorded_rows=RECORDED_ABLATION, recorded_note=RECORDED_NOTE,
    findings=ABLATION_FINDINGS, image_size=SIZE, load_start=_LOAD,
)


if __name__ == "__main__":
    BENCH.main()
