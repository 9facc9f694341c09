"""``siamkit gallery ...``: enrol, add, remove, list, verify, identify, reembed.

A thin edge over :class:`siamkit.gallery.Gallery`: parse once, call the library, print.
Bad input ends with one line ``error: ...`` on stderr and exit code 2.

Mounted in ``siamkit.cli`` with ``app.add_typer(gallery_app, name="gallery")``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, List, Optional, TypeVar

import typer

__all__ = ["gallery_app"]

gallery_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Enrol identities and verify / identify images against them (a SQLite gallery file).",
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _clean_errors(fn: F) -> F:
    """siamkit.cli's error handling (one line, exit 2), imported when called so that
    siamkit.cli can import this module at any point."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..cli import _clean_errors as clean

        return clean(fn)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


GALLERY = typer.Option(..., "--gallery", "-g", help="The gallery file (SQLite).")
MODEL = typer.Option(None, "--model", "-m", help="The model folder the gallery uses (with its calibration.json).")
JSON_OUT = typer.Option(False, "--json", help="Print JSON.")
SCORING = typer.Option(None, "--scoring", help="best (closest sample) or mean (mean embedding); default: the gallery's.")
INDEX = typer.Option("auto", "--index", help="Search index: auto, exact, flat, hnsw, ivf.")


def _open(gallery: Path, model: Optional[Path], *, create: bool = False, scoring: Optional[str] = None, index: str = "auto", need_model: bool = True):  # type: ignore[no-untyped-def]
    from ..errors import SiamkitError
    from .gallery import Gallery

    if need_model and model is None:
        raise SiamkitError("--model is required: the model folder the gallery was built with")
    if not create and not gallery.exists():
        raise SiamkitError(f"gallery {gallery} does not exist (enroll creates it)")
    return Gallery.open(gallery, model, create=create, scoring=scoring, index=index)


def _parse_metadata(text: Optional[str]) -> Optional[dict[str, Any]]:
    from ..errors import SiamkitError

    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SiamkitError(f"--metadata must be a JSON object like '{{\"team\": \"R&D\"}}' ({e})") from None
    if not isinstance(value, dict):
        raise SiamkitError(f"--metadata must be a JSON object, got {type(value).__name__}")
    return value


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def _record_line(r: Any) -> str:
    meta = f"  {json.dumps(r.metadata, sort_keys=True)}" if r.metadata else ""
    return f"{r.identity}: {r.n_samples} sample{'s' if r.n_samples != 1 else ''}{meta}"


@gallery_app.command()
@_clean_errors
def enroll(
    identity: str = typer.Argument(..., help="The new identity's name."),
    images: List[Path] = typer.Argument(..., help="One or more images of it."),
    gallery: Path = GALLERY,
    model: Optional[Path] = MODEL,
    metadata: Optional[str] = typer.Option(None, "--metadata", help="JSON object kept with the identity."),
    scoring: Optional[str] = typer.Option(None, "--scoring", help="A new gallery's default rule: best or mean."),
    as_json: bool = JSON_OUT,
) -> None:
    """Enrol a new identity from images (creates the gallery file if needed)."""
    with _open(gallery, model, create=True, scoring=scoring) as g:
        r = g.enroll(identity, list(images), metadata=_parse_metadata(metadata))
    if as_json:
        _echo_json(r.to_dict())
        return
    typer.echo(f"enrolled {_record_line(r)}")


@gallery_app.command()
@_clean_errors
def add(
    identity: str = typer.Argument(..., help="An enrolled identity."),
    images: List[Path] = typer.Argument(..., help="More images of it."),
    gallery: Path = GALLERY,
    model: Optional[Path] = MODEL,
    as_json: bool = JSON_OUT,
) -> None:
    """Add samples to an enrolled identity."""
    with _open(gallery, model) as g:
        r = g.add_samples(identity, list(images))
    if as_json:
        _echo_json(r.to_dict())
        return
    typer.echo(f"added {len(images)}: {_record_line(r)}")


@gallery_app.command()
@_clean_errors
def remove(
    identity: str = typer.Argument(..., help="An enrolled identity."),
    gallery: Path = GALLERY,
    model: Optional[Path] = MODEL,
) -> None:
    """Remove an identity and all its samples."""
    with _open(gallery, model, need_model=False) as g:
        n = g.remove(identity)
    typer.echo(f"removed {identity} ({n} sample{'s' if n != 1 else ''})")


