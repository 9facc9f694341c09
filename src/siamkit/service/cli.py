"""``siamkit serve``, ``siamkit keys ...`` and ``siamkit feedback ...``.

Mounted in :mod:`siamkit.cli` with::

    from .service.cli import feedback_app, finetune_command, keys_app, serve
    app.command()(serve)
    app.command("finetune")(finetune_command)
    app.add_typer(keys_app, name="keys")
    app.add_typer(feedback_app, name="feedback")

Also runnable alone: ``python -m siamkit.service.cli serve ...``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer

__all__ = ["serve", "keys_app", "feedback_app", "finetune_command", "service_cli"]

F = TypeVar("F", bound=Callable[..., Any])


def _clean_errors(fn: F) -> F:
    """siamkit.cli's error handling (one line on stderr, exit 2), imported when called."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..cli import _clean_errors as clean

        return clean(fn)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@_clean_errors
def serve(
    model: Path = typer.Option(..., "--model", "-m", help="The model folder (with calibration.json for decisions)."),
    keys: Path = typer.Option(..., "--keys", help="The API keys file (create keys with `siamkit keys add`)."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", help="The gallery file (SQLite; created if missing)."),
    feedback: Optional[Path] = typer.Option(None, "--feedback", help="The feedback store (default: GALLERY.feedback.sqlite)."),
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
) -> None:
    """Run the HTTP service (FastAPI on uvicorn; OpenAPI at /openapi.json, docs at /docs)."""
    import uvicorn

    from .app import ServiceSettings, create_app
    from .images import Limits

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
        )
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: binding {host}: the service is reachable from the network; put TLS in front of it", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1, server_header=False, access_log=True)


# --------------------------------------------------------------------------- keys

keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API keys of the HTTP service (stored hashed).", pretty_exceptions_enable=False)
KEYS = typer.Option(..., "--keys", help="The keys file (JSON; created if missing).")


@keys_app.command("add")
@_clean_errors
def keys_add(
    name: str = typer.Option(..., "--name", help="Who or what uses the key (recorded in the audit log)."),
    role: str = typer.Option("read", "--role", help="read (verify / identify) or admin (also enrol / delete / feedback)."),
    keys: Path = KEYS,
) -> None:
    """Create a key; prints it once (only its scrypt hash is stored)."""
    from .security import KeyStore

    store = KeyStore.load(keys) if keys.exists() else KeyStore(path=keys)
    key = store.add(name, role)
    store.save(keys)
    typer.echo(key)
    typer.echo(f"key {name!r} ({role}) added to {keys}; it is shown only now: store it safely", err=True)


@keys_app.command("list")
@_clean_errors
def keys_list(keys: Path = KEYS) -> None:
    """List the keys (names, ids, roles; never the keys)."""
    from .security import KeyStore

    for r in KeyStore.load(keys).records:
        typer.echo(f"{r.id}  {r.role:<5}  {r.name}")


@keys_app.command("revoke")
@_clean_errors
def keys_revoke(name: str = typer.Argument(..., help="The key's name or id."), keys: Path = KEYS) -> None:
    """Remove a key (a running service keeps it until restarted)."""
    from ..errors import SiamkitError
    from .security import KeyStore

    store = KeyStore.load(keys)
    if not store.revoke(name):
        raise SiamkitError(f"no key named {name!r} in {keys}")
    store.save(keys)
    typer.echo(f"revoked {name!r}; restart the service to apply it")


# --------------------------------------------------------------------------- feedback

feedback_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Reported mistakes (the feedback store).", pretty_exceptions_enable=False)
FEEDBACK = typer.Option(..., "--feedback", help="The feedback store (SQLite; created if missing).")


def _image_arg(path: Path, what: str) -> tuple[bytes, str]:
    from ..errors import DataError
    from .images import sniff_image_format

    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    data = path.read_bytes()
    fmt = sniff_image_format(data[:32])
    if fmt is None:
        raise DataError(f"{what} {path} is not a PNG, JPEG, GIF, BMP or WebP image")
    return data, fmt


