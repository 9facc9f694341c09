"""Performance suite, inference: images/s of conv4, resnet and koch embeddings through
eager torch fp32 (the reference), channels_last fp32, channels_last + bf16 autocast
(``siamkit.inference.embed_all(precision="bf16", channels_last=True)``), torch.compile
(inductor) and ONNX Runtime fp32 / int8 (``siamkit export``, :class:`OnnxVerifier`).

Every path embeds the same images in the same batches, the paths interleaved over
``--rounds`` rounds (median), all with the same thread count; each path's embeddings
are compared with eager fp32 (max abs difference of the final embeddings): a path is
numerically safe when that is <= 1e-4 (the export's fp32 tolerance). Weights are a fixed
random initialisation (speed does not depend on training; the int8 AUC loss of a
trained model is bench_export's, quoted in the table).

    flock TIMING_LOCK python bench/perf_inference.py [--models conv4,resnet,koch] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import traceback
from typing import Any, Callable

import numpy as np
import torch

from _common import machine, write_json
from siamkit import SiameseNetwork, create_encoder, save_model
from siamkit.export.runtime import OnnxVerifier
from siamkit.export.writer import export_onnx
from siamkit.inference import autocast_context

#: name -> (encoder kwargs, input shape, images, batch)
MODELS = {
    "conv4": (dict(in_channels=1, width=64, embedding_dim=64), (1, 28, 28), 2048, 128),
    "resnet": (dict(in_channels=3, embedding_dim=128), (3, 64, 64), 512, 64),
    "koch": (dict(in_channels=1), (1, 105, 105), 128, 32),
}
SAFE = 1e-4


def network(name: str) -> SiameseNetwork:
    """The model, eval mode, seed 0 (L2-normalised embeddings, cosine distance).

    Args:
        name: a key of :data:`MODELS`.

    Returns:
        The network.
    """
    kwargs, shape, _, _ = MODELS[name]
    torch.manual_seed(0)
    spec = {"shape": list(shape), "channels": shape[0], "height": shape[1], "width": shape[2]}
    return SiameseNetwork(create_encoder(name, **kwargs), distance="cosine", normalize=True, input_spec=spec).eval()


def torch_path(net: SiameseNetwork, *, channels_last: bool = False, precision: str = "fp32",
               compiled: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """An embedding function of one batch through torch.

    Args:
        net: the network (a copy is converted for channels_last).
        channels_last: weights and inputs in channels_last memory format.
        precision: ``fp32`` or ``bf16`` (autocast).
        compiled: ``torch.compile`` the embedding (inductor, default mode).

    Returns:
        batch (B, C, H, W) float32 -> (B, D) float32.
    """
    import copy

    model = copy.deepcopy(net)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fn: Callable[[torch.Tensor], torch.Tensor] = model.embed
    if compiled:
        fn = torch.compile(model.embed)

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast_context(precision):
            return fn(t).float().numpy()

    return run


def paths(net: SiameseNetwork, folder: str) -> dict[str, Callable[[np.ndarray], np.ndarray] | str]:
    """Every path; a path that cannot be built is its error message.

    Args:
        net: the network.
        folder: a scratch folder (model folder and export).

    Returns:
        name -> embedding function or error text.
    """
    out: dict[str, Any] = {
        "eager fp32": torch_path(net),
        "channels_last fp32": torch_path(net, channels_last=True),
        "channels_last bf16": torch_path(net, channels_last=True, precision="bf16"),
    }
    try:
        out["torch.compile fp32"] = torch_path(net, compiled=True)
    except Exception as e:  # noqa: BLE001 - reported in the table
        out["torch.compile fp32"] = f"{type(e).__name__}: {str(e)[:200]}"
    export = export_onnx(save_model(net, os.path.join(folder, "model")), os.path.join(folder, "export"), quantize="int8")
    for precision in ("fp32", "int8"):
        v = OnnxVerifier.from_dir(export, precision=precision, threads=torch.get_num_threads())
        out[f"ORT {precision}"] = v.embed
    return out


def measure(name: str, rounds: int) -> dict[str, Any]:
    """Images/s and max abs embedding difference of every path for one model.

    Args:
        name: a key of :data:`MODELS`.
        rounds: interleaved rounds (median).

    Returns:
        The model's rows.
    """
    _, shape, n, batch = MODELS[name]
    net = network(name)
    images = np.random.default_rng(0).random((n, *shape), dtype=np.float32)
    batches = [images[i : i + batch] for i in range(0, n, batch)]
    with tempfile.TemporaryDirectory() as tmp:
        fns = paths(net, tmp)
        ref = np.concatenate([fns["eager fp32"](b) for b in batches])  # type: ignore[operator]
        rows: dict[str, dict[str, Any]] = {}
        for p, fn in fns.items():
            if isinstance(fn, str):
                rows[p] = {"error": fn}
                continue
            t0 = time.perf_counter()
            try:
                emb = np.concatenate([fn(b) for b in batches])  # warm-up (compiles torch.compile)
            except Exception as e:  # noqa: BLE001 - e.g. no C++ compiler for inductor
                rows[p] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                traceback.print_exc()
                continue
            rows[p] = {"first_call_s": time.perf_counter() - t0, "max_abs_diff": float(np.abs(emb - ref).max()), "times": []}
        for _ in range(rounds):
            for p, fn in fns.items():
                if "times" not in rows[p]:
                    continue
                t0 = time.perf_counter()
                for b in batches:
                    fn(b)  # type: ignore[operator]
                rows[p]["times"].append(time.perf_counter() - t0)
    base = None
    for p, r in rows.items():
        if "times" in r:
            r["images_per_s"] = n / statistics.median(r["times"])
            r["safe"] = r["max_abs_diff"] <= SAFE
            base = base or r["images_per_s"]
            r["vs_eager"] = r["images_per_s"] / base
    safe = [p for p, r in rows.items() if r.get("safe")]
    return {"model": name, "input": list(shape), "images": n, "batch": batch, "rows": rows,
            "fastest_safe": max(safe, key=lambda p: rows[p]["images_per_s"]) if safe else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="conv4,resnet,koch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads (1: steadier on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    results = []
    for name in args.models.split(","):
        r = measure(name, args.rounds)
        results.append(r)
        for p, row in r["rows"].items():
            if "error" in row:
                print(f"{name:7s} {p:20s} error: {row['error']}")
            else:
                print(f"{name:7s} {p:20s} {row['images_per_s']:9.1f} img/s  x{row['vs_eager']:.2f}  diff {row['max_abs_diff']:.1e}")
    write_json("perf_inference", {"machine": machine(), "load_before": load0, "load_after": os.getloadavg(),
                                  "threads": args.threads, "rounds": args.rounds, "safe_max_abs_diff": SAFE, "models": results})


if __name__ == "__main__":
    main()