@gallery_app.command("list")
@_clean_errors
def list_(
    gallery: Path = GALLERY,
    model: Optional[Path] = MODEL,
    as_json: bool = JSON_OUT,
) -> None:
    """List the enrolled identities."""
    with _open(gallery, model, need_model=False) as g:
        records = g.list()
        meta = g.meta
    if as_json:
        _echo_json({"identities": [r.to_dict() for r in records], "model_fingerprint": meta.get("model_fingerprint")})
        return
    n_samples = sum(r.n_samples for r in records)
    typer.echo(
        f"{len(records)} identities, {n_samples} samples; model {meta.get('model_fingerprint') or meta.get('model_hash')}, "
        f"scoring {meta.get('scoring')}"
    )
    for r in records:
        typer.echo(f"  {_record_line(r)}")


@gallery_app.command()
@_clean_errors
def verify(
    identity: str = typer.Argument(..., help="The claimed identity."),
    image: Path = typer.Argument(..., help="The probe image."),
    gallery: Path = GALLERY,
    model: Optional[Path] = MODEL,
    scoring: Optional[str] = SCORING,
    as_json: bool = JSON_OUT,
) -> None:
    """1:1: is IMAGE the enrolled IDENTITY? (decision at the model's calibrated threshold)"""
    with _open(gallery, model, scoring=scoring) as g:
        r = g.verify(identity, image)
    if as_json:
        _echo_json(r.to_dict())
        return
    typer.echo(f"identity:   {r.identity} ({r.n_samples} samples, scoring {r.scoring})")
    typer.echo(f"distance:   {r.distance:.6f}  (lower = more similar)")
    typer.echo(f"score:      {r.score:.6f}  (higher = more similar)")
    if r.same is not None:
        typer.echo(f"decision:   {'SAME' if r.same else 'DIFFERENT'}  (calibrated threshold {r.threshold:.6g})")
        typer.echo(f"confidence: {r.confidence:.4f}  (probability of 'same')")
    else:
        typer.echo("decision:   none (the model is not calibrated: run `siamkit calibrate`)")
    typer.echo(f"closest sample: #{r.sample_id} (distance {r.sample_distance:.6f})")


@gallery_app.command()
@_clean_errors
def identify(
    image: Path = typer.Argument(..., help="The probe image."),
    gallery: Path = GALLERY,
    model: Optional[Path] = MODEL,
    k: int = typer.Option(5, "-k", "--top", help="Candidates to show."),
    scoring: Optional[str] = SCORING,
    index: str = INDEX,
    as_json: bool = JSON_OUT,
) -> None:
    """1:N, open set: the closest identities, or "unknown" when none is close enough."""
    from ..errors import SiamkitError

    if k < 1:
        raise SiamkitError(f"-k must be >= 1, got {k}")
    with _open(gallery, model, scoring=scoring, index=index) as g:
        r = g.identify(image, k=k)
    if as_json:
        _echo_json(r.to_dict())
        return
    if r.decision is None:
        typer.echo(f"decision: none ({r.note})")
    elif r.unknown:
        extra = f"; best {r.best.identity} at {r.best.distance:.6g}" if r.best else ""
        typer.echo(f"decision: unknown (no identity within the calibrated threshold {r.threshold:.6g}{extra})")
    else:
        assert r.best is not None and r.confidence is not None
        typer.echo(f"decision: {r.decision}  (distance {r.best.distance:.6g} <= threshold {r.threshold:.6g}, confidence {r.confidence:.4f})")
    if r.candidates:
        typer.echo(f"{'rank':>4}  {'identity':<24}{'distance':>12}{'score':>10}")
        for i, c in enumerate(r.candidates, 1):
            typer.echo(f"{i:>4}  {c.identity:<24}{c.distance:>12.6f}{c.score:>10.4f}")
    typer.echo(f"(scoring {r.scoring}, {r.index} search)")


@gallery_app.command()
@_clean_errors
def reembed(
    gallery: Path = GALLERY,
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The NEW model folder to migrate the gallery to."),
) -> None:
    """Migrate the gallery to another model: re-embed every stored sample (one transaction)."""
    from ..errors import SiamkitError
    from .gallery import Gallery

    if model is None:
        raise SiamkitError("--model is required: the model folder to migrate the gallery to")
    if not gallery.exists():
        raise SiamkitError(f"gallery {gallery} does not exist")
    with Gallery.migrate(gallery, model) as g:
        n = g.n_samples
        fp = g.meta.get("model_fingerprint") or g.meta.get("model_hash")
    typer.echo(f"re-embedded {n} samples with model {fp}")
