"""Load test of the HTTP service on loopback, next to the library call in the same run.

A real ``siamkit serve`` process (uvicorn, one worker, ``--torch-threads 1``,
``--max-inference 2``) on 127.0.0.1 with a conv4 model (28x28 grey, 64-d embedding,
calibrated on synthetic distances: the timing does not depend on the weights) and a
gallery of ``--identities`` enrolled identities (2 samples each). Requests carry real
Omniglot PNGs (105x105, resized by the service). The load generator is an asyncio +
httpx client with a bounded number of requests at concurrency 1, 8 and 32 (it runs on
the same machine, so it takes CPU from the server: the numbers are a lower bound).

For each endpoint (``POST /v1/verify``, ``POST /v1/identify``) and concurrency:
requests/s, p50 / p99 latency, errors (goal: zero), and the ratio to the library's own
throughput measured in the same run: ``decode_image`` of the same bytes + the same
``Verifier.verify`` / ``Gallery.identify`` call in one thread (torch 1 thread).

    python bench/bench_service_load.py [--requests 400] [--identities 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from _common import SHARED_DATA, machine, machine_line, replace_doc_section, write_json

import siamkit
from siamkit.calibration import Calibrator
from siamkit.gallery import Gallery
from siamkit.service import KeyStore, Limits
from siamkit.network import InputSpec
from siamkit.service.images import decode_image
from siamkit.verify import Verifier

HOST = "127.0.0.1"


def omniglot_pngs(n: int) -> list[bytes]:
    files = sorted((SHARED_DATA / "omniglot" / "images_evaluation").rglob("*.png"))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(files), size=min(n, len(files)), replace=False)
    return [files[i].read_bytes() for i in pick]


def build(root: Path, n_identities: int, images: list[bytes]) -> tuple[Path, Path, str]:
    torch.manual_seed(0)
    spec = {"shape": [1, 28, 28], "channels": 1, "height": 28, "width": 28}
    net = siamkit.SiameseNetwork(siamkit.create_encoder("conv4", in_channels=1, embedding_dim=64), normalize=True, input_spec=spec)
    model = siamkit.save_model(net, root / "model")
    rng = np.random.default_rng(0)
    d = np.r_[rng.uniform(0, 0.6, 200), rng.uniform(0.4, 1.4, 200)]
    Calibrator().fit(d, np.r_[np.ones(200, bool), np.zeros(200, bool)], model_fingerprint=net.fingerprint).save(model)
    ks = KeyStore()
    key = ks.add("bench", "admin")
    ks.save(root / "keys.json")
    ispec = InputSpec.for_sample((1, 28, 28))
    with Gallery.open(root / "gallery.db", Verifier.from_dir(model)) as g:
        for i in range(n_identities):
            x = torch.stack([decode_image(images[(2 * i) % len(images)], ispec, Limits()), decode_image(images[(2 * i + 1) % len(images)], ispec, Limits())])
            g.enroll(f"id{i:05d}", x)
    return model, root / "gallery.db", key


def library_rates(model: Path, gallery: Path, images: list[bytes], seconds: float = 4.0) -> dict[str, float]:
    torch.set_num_threads(1)
    v = Verifier.from_dir(model)
    spec = InputSpec.for_sample((1, 28, 28))
    out = {}
    with Gallery.open(gallery, v, create=False) as g:
        g.identify(decode_image(images[0], spec, Limits())[None])  # build the index
        for name, call in [
            ("verify", lambda i: v.verify(decode_image(images[i % len(images)], spec, Limits()), decode_image(images[(i + 1) % len(images)], spec, Limits()))),
            ("identify", lambda i: g.identify(decode_image(images[i % len(images)], spec, Limits())[None], k=5)),
        ]:
            for i in range(10):
                call(i)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                call(n)
                n += 1
            out[name] = n / (time.perf_counter() - t0)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(model: Path, keys: Path, gallery: Path | None, extra: Sequence[str] = (), stderr: Any = subprocess.PIPE) -> tuple[subprocess.Popen, str]:
    """Start ``siamkit serve`` (torch 1 thread, 2 inference jobs) on a free loopback port and
    wait for ``/healthz``; (the process, its base URL). ``extra``: more ``serve`` options;
    ``gallery`` None: no gallery (e.g. ``--runtime onnx``)."""
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "siamkit.cli", "serve", "--model", str(model), "--keys", str(keys), *(["--gallery", str(gallery)] if gallery else []),
         "--port", str(port), "--torch-threads", "1", "--max-inference", "2", "--log-level", "warning", *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=stderr,
    )
    url = f"http://{HOST}:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start")


async def load(url: str, endpoint: str, key: str, images: list[bytes], concurrency: int, n_requests: int) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    errors = 0
    counter = iter(range(n_requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits, headers={"X-API-Key": key}) as client:

        async def one(i: int) -> None:
            nonlocal errors
            a, b = images[i % len(images)], images[(i + 7) % len(images)]
            files = {"image_a": ("a.png", a, "image/png"), "image_b": ("b.png", b, "image/png")} if endpoint == "verify" else {"image": ("p.png", a, "image/png")}
            t = time.perf_counter()
            try:
                r = await client.post(f"/v1/{endpoint}", files=files)
                if r.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            lat.append(time.perf_counter() - t)

        async def worker() -> None:
            for i in counter:
                await one(i)

        for i in range(min(10, n_requests)):  # warm-up, not timed
            await one(i)
        lat.clear()
        errors = 0
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    a = np.asarray(lat) * 1000
    return {
        "endpoint": endpoint, "concurrency": concurrency, "requests": len(lat), "errors": errors,
        "rps": len(lat) / wall, "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=400, help="requests per (endpoint, concurrency)")
    ap.add_argument("--identities", type=int, default=200)
    ap.add_argument("--concurrency", default="1,8,32")
    args = ap.parse_args()
    m = machine()
    m["load_avg_start"] = os.getloadavg()[0]
    images = omniglot_pngs(256)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, gallery, key = build(root, args.identities, images)
        lib = library_rates(model, gallery, images)
        proc, url = start_server(model, root / "keys.json", gallery)
        try:
            rows = []
            for endpoint in ("verify", "identify"):
                for c in (int(x) for x in args.concurrency.split(",")):
                    r = asyncio.run(load(url, endpoint, key, images, c, args.requests))
                    r["library_rps"] = lib[endpoint]
                    r["ratio"] = r["rps"] / lib[endpoint]
                    rows.append(r)
                    print(r, flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    m["load_avg_end"] = os.getloadavg()[0]
    out = {"machine": m, "identities": args.identities, "library_rps": lib, "rows": rows}
    write_json("service_load", out)
    body = (
        f"`python bench/bench_service_load.py --requests {args.requests} --identities {args.identities}`. {machine_line(m)} "
        f"Load average {m['load_avg_start']:.1f} at the start, {m['load_avg_end']:.1f} at the end (the machine was shared).\n\n"
        "`siamkit serve` (uvicorn, 1 worker, torch 1 thread, 2 concurrent inference jobs) on 127.0.0.1; conv4, 28x28 grey, "
        f"64-d; gallery of {args.identities} identities x 2 samples (exact search); real Omniglot PNGs (105x105, resized by "
        "the service). Client: asyncio + httpx on the same machine (it competes for the 2 cores). *Library* = "
        "`decode_image` of the same bytes + `Verifier.verify` / `Gallery.identify` in one thread, same run. "
        "*Ratio* = service requests/s / library calls/s.\n\n"
        "| endpoint | concurrency | requests | errors | requests/s | p50 ms | p99 ms | library calls/s | ratio |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {r['endpoint']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['library_rps']:.0f} | {r['ratio']:.2f} |\n"
            for r in rows
        )
    )
    replace_doc_section("HTTP service load", body)
    print(body)


if __name__ == "__main__":
    main()
