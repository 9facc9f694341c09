"""Matryoshka embeddings: accuracy at 16 / 32 / 64 / 128 dimensions of one Matryoshka
model, against separately trained models of each size and against truncating a plain
128-dimension model; and the adaptive size cascade (decide at 16 dims, go larger only
in the band around the threshold).

Omniglot (the compact 28x28 set shipped in the package, the demo's recipe): train on the
background alphabets (10% of their characters held out to calibrate), test on the 20
evaluation alphabets: 20-way and 5-way one-shot (1,000 random episodes, the same at every
size), ROC AUC / EER on 100,000 pairs (genuine pairs first, up to half).
AT&T faces (the faces recipe): per split seed 10 test and 5 calibration identities,
10-way one-shot and all test pairs.

Accuracy only (no timings): run with 1 thread and ``nice``:

    nice -n 10 OMP_NUM_THREADS=1 python bench/bench_matryoshka.py --dataset both [--steps 1000] [--seeds 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import warnings
from typing import Any

import torch

from _common import RESULTS, SHARED_DATA, machine, machine_line, replace_doc_section, write_json
from siamkit.adaptive import SizeCascade
from siamkit.data import load_omniglot_compact, split_by_class
from siamkit.data.faces import load_face_folder, split_identities
from siamkit.demo import omniglot_demo_config
from siamkit.evaluation.sizes import score_sizes
from siamkit.gallery.search import FaissIndex, recall_at_k
from siamkit.gallery.two_stage import TwoStageIndex
from siamkit.inference import embed_all
from siamkit.io import save_model
from siamkit.matryoshka import TruncationWarning
from siamkit.training import fit
from siamkit.training.recipes import load_recipe

DIMS = (16, 32, 64, 128)
K = 10
SECTION = "Matryoshka embeddings: one model at 16 / 32 / 64 / 128 dimensions"
FACES = load_recipe("faces")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _models(base: Any, separate: tuple[int, ...]) -> dict[str, Any]:
    """The configs compared: the Matryoshka model, the plain 128-d model (truncated at
    evaluation), and a separate model of each size in ``separate``."""
    out = {"matryoshka": dataclasses.replace(base, matryoshka_dims=DIMS), "plain_128": base}
    for d in separate:
        out[f"separate_{d}"] = dataclasses.replace(base, embedding_dim=d)
    return out


def _score(net: Any, x: torch.Tensor, y: torch.Tensor, dims: tuple[int, ...], *, n_way: tuple[int, ...], max_pairs: int,
           embeddings: torch.Tensor) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # the plain model is truncated on purpose
        return score_sizes(net, x, y, dims, n_way=n_way, max_pairs=max_pairs, episodes=1000, seed=0, embeddings=embeddings)


def _two_stage_recall(e: torch.Tensor) -> dict[str, float]:
    """recall@10 of two-stage search on the real test embeddings (every one a query
    against the others' index; exact: flat on the full size)."""
    x = e.numpy()
    _, exact = FaissIndex(kind="flat", metric="cosine").build(x).search(x, K + 1)
    out = {}
    for short in (16, 32):
        two = TwoStageIndex(short_dim=short, kind="flat", metric="cosine").build(x)
        for c in (20, 50, 100):
            two.set_search_params(candidates=c)
            out[f"{short}->128, {c} candidates"] = recall_at_k(two.search(x, K + 1)[1], exact, K + 1)
    return out


def _row_numbers(rows: list[dict[str, Any]], shot_keys: list[str]) -> dict[int, dict[str, float]]:
    return {r["dim"]: {"roc_auc": r["roc_auc"], "eer": r["eer"], **{k: r[k]["accuracy"] for k in shot_keys if k in r}}
            for r in rows}


def _cascade(net: Any, cal_x: torch.Tensor, cal_y: torch.Tensor, test: Any, max_pairs: int) -> dict[str, Any]:
    """The adaptive cascade over every size, fitted on the calibration classes' pairs,
    reported on the test pairs (the distances ``test`` scored)."""
    cal = score_sizes(net, cal_x, cal_y, DIMS, n_way=(), max_pairs=max_pairs, seed=1)
    out: dict[str, Any] = {}
    for name, dims in (("16/128", (16, 128)), ("16/32/64/128", DIMS), ("32/128", (32, 128))):
        c = SizeCascade(dims=dims, max_disagreement=0.005).fit(cal.distances, cal.same)
        out[name] = c.report(test.distances, test.same)
    return out


def run(dataset: str, base: Any, train: tuple[torch.Tensor, torch.Tensor, Any], cal: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor], *, n_way: tuple[int, ...], max_pairs: int,
        separate: tuple[int, ...], save_dir: str | None = None) -> dict[str, Any]:
    """Train every model of :func:`_models` on ``train`` and score it on ``test``.

    Args:
        dataset: names the lines printed.
        base: the plain 128-d recipe.
        train: (images, labels, groups or None).
        cal: calibration images and labels (other classes) for the cascade.
        test: test images and labels (unseen classes).
        n_way: the N of the one-shot episodes.
        max_pairs: test pairs at most.
        separate: the sizes trained separately.
        save_dir: where to save each trained model as ``DATASET_NAME`` (None: not saved).

    Returns:
        model -> size -> numbers, the cascade's report, seconds per model.
    """
    shots = [f"{n}_way_1_shot" for n in n_way]
    out: dict[str, Any] = {"models": {}, "seconds": {}}
    for name, cfg in _models(base, separate).items():
        t0 = time.perf_counter()
        net = fit(train[0], train[1], cfg, groups=train[2]).network
        out["seconds"][name] = round(time.perf_counter() - t0, 1)
        if save_dir:
            save_model(net, os.path.join(save_dir, f"{dataset}_{name}"))
        dims = (cfg.embedding_dim,) if name.startswith("separate") else DIMS
        e = embed_all(net, test[0])
        s = _score(net, test[0], test[1], dims, n_way=n_way, max_pairs=max_pairs, embeddings=e)
        out["models"][name] = _row_numbers(s.rows, shots)
        print(f"{dataset} {name} ({out['seconds'][name]:.0f} s, load {_load()}): "
              + "; ".join(f"{d}: {v[shots[0]]:.4f}" for d, v in out["models"][name].items()), flush=True)
        if name == "matryoshka":
            out["adaptive"] = _cascade(net, cal[0], cal[1], s, max_pairs)
            out["two_stage_recall_at_10"] = _two_stage_recall(e)
            print(f"{dataset} adaptive: {out['adaptive']}; two-stage: {out['two_stage_recall_at_10']}", flush=True)
    return out


