"""Performance suite, service: ``POST /v1/verify`` over HTTP at concurrency 32 vs the
library call in the same run, for the torch runtime and ``--runtime onnx`` (fp32).

A real ``siamkit serve`` process per runtime (bench_service_load's: uvicorn, 1 worker,
torch 1 thread, ``--max-inference 2``, rate limits off, no gallery) on 127.0.0.1, conv4
28x28 grey 64-d, calibrated; real Omniglot PNGs (105x105, resized by the service); an
asyncio + httpx client on the same machine. *Library* = ``decode_image`` of the same
bytes + ``Verifier.verify`` (torch, 1 thread) or ``OnnxVerifier.verify`` (1 thread) in
one thread. Ratio = HTTP requests/s / library calls/s. Goal: 0 errors at concurrency 32.

``--py-spy PATH`` samples the torch server with py-spy during a second load run and
records the functions where it spends its time (self samples).

    flock TIMING_LOCK python bench/perf_service.py [--requests 400] [--py-spy PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _common import machine, write_json
from bench_service_load import build, load, omniglot_pngs, start_server
from siamkit.export.runtime import OnnxVerifier
from siamkit.export.writer import export_onnx
from siamkit.network import InputSpec
from siamkit.service import Limits, decode_image
from siamkit.verify import Verifier

SERVE = ["--rate-per-key", "0", "--rate-per-client", "0", "--auth-rate", "0"]


def library_rate(verify: Any, images: list[bytes], seconds: float = 4.0) -> float:
    """Calls/s of decode + verify of a pair in one thread.

    Args:
        verify: ``verify(a, b)`` of two decoded uint8 (C, H, W) tensors.
        images: PNG bytes.
        seconds: how long to measure.

    Returns:
        Calls per second.
    """
    spec = InputSpec.for_sample((1, 28, 28))

    def call(i: int) -> Any:
        a = decode_image(images[i % len(images)], spec, Limits())
        b = decode_image(images[(i + 7) % len(images)], spec, Limits())
        return verify(a, b)

    for i in range(10):
        call(i)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        call(n)
        n += 1
    return n / (time.perf_counter() - t0)


def spy(pid: int, py_spy: str, seconds: int, out: Path) -> list[dict[str, Any]]:
    """Top self-time functions of a process, from ``py-spy record --format raw``.

    Args:
        pid: the process.
        py_spy: the py-spy executable.
        seconds: sampling time.
        out: the raw (collapsed stacks) file.

    Returns:
        The 10 functions with the most self samples and their share.
    """
    subprocess.run([py_spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "100", "-f", "raw", "-o", str(out),
                    "--threads", "--nonblocking"], check=False, capture_output=True, timeout=seconds + 60)
    if not out.exists():
        return []
    leaves: collections.Counter[str] = collections.Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            leaves[stack.split(";")[-1]] += int(count)
    total = sum(leaves.values()) or 1
    return [{"function": f, "share": n / total} for f, n in leaves.most_common(10)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--py-spy", default=None, help="py-spy executable: profile the torch server")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    images = omniglot_pngs(256)
    rows, profile = [], None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, _, key = build(root, 1, images)
        export = export_onnx(model, root / "export")
        tv, ov = Verifier.from_dir(model), OnnxVerifier.from_dir(export, threads=1)
        lib = {"torch": library_rate(tv.verify, images),
               "onnx": library_rate(lambda a, b: ov.verify(a.numpy(), b.numpy()), images)}
        for runtime, folder in (("torch", model), ("onnx", export)):
            proc, url = start_server(folder, root / "keys.json", None, [*SERVE, "--runtime", runtime])
            try:
                r = asyncio.run(load(url, "verify", key, images, args.concurrency, args.requests))
                r.update(runtime=runtime, library_rps=lib[runtime], ratio=r["rps"] / lib[runtime])
                rows.append(r)
                print(r, flush=True)
                if args.py_spy and runtime == "torch":
                    task = asyncio.new_event_loop()
                    fut = task.run_in_executor(None, spy, proc.pid, args.py_spy, 8, root / "spy.txt")
                    task.run_until_complete(load(url, "verify", key, images, args.concurrency, args.requests))
                    profile = task.run_until_complete(fut)
                    task.close()
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    write_json("perf_service", {"machine": machine(), "load_before": load0, "load_after": os.getloadavg(),
                                "requests": args.requests, "library_rps": lib, "rows": rows, "py_spy_top": profile})


if __name__ == "__main__":
    main()