@feedback_app.command("add")
@_clean_errors
def feedback_add(
    feedback: Path = FEEDBACK,
    kind: str = typer.Option(..., "--kind", help="verify (two images), identity_verify (probe + --identity) or identify (probe)."),
    image_a: Path = typer.Option(..., "--image-a", "--probe", help="The probe, or the first image of the pair."),
    image_b: Optional[Path] = typer.Option(None, "--image-b", help="verify: the second image."),
    identity: Optional[str] = typer.Option(None, "--identity", help="identity_verify: the claimed identity."),
    same: Optional[bool] = typer.Option(None, "--same/--different", help="The truth (verify, identity_verify)."),
    true_identity: Optional[str] = typer.Option(None, "--true-identity", help="identify: who it really is ('unknown' = not enrolled)."),
    predicted: Optional[str] = typer.Option(None, "--predicted", help='What the system said, as JSON, e.g. \'{"same": true, "distance": 0.41}\'.'),
    reporter: str = typer.Option(..., "--reporter", help="Who reports it."),
    note: Optional[str] = typer.Option(None, "--note", help="Free text."),
    model: Optional[Path] = typer.Option(None, "--model", help="The model that made the mistake (its fingerprint is recorded)."),
    model_checked: bool = typer.Option(True, "--check-images/--no-check-images", help="Decode the images with --model's input spec."),
) -> None:
    """Record a reported mistake (and its audit entry) in the feedback store."""
    from ..errors import SiamkitError
    from ..feedback import FeedbackStore

    a = _image_arg(image_a, "--image-a")
    b = _image_arg(image_b, "--image-b") if image_b is not None else None
    pred: dict[str, Any] = {}
    if predicted:
        try:
            pred = json.loads(predicted)
        except json.JSONDecodeError as e:
            raise SiamkitError(f"--predicted must be a JSON object ({e})") from None
        if not isinstance(pred, dict):
            raise SiamkitError("--predicted must be a JSON object")
    truth: dict[str, Any] = {"identity": true_identity} if kind == "identify" else {"same": same}
    fingerprint = None
    if model is not None:
        from ..io import load_model
        from .images import Limits, decode_image

        net = load_model(model)
        fingerprint = getattr(net, "fingerprint", None)
        if model_checked:
            spec = net.input_spec.require_image()
            for data, what in [(a, "--image-a"), (b, "--image-b")]:
                if data is not None:
                    try:
                        decode_image(data[0], spec, Limits(), what=what)
                    except Exception as e:  # UploadError
                        raise SiamkitError(str(e)) from None
    with FeedbackStore.open(feedback) as store:
        fid = store.add(
            actor=f"cli:{reporter}", kind=kind, image_a=a, image_b=b, identity=identity, predicted=pred, truth=truth,
            reporter=reporter, note=note, model_fingerprint=fingerprint,
        )
    typer.echo(f"feedback {fid} recorded in {feedback}")


@feedback_app.command("list")
@_clean_errors
def feedback_list(
    feedback: Path = FEEDBACK,
    status: Optional[str] = typer.Option(None, help="new, used or rejected."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the reported mistakes (without the images)."""
    from ..feedback import FeedbackStore

    with FeedbackStore.open(feedback, create=False) as store:
        rows = [r.summary() for r in store.list(status=status)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    for r in rows:
        typer.echo(f"{r['id']:>5}  {r['status']:<8} {r['kind']:<15} truth={json.dumps(r['truth'])}  by {r['actor']}")


# --------------------------------------------------------------------------- finetune


@_clean_errors
def finetune_command(
    model: Path = typer.Option(..., "--model", "-m", help="The current (calibrated) model folder."),
    feedback: Path = FEEDBACK,
    out: Path = typer.Option(..., "--out", help="The new model folder (written only when it is not worse)."),
    replay: Path = typer.Option(..., "--replay", help="The original training data: one sub-folder of images per class."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", help="The gallery (for identify / identity_verify feedback)."),
    reembed_gallery: bool = typer.Option(False, "--reembed-gallery", help="Re-embed the gallery with the new model."),
    steps: int = typer.Option(300, help="Optimizer steps."),
    lr: float = typer.Option(2e-4, help="Learning rate."),
    feedback_weight: float = typer.Option(2.0, help="Weight of a feedback pair relative to a replay pair."),
    max_regression: float = typer.Option(0.005, help="Largest allowed drop of held-out ROC AUC / accuracy."),
    seed: int = typer.Option(0, help="Seed of the class split and batches."),
) -> None:
    """Fine-tune on the reported mistakes mixed with replay of the training data;
    re-calibrate; refuse to write the new model if it is worse on held-out classes."""
    from ..data.images import ImageFolderDataset
    from ..training.finetune import FinetuneConfig, FinetuneRefused, finetune
    from ..io import read_config
    from ..network import InputSpec

    spec = InputSpec.from_dict(read_config(model)["network"].get("input_spec"))
    if not spec.is_image:
        typer.echo("error: finetune takes image models", err=True)
        raise typer.Exit(2)
    ds = ImageFolderDataset.from_folder(replay, image_size=spec.image_size, channels=int(spec.channels))
    cfg = FinetuneConfig(steps=steps, lr=lr, feedback_weight=feedback_weight, max_regression=max_regression, seed=seed)
    try:
        rep = finetune(model, feedback, out, replay_images=ds.images, replay_labels=ds.labels, gallery=gallery,
                       reembed_gallery=reembed_gallery, config=cfg)
    except FinetuneRefused as e:
        typer.echo(json.dumps(e.report["held_out"], indent=2), err=True)
        typer.echo(f"refused: {e}", err=True)
        raise typer.Exit(3) from None
    o, n = rep["held_out"]["old"], rep["held_out"]["new"]
    typer.echo(f"feedback pairs right: {rep['feedback_pairs_right']['old']:.3f} -> {rep['feedback_pairs_right']['new']:.3f} "
               f"({rep['feedback_pairs_fixed']} fixed, {rep['feedback_pairs_broken']} broken, of {rep['feedback_pairs']})")
    typer.echo(f"held-out ROC AUC {o['roc_auc']:.4f} -> {n['roc_auc']:.4f}; accuracy {o['accuracy']:.4f} -> {n['accuracy']:.4f}")
    typer.echo(f"new model: {out}" + (f"; gallery re-embedded ({rep['gallery_reembedded']} samples)" if "gallery_reembedded" in rep else ""))


service_cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="siamkit service commands.")
service_cli.command("serve")(serve)
service_cli.add_typer(keys_app, name="keys")
service_cli.add_typer(feedback_app, name="feedback")
service_cli.command("finetune")(finetune_command)

if __name__ == "__main__":  # pragma: no cover
    service_cli(prog_name="siamkit")