def omniglot(steps: int, seed: int, separate: tuple[int, ...], save_dir: str | None = None) -> dict[str, Any]:
    """The Omniglot runs of one seed (see the module docstring)."""
    bg, ev = load_omniglot_compact("background"), load_omniglot_compact("evaluation")
    tr_idx, cal_idx = split_by_class(bg.labels, 0.1, seed)  # as the demo: 10% of the characters calibrate
    base = omniglot_demo_config(steps=steps, seed=seed, progress=False)
    res = run("omniglot", base, (bg.images[tr_idx], bg.labels[tr_idx], None), (bg.images[cal_idx], bg.labels[cal_idx]),
              (ev.images, ev.labels), n_way=(20, 5), max_pairs=100_000, separate=separate, save_dir=save_dir)
    res["protocol"] = {"train": f"background alphabets less the calibration characters, {len(tr_idx)} drawings",
                       "calibration": f"{len(cal_idx)} drawings of held-out background characters",
                       "test": f"evaluation alphabets, {len(ev.labels)} drawings; 100,000 pairs (genuine pairs first, up to half)",
                       "steps": steps, "seed": seed, "precision": base.precision}
    return res


def faces(seed: int, separate: tuple[int, ...], epochs: int | None = None) -> dict[str, Any]:
    """The AT&T runs of one split seed."""
    ds = load_face_folder(SHARED_DATA / "att_faces", image_size=FACES.input.image_size,
                          preprocess=FACES.input_spec().preprocessor())
    tr, va, te, info = split_identities(ds, 10, 5, seed=seed)
    base = dataclasses.replace(FACES.train, seed=seed, progress=False, health=False, epochs=epochs or FACES.train.epochs)
    res = run("faces", base, (tr.images, tr.labels, None), (va.images, va.labels), (te.images, te.labels),
              n_way=(10,), max_pairs=500_000, separate=separate)
    res["protocol"] = {"split": info, "seed": seed, "epochs": base.epochs}
    return res


def _table(res: dict[str, Any], key: str) -> list[str]:
    m = res["models"]
    lines = ["| dims | Matryoshka (one model) | separate model of that size | plain 128-d model truncated |", "|---|---|---|---|"]
    for d in DIMS:
        sep = m["plain_128"].get(d) if d == 128 else m.get(f"separate_{d}", {}).get(d)
        sep_cell = "not trained in this run" if sep is None else f"{sep[key]:.4f} (AUC {sep['roc_auc']:.4f})"
        lines.append(f"| {d} | {m['matryoshka'][d][key]:.4f} (AUC {m['matryoshka'][d]['roc_auc']:.4f}) | "
                     f"{sep_cell} | {m['plain_128'][d][key]:.4f} (AUC {m['plain_128'][d]['roc_auc']:.4f}) |")
    return lines


def _adaptive_lines(res: dict[str, Any]) -> list[str]:
    lines = ["| cascade | decided at each size | accuracy | at 128 alone | agreement with 128 | values compared per pair |",
             "|---|---|---|---|---|---|"]
    for name, r in res["adaptive"].items():
        at = ", ".join(f"{k}: {v:.1%}" for k, v in r["decided_at"].items())
        lines.append(f"| {name} | {at} | {r['accuracy']:.4f} | {r['accuracy_full']:.4f} | {r['agreement_with_full']:.4f} | "
                     f"{r['mean_values_compared']:.1f} |")
    return lines


