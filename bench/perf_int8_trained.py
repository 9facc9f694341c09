"""Performance suite, int8 export of TRAINED models: eager torch fp32 vs ONNX Runtime fp32
vs the export's static int8 (``export_onnx(..., quantize="int8", calibration=...)``:
onnxruntime quant_pre_process + quantize_static, QDQ, per-channel QInt8 weights, QUInt8
activations), images/s at one thread and ROC AUC on evaluation-alphabet pairs.

Each model of :data:`perf_inference.MODELS` is trained briefly through the public API
(:func:`siamkit.fit`, MNR loss, cosine, L2-normalised) on the shipped compact
Omniglot background alphabets (resized to the model's input, grey replicated to 3
channels for resnet), exported by :func:`siamkit.export.writer.export_onnx` with 200
background images as calibration data, and opened with
:meth:`siamkit.export.runtime.OnnxVerifier.from_dir` (``precision="fp32"`` / ``"int8"``).
AUC: cosine distance of each path's own embeddings on random pairs of evaluation-alphabet
images (other alphabets than training and calibration). Goal per model: int8 >= 2x eager
fp32 images/s at <= 0.005 AUC loss.

    python bench/perf_int8_trained.py [--models conv4,resnet,koch] [--steps 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any, Callable

import numpy as np
import torch

from _common import machine, write_json
from perf_inference import MODELS
from siamkit import TrainConfig, fit, save_model
from siamkit.data.omniglot_compact import load_omniglot_compact
from siamkit.evaluation.metrics import verification_metrics
from siamkit.export.runtime import OnnxVerifier
from siamkit.export.writer import export_onnx
from siamkit.tuples import random_pairs

#: per model: (training classes, evaluation AUC images, batch size for training, learning rate);
#: Koch's sigmoid layer collapsed (all embeddings equal, AUC 0.5) at lr 1e-3
SIZES = {"conv4": (964, 2400, 64, 1e-3), "resnet": (300, 1200, 32, 1e-3), "koch": (200, 600, 32, 1e-4)}


def _images(split: str, shape: tuple[int, ...], classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``classes`` characters of a compact-Omniglot split, uint8, at the model's input."""
    ds = load_omniglot_compact(split)
    keep = torch.isin(ds.labels, torch.unique(ds.labels)[:classes])
    x = ds.images[keep]
    if tuple(x.shape[1:]) != tuple(shape):
        x = torch.nn.functional.interpolate(x.float(), size=(shape[1], shape[2]), mode="bilinear", antialias=True,
                                            align_corners=False).round().clamp(0, 255).to(torch.uint8)
        if shape[0] == 3:
            x = x.repeat(1, 3, 1, 1)
    return x.contiguous(), ds.labels[keep]


def measure(name: str, steps: int, rounds: int, pairs: int) -> dict[str, Any]:
    kwargs, shape, n, batch = MODELS[name]
    classes, auc_images, train_batch, lr = SIZES[name]
    kw = {k: v for k, v in kwargs.items() if k not in ("in_channels", "embedding_dim")}
    cfg = TrainConfig(encoder=name, encoder_kwargs=kw, embedding_dim=kwargs.get("embedding_dim", 64), normalize=True,
                      distance="cosine", loss="mnr", miner=None, batch_size=train_batch,
                      m_per_class=4, epochs=1, steps_per_epoch=steps, lr=lr, schedule="none", val_fraction=0.0,
                      patience=None, seed=0, progress=False)
    tx, ty = _images("background", shape, classes)
    t0 = time.perf_counter()
    net = fit(tx, ty, cfg).network.eval()
    train_s = time.perf_counter() - t0
    cal = tx[np.random.default_rng(1).permutation(len(tx))[:200]].numpy()
    ex, ey = _images("evaluation", shape, 659)
    sel = np.sort(np.random.default_rng(2).permutation(len(ex))[:auc_images])
    x, y = ex[sel].numpy(), ey[sel]
    p = random_pairs(y, pairs, torch.Generator().manual_seed(0))
    a, b, same = p.a.numpy(), p.b.numpy(), p.same.numpy()
    timed = x[:n].astype(np.float32) / np.float32(255.0)
    batches = [timed[i: i + batch] for i in range(0, len(timed), batch)]
    with tempfile.TemporaryDirectory() as tmp:
        model = save_model(net, os.path.join(tmp, "model"))
        t0 = time.perf_counter()
        out = export_onnx(model, os.path.join(tmp, "export"), quantize="int8", calibration=cal)
        export_s = time.perf_counter() - t0
        v32 = OnnxVerifier.from_dir(out, precision="fp32", threads=1)
        v8 = OnnxVerifier.from_dir(out, precision="int8", threads=1)

        def eager(bt: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net.embed(torch.from_numpy(bt)).numpy()

        fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {"eager fp32": eager, "ORT fp32": v32.embed,
                                                              "ORT int8 static": v8.embed}
        rows: dict[str, dict[str, Any]] = {}
        ref = None
        for k, f in fns.items():
            e = np.concatenate([f(x[i: i + batch].astype(np.float32) / np.float32(255.0)) for i in range(0, len(x), batch)])
            ref = e if ref is None else ref
            d = 1.0 - (e[a] * e[b]).sum(1)
            rows[k] = {"roc_auc": float(verification_metrics(d, same).roc_auc),
                       "max_abs_diff_vs_eager": float(np.abs(e - ref).max()), "times": []}
        for _ in range(rounds):
            for k, f in fns.items():
                t0 = time.perf_counter()
                for bt in batches:
                    f(bt)
                rows[k]["times"].append(time.perf_counter() - t0)
    base = len(timed) / statistics.median(rows["eager fp32"]["times"])
    for r in rows.values():
        r["images_per_s"] = len(timed) / statistics.median(r["times"])
        r["vs_eager"] = r["images_per_s"] / base
        r["auc_loss_vs_eager"] = rows["eager fp32"]["roc_auc"] - r["roc_auc"]
    i8 = rows["ORT int8 static"]
    return {"model": name, "input": list(shape), "train_steps": steps, "train_batch": train_batch,
            "train_classes": classes, "lr": lr, "train_s": train_s, "export_s": export_s, "calibration_images": len(cal),
            "timed_images": len(timed), "batch": batch, "auc_images": len(x), "pairs": pairs,
            "goal_met": bool(i8["vs_eager"] >= 2.0 and i8["auc_loss_vs_eager"] <= 0.005 and rows["eager fp32"]["roc_auc"] > 0.6), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="conv4,resnet,koch")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=4000)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    results = []
    for name in args.models.split(","):
        r = measure(name, args.steps, args.rounds, args.pairs)
        results.append(r)
        print(f"{name}: trained {r['train_s']:.0f}s, export {r['export_s']:.1f}s, goal met: {r['goal_met']}", flush=True)
        for k, row in r["rows"].items():
            print(f"  {k:16s} {row['images_per_s']:8.1f} img/s x{row['vs_eager']:5.2f} AUC {row['roc_auc']:.4f} "
                  f"(loss {row['auc_loss_vs_eager']:+.4f}) diff {row['max_abs_diff_vs_eager']:.1e}", flush=True)
    write_json("perf_int8_trained", {"machine": machine(), "load_before": load0, "load_after": os.getloadavg(),
                                     "threads": 1, "rounds": args.rounds, "note": args.note,
                                     "goal": "int8 >= 2x eager fp32 images/s at <= 0.005 ROC AUC loss",
                                     "models": results})


if __name__ == "__main__":
    main()
