"""Soak test of the HTTP service: ``--minutes`` of mixed traffic at concurrency 32
against a real ``siamkit serve`` on loopback; errors and memory, not latency.

Set-up (the pieces of ``bench_service_load.py``): a conv4 model (28x28 grey, 64-d),
a gallery of ``--identities`` identities (2 samples each, enrolled through the
library), an admin key and a read key, real Omniglot PNGs. The server runs with its
default hardening on (timeouts, connection cap, rate limiter) except that the rate
limits are raised far above what one client reaches, so that the traffic is served,
not answered 429.

Traffic: ``--concurrency`` asyncio workers on one httpx client (the load generator of
``bench_service_load.py``: it is already a test dependency and, unlike wrk's Lua, it
sees every response, which the integrity check needs: which enrolments and deletions
were acknowledged), each drawing its next request at random: verify, identify, get and
list identities, enrol (1-2 images, a unique name), delete (the worker's oldest
enrolment), feedback (JSON, base64 images) and bad requests (truncated / garbage /
mislabelled images, bad JSON, a real key id with a wrong secret, an unknown key id, no
key, a read key enrolling). Each kind has the statuses it should get; anything else is
*unexpected*, a 5xx is a failure.

Measured: the server's RSS (``/proc/PID/status``), open file descriptors and threads
every ``--sample-seconds``; responses by kind and status; transport errors. At the end
(server stopped with SIGTERM): every acknowledged enrolment is in the gallery with its
samples, every acknowledged deletion is gone, every acknowledged feedback is stored,
and ``PRAGMA integrity_check`` is ``ok`` on both SQLite files.

    nice -n 15 python bench/bench_soak.py [--minutes 30] [--concurrency 32] [--identities 300]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from _common import machine, machine_line, replace_doc_section, write_json
from bench_service_load import build, omniglot_pngs, start_server

from siamkit.feedback import FeedbackStore
from siamkit.gallery import Gallery
from siamkit.service import KeyStore
from siamkit.verify import Verifier

EXPECTED: dict[str, set[int]] = {
    "verify": {200}, "identify": {200}, "get": {200}, "list": {200}, "enrol": {201}, "delete": {200},
    "feedback": {201}, "bad_image": {400, 413, 415, 422}, "bad_json": {400, 422}, "wrong_secret": {401, 429},
    "unknown_key": {401, 429}, "no_key": {401}, "read_enrol": {403},
}
WEIGHTS = {
    "verify": 24, "identify": 24, "get": 5, "list": 3, "enrol": 9, "delete": 9, "feedback": 4,
    "bad_image": 7, "bad_json": 4, "wrong_secret": 4, "unknown_key": 3, "no_key": 2, "read_enrol": 2,
}


def ensure_httpx() -> Any:
    """httpx, installed with pip into this interpreter if missing."""
    try:
        return importlib.import_module("httpx")
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "httpx>=0.27"])
        return importlib.import_module("httpx")


def bad_images(images: list[bytes]) -> list[tuple[bytes, str]]:
    """Malformed uploads: truncated PNG, PNG magic + garbage, text labelled PNG, empty, huge header."""
    rng = random.Random(1)
    png = images[0]
    huge = bytearray(png[:33])
    huge[16:24] = (60000).to_bytes(4, "big") * 2  # IHDR 60000 x 60000: refused before decoding
    return [(png[:100], "image/png"), (b"\x89PNG\r\n\x1a\n" + rng.randbytes(500), "image/png"),
            (b"not an image at all", "image/png"), (b"", "image/png"), (bytes(huge), "image/png"),
            (rng.randbytes(2000), "application/octet-stream")]


class Traffic:
    """The workers' shared bookkeeping: statuses, latencies, acknowledged writes."""

    def __init__(self, images: list[bytes], admin: str, reader: str, n_base: int, seed: int) -> None:
        self.images, self.admin, self.reader, self.n_base = images, admin, reader, n_base
        self.real_id = admin.split("_")[1]
        self.bad = bad_images(images)
        self.seed = seed
        self.status: dict[str, Counter[str]] = defaultdict(Counter)
        self.unexpected: list[dict[str, Any]] = []
        self.latency_ms: list[float] = []
        self.enrolled: dict[str, int] = {}  # acknowledged enrolments: name -> samples
        self.deleted: set[str] = set()
        self.uncertain: set[str] = set()  # a write whose answer was lost (transport error)
        self.feedback_ids: list[int] = []
        self.per_window: Counter[int] = Counter()
        self.fivexx_per_window: Counter[int] = Counter()
        self.t0 = time.monotonic()

    def record(self, kind: str, status: int | str, body: str = "") -> None:
        self.status[kind][str(status)] += 1
        window = int((time.monotonic() - self.t0) // 60)
        self.per_window[window] += 1
        if isinstance(status, int) and status >= 500:
            self.fivexx_per_window[window] += 1
        if not (isinstance(status, int) and status in EXPECTED[kind]) and len(self.unexpected) < 50:
            self.unexpected.append({"kind": kind, "status": status, "body": body[:300]})


def _png(t: Traffic, rng: random.Random) -> bytes:
    return t.images[rng.randrange(len(t.images))]


def request_for(kind: str, t: Traffic, rng: random.Random, owned: list[str], worker: int, n: int) -> dict[str, Any]:
    """The httpx request arguments for one request of ``kind`` (method, url, headers, body)."""
    admin = {"X-API-Key": t.admin}
    read = {"X-API-Key": t.reader}
    one = {"image": ("p.png", _png(t, rng), "image/png")}
    if kind == "verify":
        return {"method": "POST", "url": "/v1/verify", "headers": read,
                "files": {"image_a": ("a.png", _png(t, rng), "image/png"), "image_b": ("b.png", _png(t, rng), "image/png")}}
    if kind == "identify":
        return {"method": "POST", "url": "/v1/identify?k=5", "headers": read, "files": one}
    if kind == "get":
        return {"method": "GET", "url": f"/v1/identities/id{rng.randrange(t.n_base):05d}", "headers": read}
    if kind == "list":
        return {"method": "GET", "url": f"/v1/identities?limit=50&offset={rng.randrange(t.n_base)}", "headers": read}
    if kind == "enrol":
        name = f"soak-w{worker:02d}-{n:06d}"
        files = [("images", (f"{i}.png", _png(t, rng), "image/png")) for i in range(rng.randint(1, 2))]
        return {"method": "POST", "url": "/v1/identities", "headers": admin, "files": files,
                "data": {"identity": name, "metadata": json.dumps({"worker": worker, "n": n})}, "name": name, "samples": len(files)}
    if kind == "delete":
        return {"method": "DELETE", "url": f"/v1/identities/{owned[0]}", "headers": admin, "name": owned[0]}
    if kind == "feedback":
        b64 = base64.b64encode(_png(t, rng)).decode()
        body = {"kind": "identify", "image_a": b64, "true_identity": f"id{rng.randrange(t.n_base):05d}", "note": "soak"}
        return {"method": "POST", "url": "/v1/feedback", "headers": admin, "json": body}
    if kind == "bad_image":
        data, ctype = t.bad[rng.randrange(len(t.bad))]
        return {"method": "POST", "url": "/v1/identify", "headers": read, "files": {"image": ("x.png", data, ctype)}}
    if kind == "bad_json":
        bodies = [b'{"kind": "verify", ', b'{"kind": "nope", "image_a": "AAAA"}', b"[1, 2, 3]",
                  json.dumps({"kind": "identify", "image_a": "!!!not base64", "true_identity": "x"}).encode()]
        return {"method": "POST", "url": "/v1/feedback", "headers": {**admin, "Content-Type": "application/json"},
                "content": bodies[rng.randrange(len(bodies))]}
    if kind == "wrong_secret":
        return {"method": "POST", "url": "/v1/identify", "headers": {"X-API-Key": f"sk_{t.real_id}_{rng.randbytes(16).hex()}"}, "files": one}
    if kind == "unknown_key":
        return {"method": "POST", "url": "/v1/verify", "headers": {"X-API-Key": f"sk_{rng.randbytes(4).hex()}_{rng.randbytes(16).hex()}"}, "files": one}
    if kind == "no_key":
        return {"method": "GET", "url": "/v1/identities"}
    if kind == "read_enrol":
        return {"method": "POST", "url": "/v1/identities", "headers": read, "files": [("images", ("a.png", _png(t, rng), "image/png"))],
                "data": {"identity": f"never-{worker}-{n}"}}
    raise ValueError(kind)


async def worker(client: Any, t: Traffic, w: int, deadline: float) -> None:
    import httpx

    rng = random.Random(t.seed * 1000 + w)
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    owned: list[str] = []
    n = 0
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        if kind == "delete" and not owned:
            kind = "enrol"
        n += 1
        req = request_for(kind, t, rng, owned, w, n)
        name, samples = req.pop("name", None), req.pop("samples", None)
        t0 = time.perf_counter()
        try:
            r = await client.request(**req)
        except httpx.HTTPError as e:
            t.record(kind, f"error:{type(e).__name__}", f"{e!r} after {time.perf_counter() - t0:.1f} s")
            if name is not None:
                t.uncertain.add(name)
                if kind == "delete":  # it may have been deleted: never ask again (that would be a 404)
                    owned.pop(0)
            continue
        t.latency_ms.append((time.perf_counter() - t0) * 1000)
        t.record(kind, r.status_code, r.text if r.status_code not in EXPECTED[kind] else "")
        if kind == "enrol" and r.status_code == 201:
            t.enrolled[name] = samples
            owned.append(name)
        elif kind == "delete" and r.status_code == 200:
            t.deleted.add(name)
            owned.pop(0)
        elif kind == "feedback" and r.status_code == 201:
            t.feedback_ids.append(int(r.json()["id"]))


def proc_sample(pid: int, t_start: float) -> dict[str, Any]:
    """RSS (MB), open fds and threads of process ``pid`` from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    field = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines() if ":" in line}
    return {"minute": round((time.monotonic() - t_start) / 60, 2), "rss_mb": int(field["VmRSS"].split()[0]) / 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(field["Threads"]), "load_avg": os.getloadavg()[0]}


async def drive(url: str, t: Traffic, pid: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    import httpx

    # a client must drop idle connections before the server does (serve --timeout-keep-alive, 5 s): with httpx's
    # default expiry (also 5 s) a request sent on a connection the server is closing fails with ReadError
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency, keepalive_expiry=2.0)
    samples = [proc_sample(pid, t.t0)]
    deadline = time.monotonic() + args.minutes * 60
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:

        async def sampler() -> None:
            while time.monotonic() < deadline - 1:
                await asyncio.sleep(min(args.sample_seconds, max(0.0, deadline - time.monotonic())))
                samples.append(proc_sample(pid, t.t0))
                s = samples[-1]
                done = sum(sum(c.values()) for c in t.status.values())
                print(f"minute {s['minute']:5.1f}  rss {s['rss_mb']:.0f} MB  fds {s['fds']}  requests {done}", flush=True)

        await asyncio.gather(sampler(), *[worker(client, t, w, deadline) for w in range(args.concurrency)])
    samples.append(proc_sample(pid, t.t0))
    return samples


def integrity(root: Path, model: Path, t: Traffic) -> dict[str, Any]:
    """What the gallery and the feedback store hold after the soak, against what was acknowledged."""
    out: dict[str, Any] = {}
    for name in ("gallery.db", "gallery.db.feedback.sqlite"):
        with sqlite3.connect(root / name) as con:
            out[f"integrity_check:{name}"] = con.execute("PRAGMA integrity_check").fetchone()[0]
    with Gallery.open(root / "gallery.db", Verifier.from_dir(model), create=False) as g:
        present = {r.identity: r.n_samples for r in g.list()}
    live = {k: v for k, v in t.enrolled.items() if k not in t.deleted}
    out["acknowledged_enrolments"] = len(t.enrolled)
    out["acknowledged_deletions"] = len(t.deleted)
    out["uncertain_writes"] = len(t.uncertain)
    out["missing_enrolments"] = sorted(k for k in live if k not in present and k not in t.uncertain)[:20]
    out["wrong_sample_counts"] = sorted(k for k, v in live.items() if k in present and present[k] != v)[:20]
    out["deleted_but_present"] = sorted(k for k in t.deleted if k in present and k not in t.uncertain)[:20]
    out["base_identities_present"] = sum(f"id{i:05d}" in present for i in range(t.n_base))
    out["identities_at_end"] = len(present)
    with FeedbackStore.open(root / "gallery.db.feedback.sqlite", create=False) as fb:
        stored = {r.id for r in fb.list()}
    out["acknowledged_feedback"] = len(t.feedback_ids)
    out["missing_feedback"] = len(set(t.feedback_ids) - stored)
    out["ok"] = (all(v == "ok" for k, v in out.items() if k.startswith("integrity_check")) and not out["missing_enrolments"]
                 and not out["wrong_sample_counts"] and not out["deleted_but_present"] and out["missing_feedback"] == 0
                 and out["base_identities_present"] == t.n_base)
    return out


def percentile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q / 100 * len(v)))] if v else float("nan")


def doc_body(out: dict[str, Any], args: argparse.Namespace) -> str:
    m, s = out["machine"], out["samples"]
    warm = [x for x in s if x["minute"] >= min(5.0, args.minutes / 2)]
    fivexx = sum(n for c in out["status"].values() for k, n in c.items() if k.isdigit() and int(k) >= 500)
    lines = [
        f"`nice -n 15 python bench/bench_soak.py --minutes {args.minutes:g} --concurrency {args.concurrency} --identities {args.identities}`. "
        f"{machine_line(m)} Load average {m['load_avg_start']:.1f} at the start, {m['load_avg_end']:.1f} at the end: the 2 cores "
        "were shared with 7 other engineers' jobs and both server and client ran at nice 15, so the request rate says nothing "
        "about the service's speed (see *HTTP service load*); the soak is about errors and memory.",
        "",
        f"`siamkit serve` (uvicorn, 1 worker, torch 1 thread, 2 inference jobs, default timeouts and connection cap, rate "
        f"limits raised to {args.rate:g}/s) on 127.0.0.1; conv4 28x28 grey 64-d; gallery of {args.identities} identities x 2 "
        f"samples + the soak's enrolments; real Omniglot PNGs. {args.concurrency} asyncio + httpx workers on the same machine, "
        "each drawing its next request by weight: " + ", ".join(f"{k} {v}" for k, v in WEIGHTS.items()) + ".",
        "",
        f"**{out['requests']} requests in {args.minutes:g} min ({out['requests'] / (args.minutes * 60):.0f}/s), "
        f"{fivexx} 5xx, {out['unexpected_count']} unexpected statuses, {out['transport_errors']} transport errors; "
        f"RSS {s[0]['rss_mb']:.0f} MB at the start, {warm[0]['rss_mb'] if warm else float('nan'):.0f} MB after warm-up "
        f"(minute {warm[0]['minute'] if warm else float('nan'):.0f}), {s[-1]['rss_mb']:.0f} MB at the end; gallery integrity "
        f"{'ok' if out['integrity']['ok'] else 'FAILED'}.** Latency (not a goal here): p50 {out['p50_ms']:.0f} ms, p99 {out['p99_ms']:.0f} ms.",
        "",
        "| minute | server RSS MB | open fds | threads | requests in the minute before | 5xx | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in s:
        w = int(x["minute"] // 1) - 1
        lines.append(f"| {x['minute']:.1f} | {x['rss_mb']:.0f} | {x['fds']} | {x['threads']} | "
                     f"{out['per_minute'].get(str(w), 0) if w >= 0 else '-'} | {out['fivexx_per_minute'].get(str(w), 0) if w >= 0 else '-'} | {x['load_avg']:.1f} |")
    lines += ["", "| request kind | expected | answered |", "|---|---|---|"]
    for kind, c in out["status"].items():
        lines.append(f"| {kind} | {', '.join(map(str, sorted(EXPECTED[kind])))} | " + ", ".join(f"{k}: {n}" for k, n in sorted(c.items())) + " |")
    g = out["integrity"]
    lines += ["", f"Integrity at the end (server stopped): {g['acknowledged_enrolments']} acknowledged enrolments "
              f"({len(g['missing_enrolments'])} missing, {len(g['wrong_sample_counts'])} with a wrong sample count), "
              f"{g['acknowledged_deletions']} acknowledged deletions ({len(g['deleted_but_present'])} still present), "
              f"{g['base_identities_present']}/{args.identities} pre-enrolled identities present ({g['identities_at_end']} identities "
              f"at the end), {g['acknowledged_feedback']} "
              f"feedback records ({g['missing_feedback']} missing), {g['uncertain_writes']} writes with a lost answer; "
              f"`PRAGMA integrity_check`: gallery {g['integrity_check:gallery.db']}, feedback store "
              f"{g['integrity_check:gallery.db.feedback.sqlite']}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--identities", type=int, default=300)
    ap.add_argument("--sample-seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=100_000.0, help="serve --rate-per-key / --rate-per-client")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = ap.parse_args()
    ensure_httpx()
    m = machine()
    m["load_avg_start"] = os.getloadavg()[0]
    m["nice"] = os.nice(0)
    images = omniglot_pngs(256)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, gallery, admin = build(root, args.identities, images)
        ks = KeyStore.load(root / "keys.json")
        reader = ks.add("soak-reader", "read")
        ks.save(root / "keys.json")
        t = Traffic(images, admin, reader, args.identities, args.seed)
        log = open(root / "serve.log", "wb")
        proc, url = start_server(model, root / "keys.json", gallery,
                                 ["--rate-per-key", str(args.rate), "--rate-per-client", str(args.rate)], stderr=log)
        try:
            t.t0 = time.monotonic()
            samples = asyncio.run(drive(url, t, proc.pid, args))
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            log.close()
        server_log = (root / "serve.log").read_text(errors="replace")
        check = integrity(root, model, t)
    m["load_avg_end"] = os.getloadavg()[0]
    transport = sum(n for c in t.status.values() for k, n in c.items() if k.startswith("error:"))
    out = {
        "machine": m, "minutes": args.minutes, "concurrency": args.concurrency, "identities": args.identities, "weights": WEIGHTS,
        "requests": sum(sum(c.values()) for c in t.status.values()), "status": {k: dict(v) for k, v in sorted(t.status.items())},
        "unexpected_count": sum(n for kind, c in t.status.items() for k, n in c.items() if not (k.isdigit() and int(k) in EXPECTED[kind])),
        "unexpected_examples": t.unexpected, "transport_errors": transport, "samples": samples,
        "per_minute": {str(k): v for k, v in sorted(t.per_window.items())},
        "fivexx_per_minute": {str(k): v for k, v in sorted(t.fivexx_per_window.items())},
        "p50_ms": percentile(t.latency_ms, 50), "p99_ms": percentile(t.latency_ms, 99), "integrity": check,
        "server_exit_code": code, "server_log_errors": [ln for ln in server_log.splitlines() if "Traceback" in ln or "ERROR" in ln][:20],
        "server_log_tail": server_log.splitlines()[-30:],
    }
    write_json("soak" if args.minutes >= 30 else f"soak_{args.minutes:g}min", out)
    body = doc_body(out, args)
    if not args.no_docs:
        replace_doc_section("HTTP service soak", body)
    print(body)
    print(json.dumps({k: out[k] for k in ("unexpected_examples", "server_log_errors", "server_log_tail", "integrity")}, indent=1)[:4000])


if __name__ == "__main__":
    main()