def doc(out: dict[str, Any], cmd: str) -> str:
    """The docs/benchmarks.md section."""
    m = out["machine"]
    body = [f"`{cmd}` ({out['date']}; load average {out['load_start']} at the start, {out['load_end']} at the end; "
            f"accuracy only, 1 thread, nothing timed). {machine_line(m)}", ""]
    if "omniglot" in out:
        o = out["omniglot"]
        full, quarter = o["models"]["matryoshka"][128]["20_way_1_shot"], o["models"]["matryoshka"][32]["20_way_1_shot"]
        st = o["protocol"]["steps"]
        red = f", **reduced**: {st} of the demo's 1,000 steps" if st != 1000 else ""
        body += [f"**Omniglot** (demo recipe{red}, {st} steps, seed {o['protocol']['seed']}; 20-way 1-shot "
                 "on the 20 evaluation alphabets, 1,000 episodes, the same at every size):", ""] + _table(o, "20_way_1_shot")
        body += ["", f"Goal (at 1/4 of the dimensions within 1 point of the full size on 20-way): 32 dims "
                 f"{quarter:.4f} vs 128 dims {full:.4f}: {100 * (quarter - full):+.1f} points "
                 f"({'met' if full - quarter <= 0.01 else 'not met'}); against the plain 128-d model "
                 f"({o['models']['plain_128'][128]['20_way_1_shot']:.4f}): "
                 f"{100 * (quarter - o['models']['plain_128'][128]['20_way_1_shot']):+.1f} points; the plain model truncated to 32: "
                 f"{o['models']['plain_128'][32]['20_way_1_shot']:.4f}.", "",
                 "Adaptive size (cascade fitted on held-out background characters, reported on the test pairs at the "
                 "calibrated EER thresholds):", ""] + _adaptive_lines(o)
    else:
        body += ["Omniglot is not in this run (`--dataset omniglot` writes its own section).", ""]
    if "faces" in out:
        f = out["faces"]
        ep = f["protocol"].get("epochs", FACES.train.epochs)
        reduced = f" (**reduced**: {ep} of the recipe's {FACES.train.epochs} epochs)" if ep != FACES.train.epochs else ""
        body += ["", f"**AT&T faces** (faces recipe{reduced}, split seed {f['protocol']['seed']}: 10 test identities; "
                 "10-way 1-shot over 1,000 episodes; ROC AUC on all test pairs):", ""]
        body += _table(f, "10_way_1_shot") + ["", "Adaptive size (fitted on the 5 calibration identities):", ""] + _adaptive_lines(f)
    for name in ("omniglot", "faces"):
        if name in out:
            r = out[name]["two_stage_recall_at_10"]
            body += ["", f"Two-stage search on the real {name} test embeddings of the Matryoshka model (each a query against "
                     "all; recall@10 against flat search on 128 values): " + ", ".join(f"{k}: {v:.4f}" for k, v in r.items()) + "."]
    body += ["", "Training seconds per model are in `bench/results/matryoshka_*.json` (under load, not comparable)."]
    return "\n".join(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=["omniglot", "faces", "both"], default="both")
    ap.add_argument("--steps", type=int, default=1000, help="Omniglot training steps per model (the demo's 1000).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--separate", type=int, nargs="*", default=list(DIMS[:-1]), help="Sizes trained separately (the full run: 16 32 64).")
    ap.add_argument("--faces-epochs", type=int, default=None, help="Faces epochs (default: the recipe's 20).")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--save-models", default=None, help="a folder: save every trained model there (Omniglot)")
    ap.add_argument("--render", action="store_true", help="only rewrite the doc section from bench/results/matryoshka_DATASET.json")
    a = ap.parse_args()
    sep = tuple(a.separate)
    cmd = (f"nice -n 10 OMP_NUM_THREADS=1 python bench/bench_matryoshka.py --dataset {a.dataset} --steps {a.steps} "
           f"--seed {a.seed} --separate {' '.join(map(str, sep))}"
           + (f" --faces-epochs {a.faces_epochs}" if a.faces_epochs else ""))
    if a.render:
        out = json.loads((RESULTS / f"matryoshka_{a.dataset}.json").read_text())
        for name in ("omniglot", "faces"):
            if name in out:
                out[name]["models"] = {m: {int(d): v for d, v in by.items()} for m, by in out[name]["models"].items()}
                if a.faces_epochs and name == "faces":
                    out[name]["protocol"].setdefault("epochs", a.faces_epochs)
        replace_doc_section(f"{SECTION} ({a.dataset})", doc(out, cmd))
        return
    torch.set_num_threads(1)
    out: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "load_start": _load()}
    if a.dataset in ("omniglot", "both"):
        out["omniglot"] = omniglot(a.steps, a.seed, sep, a.save_models)
    if a.dataset in ("faces", "both"):
        out["faces"] = faces(a.seed, sep, a.faces_epochs)
    out["load_end"] = _load()
    write_json(f"matryoshka_{a.dataset}", out)
    if not a.no_doc:
        replace_doc_section(f"{SECTION} ({a.dataset})", doc(out, cmd))


if __name__ == "__main__":
    main()
