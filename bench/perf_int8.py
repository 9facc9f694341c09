"""Performance suite, int8 inference for resnet and koch: eager torch fp32 (the reference)
vs ONNX Runtime fp32, the export's dynamic int8 (``siamkit export --quantize int8``) and
static int8 with calibration images (``onnxruntime.quantization.quantize_static`` after
``quant_pre_process``; per-channel int8 weights, uint8 activations; QDQ and QOperator
formats), all at the same intra-op thread count, graph optimisation ORT_ENABLE_ALL.

Images: the shipped 28x28 Omniglot resized to the model's input (grey replicated to 3
channels for resnet); calibration on background-alphabet images, timing
and accuracy on evaluation-alphabet images (other alphabets). Accuracy: each path's ROC
AUC on random pairs of the evaluation images (cosine distance of its own embeddings),
and the max abs embedding difference vs eager. The networks are the suite's fixed random
initialisations (:func:`perf_inference.network`), so the AUC difference measures the
quantisation noise on real images, not a trained model's AUC loss.

    flock TIMING_LOCK python bench/perf_int8.py [--models resnet,koch] [--rounds 3]

Status: prepared, not yet run end to end (the session that wrote it had the machine
starved by other jobs). Its exploratory predecessor (same quantisation calls, random
images, 1 thread, not under the timing lock) gave resnet static uint8-activation int8
7.5x (QDQ) / 8.1x (QOperator) eager fp32 against 2.1x for the export's dynamic int8;
koch did not finish. No figure from it is in the docs.
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
from perf_inference import MODELS, network
from siamkit import save_model
from siamkit.data.omniglot_compact import load_omniglot_compact
from siamkit.evaluation.metrics import verification_metrics
from siamkit.export.writer import export_onnx
from siamkit.tuples import random_pairs



def _images(split: str, shape: tuple[int, ...], alphabets: int) -> tuple[np.ndarray, np.ndarray]:
    """The shipped 28x28 Omniglot (first ``alphabets`` of the split), resized bilinearly
    to the model's input (decoding the 105x105 PNGs took minutes on the loaded machine)."""
    ds = load_omniglot_compact(split)
    keep = torch.isin(ds.labels, torch.unique(ds.labels)[: 40 * alphabets])  # ~ 40 characters per alphabet
    x = ds.images[keep].float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(shape[1], shape[2]), mode="bilinear", antialias=True, align_corners=False)
    if shape[0] == 3:
        x = x.repeat(1, 3, 1, 1)
    return np.ascontiguousarray(x.numpy()), ds.labels[keep].numpy()


def _session(path: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return lambda b: s.run(None, {"input": b})[0]


def _static(pre: str, out: str, calibration: list[np.ndarray], fmt: str) -> str:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": b} for b in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(pre, out, Reader(), quant_format=getattr(QuantFormat, fmt), per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def _paths(net: Any, folder: str, calibration: list[np.ndarray], threads: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    from onnxruntime.quantization import quant_pre_process

    export = export_onnx(save_model(net, os.path.join(folder, "model")), os.path.join(folder, "export"), quantize="int8")
    pre = os.path.join(folder, "pre.onnx")
    quant_pre_process(str(export / "model.onnx"), pre)

    def eager(b: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net.embed(torch.from_numpy(b)).numpy()

    return {
        "eager fp32": eager,
        "ORT fp32": _session(str(export / "model.onnx"), threads),
        "ORT int8 dynamic (export)": _session(str(export / "model.int8.onnx"), threads),
        "ORT int8 static QDQ": _session(_static(pre, os.path.join(folder, "qdq.onnx"), calibration, "QDQ"), threads),
        "ORT int8 static QOperator": _session(_static(pre, os.path.join(folder, "qop.onnx"), calibration, "QOperator"), threads),
    }


def measure(name: str, rounds: int, threads: int, pairs: int) -> dict[str, Any]:
    """Every path's images/s (interleaved rounds, median), AUC and max abs difference.

    Args:
        name: resnet or koch (a key of perf_inference.MODELS).
        rounds: timing rounds.
        threads: torch and onnxruntime intra-op threads.
        pairs: evaluation pairs for the AUC.

    Returns:
        The model's rows.
    """
    _, shape, n, batch = MODELS[name]
    net = network(name)
    cal_x, _ = _images("background", shape, 2)
    cal = [cal_x[i : i + batch] for i in np.random.default_rng(1).permutation(len(cal_x) - batch)[:8]]
    x, y = _images("evaluation", shape, 3)
    timed = x[np.random.default_rng(0).permutation(len(x))[:n]]
    batches = [timed[i : i + batch] for i in range(0, n, batch)]
    p = random_pairs(torch.from_numpy(y), pairs, torch.Generator().manual_seed(0))
    a, b, same = p.a.numpy(), p.b.numpy(), p.same.numpy()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fns = _paths(net, tmp, cal, threads)
        ref = None
        for k, f in fns.items():
            e = np.concatenate([f(x[i : i + batch]) for i in range(0, len(x), batch)])
            ref = e if ref is None else ref
            d = 1.0 - (e[a] * e[b]).sum(1)  # unit-norm embeddings: cosine distance
            rows[k] = {"max_abs_diff": float(np.abs(e - ref).max()), "roc_auc": float(verification_metrics(d, same).roc_auc),
                       "times": []}
        for _ in range(rounds):
            for k, f in fns.items():
                t0 = time.perf_counter()
                for bt in batches:
                    f(bt)
                rows[k]["times"].append(time.perf_counter() - t0)
    base = n / statistics.median(rows["eager fp32"]["times"])
    for k, r in rows.items():
        r["images_per_s"] = n / statistics.median(r["times"])
        r["vs_eager"] = r["images_per_s"] / base
        r["auc_loss_vs_eager"] = rows["eager fp32"]["roc_auc"] - r["roc_auc"]
    return {"model": name, "input": list(shape), "images": n, "batch": batch, "auc_images": int(len(x)), "pairs": pairs,
            "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet,koch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=4000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    results = []
    for name in args.models.split(","):
        r = measure(name, args.rounds, args.threads, args.pairs)
        results.append(r)
        for k, row in r["rows"].items():
            print(f"{name:7s} {k:28s} {row['images_per_s']:8.1f} img/s x{row['vs_eager']:.2f} AUC {row['roc_auc']:.4f} "
                  f"(loss {row['auc_loss_vs_eager']:+.4f}) diff {row['max_abs_diff']:.1e}", flush=True)
    write_json("perf_int8", {"machine": machine(), "load_before": load0, "load_after": os.getloadavg(),
                             "threads": args.threads, "rounds": args.rounds, "models": results})


if __name__ == "__main__":
    main()
