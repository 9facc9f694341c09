"""Training throughput of conv4 through siamkit's full data path vs the compute bound.

Full data path = ``siamkit.fit`` itself: m-per-class sampling, indexing the uint8 image
tensor, conversion to float, (optional) random affine augmentation, forward, batch-hard
mining, triplet loss, backward, Adam step. Compute bound = the same model, miner, loss
and optimiser on one float batch already in memory. Ratio = data path / compute bound
(goal >= 0.85), for fp32 and for bf16 autocast + channels_last, at 28x28 and 105x105 on
real Omniglot images. ``--accuracy`` also trains fp32 and bf16 for the same number of
steps and compares 20-way one-shot accuracy on the evaluation alphabets.

    python bench/bench_throughput.py [--accuracy]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from _common import SHARED_DATA, machine, machine_line, replace_doc_section, write_json
from siamkit import TrainConfig, fit
from siamkit.data import ImageFolderDataset
from siamkit.evaluation import n_way_k_shot_accuracy
from siamkit.inference import autocast_context, embed_all
from siamkit.losses import triplet_loss
from siamkit.miners import BatchHardMiner
from siamkit.training import build_network

OMNIGLOT = SHARED_DATA / "omniglot"


def load(split: str, side: int, alphabets: int | None) -> ImageFolderDataset:
    """Omniglot characters as one labelled set (class = character).

    Args:
        split: ``images_background`` or ``images_evaluation``.
        side: image side.
        alphabets: the first this many alphabets; None = all.

    Returns:
        The dataset.
    """
    root = OMNIGLOT / split
    dirs = sorted(p for p in root.iterdir() if p.is_dir())[:alphabets]
    parts = [ImageFolderDataset.from_folder(d, image_size=side, channels=1) for d in dirs]
    labels, offset = [], 0
    for p in parts:
        labels.append(p.labels + offset)
        offset += len(p.classes)
    return ImageFolderDataset(torch.cat([p.images for p in parts]), torch.cat(labels), [f"c{i}" for i in range(offset)])


def config(precision: str, batch: int, steps: int, augment: bool) -> TrainConfig:
    """conv4 with batch-hard triplet loss for one timed epoch.

    Args:
        precision: "fp32" or "bf16" (bf16 also gets channels_last).
        batch: batch size.
        steps: steps of the epoch.
        augment: random affine augmentation.

    Returns:
        The config.
    """
    return TrainConfig(
        encoder="conv4", embedding_dim=None, loss="triplet", miner="batch_hard", batch_size=batch, m_per_class=4,
        epochs=1, steps_per_epoch=steps, val_fraction=0.0, patience=None, progress=False, augment=augment,
        fill=1.0, precision=precision, channels_last=precision == "bf16",
    )


def data_path_rate(ds: ImageFolderDataset, cfg: TrainConfig) -> float:
    """Images per second of ``siamkit.fit`` itself (the full data path).

    Args:
        ds: the training images.
        cfg: the config.

    Returns:
        Images per second of the epoch.
    """
    r = fit(ds.images, ds.labels, cfg)
    return float(r.history[-1]["images_per_s"])


def compute_bound_rate(ds: ImageFolderDataset, cfg: TrainConfig) -> float:
    """Images per second of the same step on one float batch already in memory.

    Args:
        ds: the images (the first batch is used).
        cfg: the config.

    Returns:
        Images per second.
    """
    torch.manual_seed(0)
    net = build_network(cfg, ds.images.shape[1:])
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    miner = BatchHardMiner(distance=net.distance)
    x = ds.images[: cfg.batch_size].float().div(255)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(cfg.batch_size // 4).repeat_interleave(4)
    net.train()

    def step() -> None:
        with autocast_context(cfg.precision):
            e = net.embed(x)
        e = e.float()
        loss = triplet_loss(e, miner.mine(e, y), distance=net.distance, margin=cfg.margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    steps = cfg.steps_per_epoch or 10
    for _ in range(steps):
        step()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def accuracy_check(steps: int) -> dict[str, dict[str, float]]:
    train = load("images_background", 28, None)
    test = load("images_evaluation", 28, None)
    out = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(
            encoder="conv4", embedding_dim=None, loss="triplet", miner="semi_hard", batch_size=128, m_per_class=4,
            epochs=1, steps_per_epoch=steps, val_fraction=0.0, patience=None, progress=False, augment=True, fill=1.0,
            precision=precision, channels_last=precision == "bf16", seed=0,
        )
        t0 = time.perf_counter()
        r = fit(train.images, train.labels, cfg)
        sec = time.perf_counter() - t0
        e = embed_all(r.network, test.images, precision="fp32")
        acc, ci = n_way_k_shot_accuracy(e, test.labels, n_way=20, k_shot=1, episodes=1000, seed=0)
        out[precision] = {"20way_1shot": acc, "ci95": ci, "train_seconds": sec, "steps": steps}
        print(precision, out[precision], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--accuracy-steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default); 1 is steadier on a shared machine")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    m = machine()
    m["load_avg_start"] = os.getloadavg()[0]
    rows = []
    for side, batch, steps, alphabets in ((28, 128, 60, None), (105, 64, 12, 6)):
        ds = load("images_background", side, alphabets)
        for precision in ("fp32", "bf16"):
            for augment in (False, True):
                cfg = config(precision, batch, steps, augment)
                bound = compute_bound_rate(ds, cfg)
                path = data_path_rate(ds, cfg)
                bound2 = compute_bound_rate(ds, cfg)  # bracket the data-path run: drift shows
                bound = (bound + bound2) / 2
                row = {"side": side, "batch": batch, "precision": precision, "augment": augment,
                       "data_path_img_s": path, "compute_bound_img_s": bound, "ratio": path / bound}
                rows.append(row)
                print(row, flush=True)
    m["load_avg_end"] = os.getloadavg()[0]
    out = {"machine": m, "rows": rows}
    body = (
        f"`python bench/bench_throughput.py{' --accuracy' if args.accuracy else ''}{f' --threads {args.threads}' if args.threads else ''}`. "
        f"{machine_line(m)} Load average {m['load_avg_start']:.1f} at the start, {m['load_avg_end']:.1f} at the end.\n\n"
        "conv4 (64 channels, batch-hard triplet, Adam) on real Omniglot images. *Data path* = `siamkit.fit` "
        "(sampling, uint8 indexing, float conversion, augmentation when on, forward, mining, loss, backward, step); "
        "*compute bound* = the same step on one float batch already in memory, measured before and after the "
        "data-path run and averaged. Goal: ratio >= 0.85.\n\n"
        "| input | batch | precision | augmentation | data path img/s | compute bound img/s | ratio |\n|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {r['side']}x{r['side']} | {r['batch']} | {r['precision']}{' + channels_last' if r['precision'] == 'bf16' else ''} | "
            f"{'random affine' if r['augment'] else 'none'} | {r['data_path_img_s']:.0f} | {r['compute_bound_img_s']:.0f} | {r['ratio']:.2f} |\n"
            for r in rows
        )
    )
    if args.accuracy:
        acc = accuracy_check(args.accuracy_steps)
        out["accuracy"] = acc
        body += (
            f"\nAccuracy check: conv4, semi-hard triplet, augmentation, batch 128, {args.accuracy_steps} steps on the 30 "
            "background alphabets at 28x28, then 20-way 1-shot on the 20 evaluation alphabets (1,000 episodes, fp32 "
            "inference):\n\n| precision | 20-way 1-shot | train time |\n|---|---|---|\n"
            + "".join(f"| {p} | {v['20way_1shot']:.4f} ± {v['ci95']:.4f} | {v['train_seconds']:.0f} s |\n" for p, v in acc.items())
        )
    write_json("throughput", out)
    replace_doc_section("Training throughput: data path vs compute bound", body)
    print(body)


if __name__ == "__main__":
    main()
