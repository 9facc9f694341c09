"""``siamkit serve`` (the HTTP service) and ``siamkit keys add / list / revoke`` (its API keys)."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import SiamkitError
from ._common import clean_errors, command_group
from .gallery import gallery_location

__all__ = ["keys_app", "serve"]

keys_app = command_group("API keys of the HTTP service (stored hashed).")
KEYS = typer.Option(
    ..., "--keys", parser=gallery_location, metavar="FILE|URL",
    help="The keys file (JSON; created if missing), or postgresql://... (a table in that database, shared by every instance).",
)


@clean_errors
def serve(
    model: Path = typer.Option(..., "--model", "-m", help="The model folder (with calibration.json for decisions)."),
    keys: Path = typer.Option(
        ..., "--keys", parser=gallery_location, metavar="FILE|URL",
        help="The API keys: a file, or postgresql://... shared by every instance (create keys with `siamkit keys add`).",
    ),
    gallery: Optional[Path] = typer.Option(
        None, "--gallery", "-g", parser=gallery_location, metavar="FILE|URL",
        help="The gallery: a SQLite file (created if missing) or postgresql://user@host:port/db (shared by several instances).",
    ),
    feedback: Optional[Path] = typer.Option(
        None, "--feedback", parser=gallery_location, metavar="FILE|URL",
        help="The feedback store: a SQLite file or postgresql://... (default: GALLERY.feedback.sqlite; a database gallery's own database).",
    ),
    host: str = typer.Option("127.0.0.1", help="Address to bind (default: loopback only)."),
    port: int = typer.Option(8000, help="Port."),
    max_request_mb: float = typer.Option(16.0, help="Largest request body, MB."),
    max_image_mb: float = typer.Option(4.0, help="Largest image, MB."),
    max_pixels: int = typer.Option(16_000_000, help="Largest image, width x height (checked before decoding)."),
    max_batch: int = typer.Option(16, help="Most images per enrolment request."),
    max_inference: Optional[int] = typer.Option(None, help="Concurrent decode + embed jobs (default: CPU count)."),
    torch_threads: Optional[int] = typer.Option(None, help="torch intra-op threads (default: torch's)."),
    index: str = typer.Option("auto", help="Gallery search index: auto, exact, flat, hnsw, ivf."),
    private_metrics: bool = typer.Option(False, "--private-metrics", help="/metrics needs an API key."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    timeout_keep_alive: float = typer.Option(5.0, help="Close an idle keep-alive connection after this many seconds."),
    limit_concurrency: Optional[int] = typer.Option(
        None, help="Most connections and in-flight requests at once; beyond it uvicorn answers 503 (default: no limit)."
    ),
    rate_per_key: float = typer.Option(50.0, help="Requests per second one API key may make, then 429 + Retry-After (0: no limit)."),
    rate_per_client: float = typer.Option(100.0, help="Requests per second one client address may make (0: no limit)."),
    rate_burst: float = typer.Option(2.0, help="Bursts above the rate, in seconds of it (the bucket holds rate x this)."),
    auth_rate: float = typer.Option(
        5.0, help="Failed key checks (scrypt, ~30 ms of CPU each) per second per client address and per key id, 4x "
        "that in all; past it, keys not verified before get 429 (0: no limit). Verified keys are never refused."
    ),
    timeout_headers: float = typer.Option(
        10.0, help="A client must send a request's headers within this many seconds of starting it, else 408 / closed."
    ),
    timeout_body: float = typer.Option(
        30.0, help="A client must send a request's body within this many seconds of its headers, else 408 / closed."
    ),
    max_connections: int = typer.Option(
        256, help="Open connections at most; beyond it the one waiting longest for a request is closed."
    ),
    runtime: str = typer.Option(
        "torch", help="torch, or onnx: POST /v1/verify through onnxruntime (--model a `siamkit export` folder, "
        "or a model folder exported at start-up); no --gallery."
    ),
    onnx_precision: Optional[str] = typer.Option(None, help="fp32 (default) or int8, with --runtime onnx."),
) -> None:
    """Run the HTTP service (FastAPI on uvicorn; OpenAPI at /openapi.json, docs at /docs)."""
    import uvicorn

    from ..service.app import ServiceSettings, create_app
    from ..service.connections import ConnectionLimits, protocol_class
    from ..service.images import Limits

    _check_options(port=port, max_request_mb=max_request_mb, max_image_mb=max_image_mb, max_pixels=max_pixels,
                   max_batch=max_batch, max_inference=max_inference, torch_threads=torch_threads,
                   timeout_keep_alive=timeout_keep_alive, limit_concurrency=limit_concurrency, log_level=log_level,
                   rate_per_key=rate_per_key, rate_per_client=rate_per_client, rate_burst=rate_burst, auth_rate=auth_rate,
                   timeout_headers=timeout_headers, timeout_body=timeout_body, max_connections=max_connections)
    if torch_threads is not None:
        import torch

        torch.set_num_threads(max(1, torch_threads))
    limits = Limits(
        max_request_bytes=int(max_request_mb * 1024 * 1024), max_image_bytes=int(max_image_mb * 1024 * 1024),
        max_pixels=max_pixels, max_batch=max_batch,
    )
    app = create_app(
        ServiceSettings(
            model=model, keys=keys, gallery=gallery, feedback=feedback, limits=limits,
            public_metrics=not private_metrics, max_inference=max_inference, index=index,
            rate_per_key=rate_per_key or None, rate_per_client=rate_per_client or None, rate_burst=rate_burst,
            auth_rate=auth_rate or None, runtime=runtime, onnx_precision=onnx_precision,
        )
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: binding {host}: the service is reachable from the network; put TLS in front of it", err=True)
    sock = _listen(host, port)  # before uvicorn: a busy port is one `error:` line, not its log
    config = uvicorn.Config(
        app, log_level=log_level, workers=1, server_header=False, access_log=True,
        timeout_keep_alive=max(1, math.ceil(timeout_keep_alive)), limit_concurrency=limit_concurrency,
        http=protocol_class(ConnectionLimits(timeout_headers=timeout_headers, timeout_body=timeout_body,
                                             max_connections=max_connections)),
    )
    with sock:
        uvicorn.Server(config).run(sockets=[sock])


def _check_options(**opts: Any) -> None:
    """Refuse option values the service cannot run with (exit 2, one ``error:`` line)."""
    if not 0 <= opts["port"] <= 65535:
        raise SiamkitError(f"--port must be in 0..65535, got {opts['port']}")
    for name in ("rate_per_key", "rate_per_client", "auth_rate"):
        if not (math.isfinite(opts[name]) and opts[name] >= 0):
            raise SiamkitError(f"--{name.replace('_', '-')} must be >= 0 (0: no limit), got {opts[name]}")
    for name in ("max_request_mb", "max_image_mb", "timeout_keep_alive", "rate_burst", "timeout_headers", "timeout_body"):
        v = opts[name]
        if not (math.isfinite(v) and v > 0):
            raise SiamkitError(f"--{name.replace('_', '-')} must be a positive number, got {v}")
    for name in ("max_pixels", "max_batch", "max_inference", "torch_threads", "limit_concurrency", "max_connections"):
        v = opts[name]
        if v is not None and v < 1:
            raise SiamkitError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if opts["log_level"] not in ("critical", "error", "warning", "info", "debug", "trace"):
        raise SiamkitError(f"--log-level must be critical, error, warning, info, debug or trace, got {opts['log_level']!r}")


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (as uvicorn binds it), or a SiamkitError naming why not."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as e:
        raise SiamkitError(f"cannot listen on {host}:{port}: {e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError as e:
        sock.close()
        raise SiamkitError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


@keys_app.command("add")
@clean_errors
def keys_add(
    name: str = typer.Option(..., "--name", help="Who or what uses the key (recorded in the audit log)."),
    role: str = typer.Option("read", "--role", help="read (verify / identify) or admin (also enrol / delete / feedback)."),
    keys: Path = KEYS,
) -> None:
    """Create a key; prints it once (only its scrypt hash is stored)."""
    from ..service.pg_keys import open_keys

    store = open_keys(keys, create=True)
    try:
        key = store.add(name, role)
        store.save(keys)
    finally:
        store.close()
    typer.echo(key)
    typer.echo(f"key {name!r} ({role}) added to {keys}; it is shown only now: store it safely", err=True)


@keys_app.command("list")
@clean_errors
def keys_list(keys: Path = KEYS) -> None:
    """List the keys (names, ids, roles; never the keys)."""
    from ..service.pg_keys import open_keys

    store = open_keys(keys)
    store.close()
    for r in store.records:
        typer.echo(f"{r.id}  {r.role:<5}  {r.name}")


@keys_app.command("revoke")
@clean_errors
def keys_revoke(name: str = typer.Argument(..., help="The key's name or id."), keys: Path = KEYS) -> None:
    """Remove a key (a running service stops accepting it within about a second)."""
    from ..errors import SiamkitError
    from ..service.pg_keys import open_keys

    store = open_keys(keys)
    try:
        if not store.revoke(name):
            raise SiamkitError(f"no key named {name!r} in {keys}")
        store.save(keys)
    finally:
        store.close()
    typer.echo(f"revoked {name!r}; a running service stops accepting it within about a second")
