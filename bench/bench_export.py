"""ONNX export: images/s of eager torch fp32 vs ONNX Runtime fp32 vs int8, and the ROC AUC
cost of int8, on one small trained model.

conv4 (width 64, 64-d L2-normalised embedding, batch-hard triplet) trained for a fixed
number of steps with ``siamkit.fit`` on Omniglot background at 28x28, saved, exported
with ``siamkit.export.writer.export_onnx(..., quantize="int8")`` (onnxruntime dynamic
quantization). Throughput: the same 2,048 evaluation-alphabet images, batches of 128,
1 thread everywhere (torch.set_num_threads(1), onnxruntime intra_op_num_threads=1), the
three runtimes interleaved over several rounds (median reported). AUC: 20,000 random
pairs (half genuine) of the 20 evaluation alphabets (unseen characters), each runtime's
own distances.

    python bench/bench_export.py [--steps 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from _common import SHARED_DATA, machine, machine_line, replace_doc_section, write_json
from siamkit import TrainConfig, fit, save_model
from siamkit.data import load_omniglot
from siamkit.data.images import to_float
from siamkit.evaluation.metrics import verification_metrics
from siamkit.export.runtime import OnnxVerifier
from siamkit.export.writer import export_onnx
from siamkit.tuples import random_pairs

OMNIGLOT = SHARED_DATA / "omniglot"
BATCH = 128


def rate(embed: Callable[[np.ndarray], Any], images: np.ndarray) -> float:
    """Images per second of ``embed`` over ``images`` in batches of :data:`BATCH`.

    Args:
        embed: uint8 batch -> embeddings.
        images: uint8 (N, C, H, W).

    Returns:
        N / seconds.
    """
    t = time.perf_counter()
    for i in range(0, len(images), BATCH):
        embed(images[i : i + BATCH])
    return len(images) / (time.perf_counter() - t)


def embed_all(embed: Callable[[np.ndarray], Any], images: np.ndarray) -> np.ndarray:
    """Every image's embedding, in batches.

    Args:
        embed: uint8 batch -> embeddings.
        images: uint8 (N, C, H, W).

    Returns:
        (N, D) float32.
    """
    return np.concatenate([np.asarray(embed(images[i : i + BATCH])) for i in range(0, len(images), BATCH)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200, help="training steps (batches of 64)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    m = machine()
    m["load_avg_start"] = os.getloadavg()[0]
    t0 = time.perf_counter()
    train = load_omniglot(OMNIGLOT, "background", image_size=28)
    test = load_omniglot(OMNIGLOT, "evaluation", image_size=28)
    cfg = TrainConfig(
        precision="fp32", encoder="conv4", embedding_dim=64, normalize=True, loss="triplet", miner="batch_hard",
        margin=0.2, batch_size=64, m_per_class=4, lr=1e-3, schedule="cosine", epochs=1, steps_per_epoch=args.steps,
        val_fraction=0.0, patience=None, seed=0, progress=False,
    )
    net = fit(train.images, train.labels, cfg).network.eval()
    train_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_model(net, Path(tmp) / "model")
        t1 = time.perf_counter()
        out = export_onnx(model_dir, Path(tmp) / "export", quantize="int8")
        export_s = time.perf_counter() - t1
        sizes = {p.name: p.stat().st_size for p in out.iterdir()}
        v32 = OnnxVerifier.from_dir(out, precision="fp32", threads=1)
        v8 = OnnxVerifier.from_dir(out, precision="int8", threads=1)

        def torch_embed(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return net.embed(to_float(torch.from_numpy(x))).numpy()

        runtimes = {"torch_fp32": torch_embed, "onnx_fp32": v32.embed, "onnx_int8": v8.embed}
        imgs = test.images.numpy()
        bench_imgs = imgs[np.random.default_rng(0).permutation(len(imgs))[:2048]]
        for f in runtimes.values():  # warm up
            f(bench_imgs[:BATCH])
        rates: dict[str, list[float]] = {k: [] for k in runtimes}
        for _ in range(args.rounds):
            for k, f in runtimes.items():
                rates[k].append(rate(f, bench_imgs))
        pairs = random_pairs(test.labels, 20_000, torch.Generator().manual_seed(0))
        a, b, same = pairs.a.numpy(), pairs.b.numpy(), pairs.same.numpy()
        aucs, max_diff = {}, {}
        ref = None
        for k, f in runtimes.items():
            e = embed_all(f, imgs)
            if ref is None:
                ref = e
            max_diff[k] = float(np.abs(e - ref).max())
            d = v32.embedding_distance(e[a], e[b]) if k != "torch_fp32" else net.embedding_distance(
                torch.from_numpy(e[a]), torch.from_numpy(e[b])).numpy()
            aucs[k] = verification_metrics(d, same).roc_auc
    m["load_avg_end"] = os.getloadavg()[0]
    med = {k: statistics.median(v) for k, v in rates.items()}
    res = {
        "machine": m, "steps": args.steps, "train_s": train_s, "export_s": export_s, "file_bytes": sizes,
        "images_per_s": rates, "images_per_s_median": med, "roc_auc": aucs,
        "auc_drop_int8": aucs["onnx_fp32"] - aucs["onnx_int8"], "max_abs_embedding_diff_vs_torch": max_diff,
        "pairs": int(len(same)), "bench_images": int(len(bench_imgs)), "batch": BATCH,
        "total_s": time.perf_counter() - t0,
    }
    write_json("export", res)
    print(res, flush=True)
    names = {"torch_fp32": "eager torch fp32", "onnx_fp32": "ONNX Runtime fp32", "onnx_int8": "ONNX Runtime int8 (dynamic)"}
    files = {"torch_fp32": "model.safetensors (not measured)", "onnx_fp32": "model.onnx", "onnx_int8": "model.int8.onnx"}
    body = (
        f"`python bench/bench_export.py --steps {args.steps}`. {machine_line(m)} onnxruntime, 1 thread for every "
        f"runtime. Load average {m['load_avg_start']:.1f} at the start, {m['load_avg_end']:.1f} at the end; "
        f"{res['total_s']:.0f} s in all (training {train_s:.0f} s, export {export_s:.1f} s).\n\n"
        f"conv4 (64 channels, 64-d L2-normalised, batch-hard triplet, {args.steps} steps of 64) trained with "
        "`siamkit.fit` on Omniglot background at 28x28, exported with `siamkit export --quantize int8` "
        "(onnxruntime `quantize_dynamic`, uint8 weights). Throughput: the same "
        f"{len(bench_imgs)} evaluation-alphabet images in batches of {BATCH}, the three runtimes interleaved over "
        f"{args.rounds} rounds (median, min-max). ROC AUC: {len(same):,} random pairs (half genuine) of the 20 "
        "evaluation alphabets, each runtime's own embeddings.\n\n"
        "| runtime | images/s (median) | min-max | ROC AUC | max abs embedding diff vs torch | file |\n|---|---|---|---|---|---|\n"
        + "".join(
            f"| {names[k]} | {med[k]:.0f} | {min(rates[k]):.0f}-{max(rates[k]):.0f} | {aucs[k]:.4f} | "
            f"{max_diff[k]:.1e} | {files[k]}{'' if k == 'torch_fp32' else f' ({sizes[files[k]] / 1e3:.0f} kB)'} |\n"
            for k in runtimes
        )
        + f"\nAUC drop fp32 -> int8: {res['auc_drop_int8']:+.4f}.\n"
    )
    replace_doc_section("ONNX export: torch vs ONNX Runtime fp32 vs int8", body)


if __name__ == "__main__":
    main()
