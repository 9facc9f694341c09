"""Faces that the recipe was never tuned on: 5-fold class-disjoint cross-validation on AT&T,
each fold's unseen identities scored clean, relit and reframed, beside raw pixels.

Protocol (siamkit.evaluation.crossval): the 40 identities are cut into 5 folds of 8. Per
fold, the whole pipeline re-runs: train on 27 identities, keep the best epoch and
calibrate the EER threshold on 5 inner validation identities drawn from the 32
non-test ones, then score all pairs of the 8 test identities (360 genuine, 2,800
impostor) under three conditions: clean, relit (siamkit.data.relight: light gradient,
gamma, cast shadow; seeded, test images only) and reframed (scale 0.8-1.2, shift up to
10%). The threshold stays the clean validation one. Raw pixels (Euclidean on the resized
image) run on the same folds and pairs in the same run.

Recipes are TOML files (bench/recipes/*.toml: [recipe], [input] with image_size,
preprocess steps and tta, [train] = TrainConfig fields); one JSON per recipe under
bench/results/generalisation_<file stem>.json; --doc rebuilds the docs table from all of
them.

    nice -n 10 python bench/bench_generalisation.py [RECIPE.toml ...] [--folds 5] [--quick] [--doc]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from _common import RESULTS, SHARED_DATA, machine, machine_line, replace_doc_section, write_json

from siamkit.data.faces import load_face_folder
from siamkit.data.illumination import IlluminationNorm
from siamkit.data.relight import relight, reframe
from siamkit.evaluation.crossval import CrossValMethod, Fitted, class_folds, cross_validate, summarise_folds
from siamkit.inference import embed_all, pair_distances_of_embeddings
from siamkit.training import fit
from siamkit.training.config import TrainConfig

DATA = SHARED_DATA / "att_faces"
RECIPES = Path(__file__).resolve().parent / "recipes"
SECTION = "Generalisation (faces)"
RAW = "raw pixels"
CONDITIONS = ("clean", "relit", "reframed")
STEPS = {"illumination": IlluminationNorm.from_dict}  # the step kinds this bench knows (the library's registry later)


@dataclasses.dataclass
class Recipe:
    """A recipe file: its name, input part and training config."""

    name: str
    description: str
    input: dict[str, Any]
    config: TrainConfig
    path: Path
    protocol: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_recipe(path: Path) -> Recipe:
    """Parse a recipe TOML file ([recipe], [input], [train]).

    Args:
        path: the file.

    Returns:
        The recipe.
    """
    d = tomllib.loads(path.read_text())
    return Recipe(d["recipe"]["name"], d["recipe"].get("description", ""), d["input"], TrainConfig(**d["train"]), path,
                  d.get("protocol", {}))


def input_pipeline(spec: dict[str, Any]) -> Any:
    """The input part of a recipe as a function: uint8 (N, C, H, W) at the source size ->
    the model's uint8 inputs (preprocess steps on the PIL image, then a bilinear resize,
    in the order of ``siamkit.data.images.load_image``).

    Args:
        spec: the recipe's [input] table.

    Returns:
        images -> tensor.
    """
    steps = [STEPS[s["kind"]]({k: v for k, v in s.items()}) for s in spec.get("preprocess", [])]
    h, w = spec["image_size"]

    def prepare(images: np.ndarray) -> torch.Tensor:
        out = np.empty((images.shape[0], 1, h, w), dtype=np.uint8)
        for i, im in enumerate(images):
            img = Image.fromarray(im[0], mode="L")
            for step in steps:
                img = step(img)
            if (img.height, img.width) != (h, w):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            out[i, 0] = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(out)

    return prepare


def raw_method(spec: dict[str, Any], name: str = RAW) -> CrossValMethod:
    """Raw pixels: the resized image in [0, 1], flattened, Euclidean.

    Args:
        spec: an [input] table (its image_size and preprocess are used).
        name: the row label.

    Returns:
        The method.
    """
    def fit_raw(*_: Any) -> Fitted:
        return Fitted(lambda x: x.float().div(255).flatten(1), lambda e, a, b: (e[a] - e[b]).norm(dim=1), {})

    return CrossValMethod(name, input_pipeline(spec), fit_raw)


def recipe_methods(recipe: Recipe) -> list[CrossValMethod]:
    """A recipe: fit() on the fold's training identities, best epoch on its validation
    ones; when the recipe has no test-time augmentation, also the same networks with flip
    TTA and with shift+flip TTA (rows that train nothing: they reuse each fold's network).

    The recipe's optional [protocol] table: ``ensemble = n`` trains n networks per fold
    (seeds apart) and scores the Euclidean distance of their concatenated unit embeddings
    (the mean of their squared distances); ``train_on_val = true`` trains on the
    validation identities too, for the recipe's fixed number of epochs (no epoch
    selection; the validation threshold, then fitted on trained identities, is optimistic).

    Args:
        recipe: the recipe.

    Returns:
        The method(s).
    """
    tta = None if recipe.input.get("tta", "none") == "none" else recipe.input["tta"]
    n_nets = int(recipe.protocol.get("ensemble", 1))
    on_val = bool(recipe.protocol.get("train_on_val", False))
    counter = iter(range(10**6))
    trained: list[Any] = []

    def fitted(nets: list[Any], tta_: str | None, info: dict[str, Any]) -> Fitted:
        if len(nets) == 1:
            net = nets[0]
            return Fitted(lambda z: embed_all(net, z, tta=tta_),
                          lambda e, a, b: pair_distances_of_embeddings(net, e, a, b), info)
        return Fitted(lambda z: torch.cat([embed_all(n, z, tta=tta_) for n in nets], dim=1) / len(nets) ** 0.5,
                      lambda e, a, b: (e[a] - e[b]).norm(dim=1), info)

    def fit_recipe(x: torch.Tensor, y: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor) -> Fitted:
        nets, infos = [], []
        for _ in range(n_nets):
            cfg = dataclasses.replace(recipe.config, seed=recipe.config.seed + next(counter))
            if on_val:
                res = fit(torch.cat([x, vx]), torch.cat([y, vy]), dataclasses.replace(cfg, val_fraction=0.0))
            else:
                res = fit(x, y, cfg, val_x=vx, val_y=vy)
            nets.append(res.network)
            alarms: dict[str, int] = {}  # epochs with each health alarm (collapse, no_active, below_raw)
            for rec in res.history:
                for a in rec.get("alarms") or []:
                    alarms[a["kind"]] = alarms.get(a["kind"], 0) + 1
            infos.append({"best_epoch": res.best_epoch, "seed": cfg.seed, "epochs": len(res.history), "alarm_epochs": alarms})
        info = infos[0] if n_nets == 1 else {"members": infos}
        trained.append((nets, info))
        return fitted(nets, tta, info)

    def reuse_with(tta_: str) -> Any:
        folds = iter(range(10**6))  # the folds come in the same order for every method

        def reuse(*_: Any) -> Fitted:
            nets, info = trained[next(folds)]
            return fitted(nets, tta_, {**info, "reused": True})
        return reuse

    prepare = input_pipeline(recipe.input)
    methods = [CrossValMethod(recipe.name, prepare, fit_recipe)]
    if tta is None:
        methods.append(CrossValMethod(f"{recipe.name} + flip TTA", prepare, reuse_with("flip")))
        methods.append(CrossValMethod(f"{recipe.name} + shift+flip TTA", prepare, reuse_with("shift+flip")))
    return methods


def quick_config(cfg: TrainConfig) -> TrainConfig:
    """A smoke-run version of a config (2 epochs x 3 steps)."""
    return dataclasses.replace(cfg, epochs=2, steps_per_epoch=3)


def run_recipe(recipe: Recipe, faces: Any, n_folds: int, quick: bool, fold_seed: int = 0) -> dict[str, Any]:
    """Cross-validate one recipe beside raw pixels (and raw pixels through its preprocessing).

    Args:
        recipe: the recipe.
        faces: AT&T at the source resolution.
        n_folds: folds.
        quick: smoke run.
        fold_seed: seeds which identities fall in which fold (another seed: another partition).

    Returns:
        The results (folds, rows, summary, machine, load).
    """
    if quick:
        recipe = dataclasses.replace(recipe, config=quick_config(recipe.config))
    folds = class_folds(faces.classes, k=n_folds, val_classes=5, seed=fold_seed)
    methods = [raw_method({"image_size": recipe.input["image_size"]})]
    if recipe.input.get("preprocess"):
        methods.append(raw_method(recipe.input, name=f"{RAW} + {recipe.name} preprocessing"))
    methods += recipe_methods(recipe)
    conditions = {"clean": None, "relit": lambda a: relight(a, seed=0), "reframed": lambda a: reframe(a, seed=0)}
    load0, t0 = os.getloadavg()[0], time.perf_counter()

    def show(row: dict[str, Any]) -> None:
        c = row["conditions"]
        print(f"{row['method']:<40} {row['fold']}: " + "  ".join(
            f"{k} AUC {c[k]['roc_auc']:.4f} EER {c[k]['eer']:.3f} acc {c[k]['accuracy']:.3f}" for k in c)
            + f"  ({row['train_seconds']:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)

    images = faces.images.numpy()
    rows = cross_validate(images, faces.labels, faces.classes, methods, folds=folds, conditions=conditions,
                          fars=(1e-2,), on_result=show)
    return {
        "recipe": {"name": recipe.name, "file": recipe.path.name, "description": recipe.description,
                   "input": recipe.input, "train": recipe.config.to_dict(), "protocol": recipe.protocol},
        "protocol": {"folds": n_folds, "val_classes": 5, "fold_seed": fold_seed, "condition_seed": 0,
                     "conditions": list(CONDITIONS), "quick": quick},
        "folds": [dataclasses.asdict(f) for f in folds],
        "rows": rows,
        "summary": summarise_folds(rows, reference=RAW),
        "machine": machine(), "load_start": load0, "load_end": os.getloadavg()[0],
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


# ----------------------------------------------------------------------------- docs


def _cell(s: dict[str, Any], cond: str, metric: str, fmt: str = "{:.1%}") -> str:
    v = s["conditions"][cond][metric]
    return f"{fmt.format(v['mean'])} ± {fmt.format(v['sd'])} ({fmt.format(v['worst'])})"


def selection_key(s: dict[str, Any]) -> tuple[int, float, float]:
    """How recipes are ranked: (0 if it beats raw pixels in every cell else 1, the worst
    fold's EER over all conditions, the mean EER over conditions).

    Args:
        s: a method's summary (``summarise_folds``).

    Returns:
        The sort key (lower is better).
    """
    conds = s["conditions"]
    beats = s.get("beats_reference")
    eligible = 0 if beats and beats["won"] == beats["of"] else 1
    worst = max(c["eer"]["worst"] for c in conds.values())
    mean = sum(c["eer"]["mean"] for c in conds.values()) / len(conds)
    return eligible, worst, mean


def per_fold_table(results: list[dict[str, Any]], name: str) -> list[str]:
    """EER per fold and condition of one method beside raw pixels'.

    Args:
        results: the JSON of each recipe.
        name: the method.

    Returns:
        Markdown lines.
    """
    s = next(r["summary"][name] for r in results if name in r["summary"])
    raw = results[0]["summary"][RAW]["conditions"]
    folds = range(len(s["conditions"]["clean"]["eer"]["folds"]))
    lines = [f"Per fold, EER of {name} / raw pixels (the first-ranked method):", "",
             "| fold | " + " | ".join(CONDITIONS) + " |", "|---|" + "---|" * len(CONDITIONS)]
    for i in folds:
        lines.append(f"| {i} | " + " | ".join(
            f"{s['conditions'][c]['eer']['folds'][i]:.1%} / {raw[c]['eer']['folds'][i]:.1%}" for c in CONDITIONS) + " |")
    return lines


def doc_body(results: list[dict[str, Any]], cmd: str) -> str:
    """The docs section from every recipe's results.

    Args:
        results: the JSON of each recipe.
        cmd: the command line shown.

    Returns:
        Markdown.
    """
    first = results[0]
    lines = [
        f"`{cmd}` (one process per recipe, `nice -n 10`, 1 torch thread). {machine_line(first['machine'])} "
        f"Load average at start {min(r['load_start'] for r in results):.1f}-{max(r['load_start'] for r in results):.1f}.",
        "",
        ("Protocol (`siamkit.evaluation.crossval`): AT&T's 40 identities cut into 5 folds of 8 (seed 0); per fold the whole "
         "pipeline re-runs: train on 27 identities, best epoch and EER threshold from 5 inner-validation identities "
         "(drawn from the 32 non-test ones), then all pairs of the 8 unseen test identities (360 genuine, 2,800 impostor), "
         "scored **clean**, **relit** (`siamkit.data.relight.relight`, seed 0: light gradient with 15-50% on the dark side, "
         "gamma 0.5-2, a soft cast shadow on half the images; test images only) and **reframed** (`reframe`: scale 0.8-1.2, "
         "shift up to 10%), the threshold staying the clean validation one. Raw pixels run on the same folds and pairs in "
         "the same run (its rows repeat per recipe file: they are the same numbers). "
         "Cells: mean ± sd over the 5 folds (worst fold). \"beats raw\": (fold, condition) cells where the "
         "recipe's EER is below raw pixels', of 15. \"+ flip TTA\" and \"+ shift+flip TTA\" rows reuse each fold's network (no training: the mirror "
         "image's embedding averaged in; shift+flip: also its four 1-pixel shifts); \"raw pixels + method ...\" is raw pixels on the recipe's preprocessed images."),
        "",
        "| recipe | clean EER | relit EER | reframed EER | EER, mean of conditions | worst cell EER | clean AUC | relit AUC | relit acc. @ val thr. | beats raw | train s / fold |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    seen: set[str] = set()
    for r in results:
        for name, s in r["summary"].items():
            if name in seen:
                continue
            seen.add(name)
            beats = s.get("beats_reference")
            label = f"`{r['recipe']['file']}`" if name == r["recipe"]["name"] else name
            if name.startswith(f"{RAW} + "):
                label = f"{RAW} + " + ", ".join(
                    " ".join(f"{k} {v}" for k, v in st.items() if k != "kind") for st in r["recipe"]["input"]["preprocess"])
                if label in seen:
                    continue
                seen.add(label)
            lines.append(
                f"| {label} | {_cell(s, 'clean', 'eer')} | {_cell(s, 'relit', 'eer')} | {_cell(s, 'reframed', 'eer')} | "
                f"{selection_key(s)[2]:.1%} | {selection_key(s)[1]:.1%} | "
                f"{_cell(s, 'clean', 'roc_auc', '{:.3f}')} | {_cell(s, 'relit', 'roc_auc', '{:.3f}')} | "
                f"{_cell(s, 'relit', 'accuracy')} | "
                f"{'-' if not beats else str(beats['won']) + '/' + str(beats['of'])} | {s['train_seconds']:.0f} |")
    ranked = sorted({(selection_key(s), name) for r in results for name, s in r["summary"].items()
                     if not name.startswith(RAW)})
    lines += ["", "Selection rule: a default must beat raw pixels in all 15 (fold, condition) cells; among those (else among "
              "all, marked), the lowest worst-cell EER, then the lowest mean. Ranking: "
              + ", ".join(f"{f}" + ("" if k[0] == 0 else " (not eligible)") for k, f in ranked) + "."]
    best_key, best = ranked[0]
    lines += ["", *per_fold_table(results, best)]
    lines += ["", "Recipes: " + "; ".join(f"`{r['recipe']['file']}`: {r['recipe']['description']}" for r in results) + "."]
    return "\n".join(lines)


FINDINGS = """**What the ablation says** (every row: 5 folds, 27 training identities, 240 steps unless noted, ~100 s a fold
at load 15-25 on 2 shared cores, 1 thread, niced):

- **Lighting breaks every model that sees raw intensities.** Relit, raw pixels fall from 11.9% to 45.3% EER and the
  current recipe (`faces_current.toml`, 400 steps) from 10.7% to 46.0%, worse than raw pixels; the threshold calibrated
  on clean validation then accepts and rejects almost at random (relit accuracy 75%). Lighting augmentation
  (`lighting = 0.7`, a smooth random illumination field + gamma) only halves the damage (34.6%, worst fold 50%).
- **Illumination normalisation fixes most of it**: with Tan-Triggs, relit EER stays within 0-6 points of clean on
  every fold (grid6, sigmas 1/2: 10.7% clean, 11.7% relit), at a cost on clean AUC: fold 2's identities are separable by their overall
  brightness (raw pixels 13.9%, the unnormalised grid 6.6%) and Tan-Triggs removes exactly that cue, so no
  normalised recipe beats raw pixels on clean fold 2. Raw pixels on Tan-Triggs images are poor (31%): the network
  is what turns the edge map into identity.
- **Histogram equalisation** (grid6) is the cheap middle: relit 35.1% (from 46.3%), clean 10.3%, reframed 21.1%
  (it keeps the layout the DoG removes), 14/15 cells, but a worst relit fold of 38.9%.
- **Tan-Triggs parameters**: the paper's DoG sigmas 1/2 applied at the source size (112x92, before the 2x
  downsampling) mostly average away; 2/4 (the paper's setting at the 56x46 the model sees) and 2/8 (keeping more of
  the face's low-frequency layout) both do better on the worst folds: 2/8 has the best worst-fold clean EER of any
  normalised recipe (12.5%, and 11.9% on fold 2, the one brightness separates) and the lowest worst cell overall.
- **Global pooling loses** (depth 4 + global average pooling + Tan-Triggs: 23.7% clean, 37.9% reframed): on 56x46
  the 3x2 map pooled to one vector throws away the layout the face carries; a coarser 3x3 grid is no more robust to
  reframing than the 6x6 one (26.3% vs 25.0%). Reframing (scale 0.8-1.2, 10% shift) is where every recipe is worst
  (17-30% EER); the unnormalised grid handles it best (17.8%), Tan-Triggs recipes lose ~7 points there (the DoG
  amplifies the edge-replicated borders of a zoomed-out image).
- **Loss**: normsoftmax (CosFace margin 0.1) vs triplet on the same Tan-Triggs grid: 11.9% vs 10.7% clean, 13.5% vs
  11.7% relit: no gain from 27 identities.
- **Flip TTA** (the mirror image's embedding averaged in, no retraining) helps every recipe by 1-2 points EER, on
  every condition; it turns grid6_tantriggs24 from 12/15 to 14/15 cells won against raw pixels.
- **240 vs 400 steps**: the 6x6 grid without normalisation at 240 steps (8.9% clean) is no worse than at 400 (10.7%);
  the best inner-validation epoch came at 6-11 of 16.

- **Lighting augmentation on top of Tan-Triggs** (`grid6_tt28_light`: `lighting = 0.5`, smooth random fields +
  gamma, another family than the relit test set; measured 2026-12-02 beside raw pixels in the same run): with flip
  TTA 9.0% clean, 10.3% relit, 24.0% reframed, below raw pixels in **15 of 15** cells, the first recipe to win every
  cell: it also wins clean fold 0 (4.0% vs 6.9%) and fold 3 (6.9% vs 8.3%), where every normalised recipe before it
  lost (why is not measured here: presumably what Tan-Triggs leaves of a lighting change, at shadow edges). The
  spread across folds grows (clean sd 4.0 vs 1.4 points, worst clean fold 13.6% vs 11.9%).
- **Wider framing augmentation** (`grid6_tt28_wide`: scale 0.8-1.25, shift 12%, a mid-grey fill instead of black):
  with flip TTA reframed 21.0% (from 23.8%, the best reframed figure of any Tan-Triggs recipe) but clean 11.1% and
  13/15 cells (loses clean folds 0 and 3). The reframed test is also an affine scale + shift, so part of this gain is
  tuning towards the test distortion; not chosen.

**Chosen, first round** (2026-12-02): `grid6_tt28_light` + flip TTA, by the rule declared before the runs (one of
the two recipes that beat raw pixels in all 15 cells, and of those the lower worst cell, 27.1%): 9.0% clean, 10.3%
relit, 24.0% reframed EER (sd 4.0 / 4.0 / 2.9 points; worst folds 13.6%, 15.1%, 27.1%) against raw pixels' 11.9%,
45.3%, 30.5%. It was `faces-robust` until the ensemble round below replaced it.

**Chosen now** (2026-12-03; `bench/recipes/faces_robust.toml`, shipped as `siamkit train --recipe faces-robust`):
the same network trained **3 times, seeds apart, and joined into one model** (`ensemble = 3` in [train]:
`siamkit.training.ensemble`, the `ensemble` encoder), with **shift+flip TTA**. Through the library's ensemble path
(the `faces_robust.toml` row): **7.6% clean, 8.6% relit, 22.5% reframed EER** (sd 3.8 / 3.9 / 1.7; worst folds
12.5%, 12.9%, 25.2%), below raw pixels in 15/15 cells; on another partition of the identities (`--fold-seed 1`,
line below) 7.5% / 8.4% / 22.6%, again 15/15. The bench's own 3-member ensemble (`tt28_light_ens3`, other member
seeds) gave 6.9% / 7.5% / 22.2% with shift+flip: **member seeds alone move the mean by ~1 point**. How it was
chosen: by the declared rule (all 15 cells, then the lowest worst cell) `tt28_light_ens5 + shift+flip TTA` ranks
first, by 0.2 points of worst cell (24.4% vs 24.6%), while its means are no better (7.3% / 8.0% / 21.8% against
6.9% / 7.5% / 22.2%) at 5/3 the training and embedding cost; I took the 3-member ensemble and say so here: the rule
was applied with a cost tie-break decided after seeing the 5-member figures. **Goals**: relit EER <= 8% and below
raw pixels on every fold: below raw pixels on every fold and both partitions, but the mean is 7.5-8.6% depending on
the member seeds, so **not reliably met**; clean 3%: **not met** (7.5-7.6%). `faces` (the recipe behind
bench_faces, the CLI, calibration-shift and continual figures) is not switched: those figures and the test that
pins `faces` would have to be re-measured first.

Caveats: the relit and reframed sets are synthetic (`siamkit.data.relight`), one seed each, from the same 400 AT&T
images; the lighting augmentation is drawn from another family (smooth fields, no hard shadows) so it is not
trained on the test distortion. Training times are wall-clock under a load of 15-25 (8 engineers on 2 cores)."""


FINDINGS_RECIPE = """**The recipe, not the data: loss, input size, ensemble** (measured 2026-12-02 in one session, each beside raw
pixels in the same run, 5 folds at fold seed 0 as above, load 3-15 on the 2 shared cores; every row starts from
`grid6_tt28_light`, the recipe shipped as `faces-robust`, and changes one thing):

| change (file) | clean EER, flip TTA | relit | reframed | beats raw | vs `faces-robust` per cell |
|---|---|---|---|---|---|
| none (`grid6_tt28_light`, shipped as `faces-robust`) | 9.0% (13.6%) | 10.3% (15.1%) | 24.0% (27.1%) | 15/15 | - |
| normsoftmax, CosFace margin 0.2, scale 16 (`tt28_light_nsm`) | 10.2% (14.2%) | 11.6% (19.4%) | 20.4% (24.7%) | 13/15 | better on reframed only |
| input 64x52 instead of 56x46 (`tt28_light_64`) | 8.8% (13.3%) | 9.6% (15.0%) | 25.7% (26.7%) | 15/15 | mixed |
| **2 networks per fold, seeds apart, concatenated unit embeddings** (`tt28_light_ens2`) | **7.6% (11.7%)** | **8.3% (13.3%)** | **23.2% (24.8%)** | **15/15** | better in 14 of 15 cells (reframed fold 0: 20.9% vs 19.2%) |
| semi-hard mining instead of batch-hard (`tt28_light_semihard`; measured 2026-12-03) | 10.5% (14.2%) | 11.0% (14.4%) | 21.5% (23.8%) | 13/15 | better in 6 of 15 (4 of 5 reframed) |
| a multi-granularity twin, `conv4_multiscale` fused, block 2 at 3x3 (`tt28_light_multiscale`; 2026-12-03) | 9.4% (14.2%) | 10.0% (14.4%) | 22.4% (25.9%) | 13/15 | better in 9 of 15 (every reframed fold) |
| trained on all 32 non-test identities, final epoch, no selection (`tt28_light_all32`; 2026-12-03) | 9.8% (15.4%) | 10.6% (16.9%) | 25.9% (31.1%) | 13/15 | better in 4 of 15 |
| an exponential moving average of the weights, `ema = 0.98` (`tt28_light_ema98`; 2026-12-07) | 9.3% (13.6%) | 10.3% (14.8%) | 23.9% (27.2%) | 15/15 | better in 5, equal in 5, worse in 5 |

(mean over 5 folds (worst fold); per fold, clean / relit / reframed EER of the ensemble: 3.9 / 4.4 / 20.9,
11.4 / 11.9 / 24.7, 11.7 / 13.3 / 24.8, 4.2 / 4.7 / 22.8, 6.7 / 6.9 / 23.0%.)

- **A proxy loss does not generalise better from 27 identities here**: normsoftmax (CosFace) loses 1.2 points clean
  and 1.3 relit, and the training-health monitor reports collapsed embeddings after epoch 1 on all 5 folds (they
  recover by the chosen epoch); it is the best reframed row of the Tan-Triggs family (20.4%), which says the proxy embedding is less
  position-specific, not more identity-specific.
- **A larger input** (64x52) gives 0.2 / 0.7 points clean / relit and loses 1.7 on reframed: noise-level.
- **A 2-seed ensemble** is the only change that moves every condition: -1.4 clean, -2.0 relit, -0.8 reframed, the
  lowest worst cell of any recipe (24.8%), for twice the training and embedding cost. Relit 8.3% is just above the
  8% goal (3 of 5 folds at or below 6.9%; folds 1 and 2 at 11.9% and 13.3%).
- **Not the default**: against `faces` (the current default, `faces_current.toml`) the ensemble still loses clean
  fold 2 (11.7% vs 5.8%: that fold's identities are separable by overall brightness, a cue Tan-Triggs removes) and
  reframed folds 0, 2, 4; the rule (beat the default on every fold and condition) is not met, and an ensemble is not
  a single network a recipe file can describe (`siamkit train` trains one). Goals: clean 7.6% (goal 3%) and relit
  8.3% (goal 8%): **not met**.
- **Semi-hard mining** (2026-12-03, idle machine): the training-health monitor reports batch-hard's partial collapse
  on almost every epoch of this batch-hard recipe family (73 and 74 of 80 epochs in the multiscale and all-32 runs,
  `alarm_epochs` in their JSON:
  std of the normalised embeddings ~0.0023, 0.026/sqrt(D), loss at the margin) and suggests semi-hard mining; with it
  no collapse alarm fires (counts per fold in the JSON) and the embeddings spread, reframed EER falls 2.5 points (21.5%, better on 4 of 5
  folds) but clean and relit rise 1.5 and 0.7 points and clean folds 0 and 3 lose to raw pixels: the collapsed-looking
  batch-hard embedding ranks identities better on this data. Not adopted.
- **A multi-granularity twin** (`conv4_multiscale`: the 6x6 grid of the last block plus block 2 pooled to 3x3, one
  projection; 2026-12-03): 9.4% / 10.0% / 22.4% against 9.0% / 10.3% / 24.0%, better on every reframed fold and
  9 of 15 cells, but it loses clean folds 1 and 2 to raw pixels (13/15): by the all-cells rule not a default; with the
  Omniglot ablation (no gain on validation) it stays an option, not the encoder of any recipe.
- **Weight averaging** (`TrainConfig.ema`, 2026-12-07, idle machine: `tt28_light_ema98`, the validation, the kept
  epoch and the model all on the averaged weights): 9.3% / 10.3% / 23.9% with flip TTA against 9.0% / 10.3% / 24.0%,
  better in 5 cells, equal in 5 (folds 0 and 1 clean and relit), worse in 5: no gain. Over 240 steps the EMA warm-up
  (decay of update n = min(0.98, (1+n)/(10+n)), 0.964 at the last step) keeps the average within the last ~25 steps,
  where the cosine schedule has all but stopped the weights, so the average is close to the weights themselves;
  `ema = 0.995` gave identical figures for the same reason (not kept). An earlier run of the same recipe without the
  warm-up (the plain `get_ema_multi_avg_fn`, whose average after epoch 1 is still 74% the random initialisation) was
  worse: 11.7% / 12.4% / 28.0% (its JSON was overwritten by the run above; figures from its log). Not adopted.
- **All 32 non-test identities, no selection** (`tt28_light_all32`, the 5 validation identities trained on, the final
  epoch of 16): more identities did not pay for the lost epoch selection: 9.8% / 10.6% / 25.9%, worse on 11 of 15
  cells.
- **Ensemble size** (2026-12-03, idle machine, `tt28_light_ens3`, `tt28_light_ens5`; each row its own fold
  networks, with flip / shift+flip TTA): 1 network 9.0% / 10.3% / 24.0% (flip); 2: 7.6% / 8.3% / 23.2%; 3:
  7.2% / 7.6% / 22.6% (shift+flip 6.9% / 7.5% / 22.2%); 5: 7.3% / 8.0% / 22.5% (shift+flip 7.3% / 8.0% / 21.8%).
  The gain stops at 3 members. Training cost is linear (49 s and 90 s a fold for 3 and 5 on an idle core).
- **Shift+flip TTA** (the four 1-pixel shifts as well as the mirror image, no retraining) vs flip alone: -0.3 /
  -0.1 / -0.4 points on the 3-member ensemble, -0.0 / +0.0 / -0.7 on the 5-member one: mostly reframed.
- **Not tried** (time): attention pooling, stronger geometric augmentation beyond `grid6_tt28_wide`, SWA (equal
  averaging of far-apart weights needs its batch-norm statistics re-estimated after averaging; the EMA above averages the
  batch-norm buffers with the weights), inner-fold
  selection among recipes, a pretrained face backbone (the machine has none)."""


def other_partition_line(r: dict[str, Any]) -> str:
    """One line for a recipe re-run on another partition of the identities (``--fold-seed``).

    Args:
        r: its results.

    Returns:
        Markdown.
    """
    name = r["recipe"]["name"]
    s, raw = r["summary"][name], r["summary"][RAW]

    def cells(x: dict[str, Any]) -> str:
        return ", ".join(f"{c} {x['conditions'][c]['eer']['mean']:.1%} (worst {x['conditions'][c]['eer']['worst']:.1%})"
                         for c in CONDITIONS)

    b = s["beats_reference"]
    note = f" ({r['recipe']['note']})" if r["recipe"].get("note") else ""
    return (f"Another partition (`--fold-seed {r['protocol']['fold_seed']}`), `{r['recipe']['file']}`{note}: EER {cells(s)}; "
            f"raw pixels {cells(raw)}; beats raw pixels in {b['won']}/{b['of']} cells "
            f"(`nice -n 10 python bench/bench_generalisation.py bench/recipes/{r['recipe']['file']} "
            f"--fold-seed {r['protocol']['fold_seed']}`, load at start {r['load_start']:.1f}).")


def write_doc(notes: str = "") -> None:
    """Rebuild the docs section from bench/results/generalisation_*.json.

    Args:
        notes: Markdown appended (the findings).
    """
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("generalisation_*.json"))]
    others = [r for r in results if not r["protocol"]["quick"] and r["protocol"]["fold_seed"] != 0]
    results = [r for r in results if not r["protocol"]["quick"] and r["protocol"]["fold_seed"] == 0]
    if not results:
        print("no results to write")
        return
    body = doc_body(results, "nice -n 10 python bench/bench_generalisation.py bench/recipes/NAME.toml")
    body += "".join("\n\n" + other_partition_line(r) for r in others)
    extra = notes or FINDINGS + "\n\n" + FINDINGS_RECIPE
    replace_doc_section(SECTION, body + ("\n\n" + extra.strip() if extra.strip() else ""))


def main() -> None:
    """Parse the command line; run each recipe; write JSON (and the docs with --doc)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes", nargs="*", type=Path, help="recipe TOML files (default: bench/recipes/*.toml)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold-seed", type=int, default=0, help="another partition of the identities into folds")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs x 3 steps, nothing written to docs")
    p.add_argument("--doc", action="store_true", help="only rebuild the docs section from the results files")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.doc:
        write_doc()
        return
    faces = load_face_folder(DATA)  # the source resolution: conditions and preprocessing come before resizing
    for path in args.recipes or sorted(RECIPES.glob("*.toml")):
        recipe = load_recipe(path)
        out = run_recipe(recipe, faces, args.folds, args.quick, args.fold_seed)
        stem = (f"generalisation_{path.stem}" + (f"_foldseed{args.fold_seed}" if args.fold_seed else "")
                + ("_quick" if args.quick else ""))
        print(f"wrote {write_json(stem, out)}")
        for name, s in out["summary"].items():
            print(f"  {name:<40} " + "  ".join(
                f"{c}: EER {s['conditions'][c]['eer']['mean']:.3f} (worst {s['conditions'][c]['eer']['worst']:.3f})"
                for c in s["conditions"]) + (f"  beats raw {s['beats_reference']['won']}/{s['beats_reference']['of']}"
                                             if "beats_reference" in s else ""))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
