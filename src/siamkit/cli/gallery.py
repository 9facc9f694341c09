"""``siamkit gallery ...``: enrol, add, remove, list, verify, identify, reembed.

A thin edge over :class:`siamkit.gallery.Gallery`: parse once, call the library, print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from ._common import JSON_OUT, clean_errors, command_group, echo_json, gallery_location, parse_json_object

__all__ = ["gallery_app", "gallery_location"]


gallery_app = command_group("Enrol identities and verify / identify images (texts, with a text model) against them (a SQLite gallery file or a PostgreSQL database); writer-dependent signature verification (calibrate-references, verify --rule).")

GALLERY = typer.Option(
    ..., "--gallery", "-g", parser=gallery_location, metavar="FILE|URL",
    help="The gallery: a SQLite file, or a PostgreSQL database postgresql://user@host:port/db shared by several processes.",
)
MODEL = typer.Option(None, "--model", "-m", help="The model folder the gallery uses (with its calibration.json).")
SCORING = typer.Option(None, "--scoring", help="best (closest sample) or mean (mean embedding); default: the gallery's.")
INDEX = typer.Option("auto", "--index", help="Search index: auto, exact, flat, hnsw, ivf.")
DIM = typer.Option(None, "--dim", help="A Matryoshka embedding size to build / use the gallery at (recorded in the gallery; its calibration-dimD.json).")
METADATA_EXAMPLE = '{"team": "R&D"}'


def _open(gallery: Any, model: Optional[Path], *, create: bool = False, scoring: Optional[str] = None, index: str = "auto", need_model: bool = True, dim: Optional[int] = None) -> Any:
    """The gallery file opened with ``model``, after checking both were given / exist."""
    from ..errors import SiamkitError
    from ..gallery import Gallery

    if need_model and model is None:
        raise SiamkitError("--model is required: the model folder the gallery was built with")
    if not create and isinstance(gallery, Path) and not gallery.exists():
        raise SiamkitError(f"gallery {gallery} does not exist (enroll creates it)")
    from ..gallery.sizes import model_at_dim

    return Gallery.open(gallery, model_at_dim(model, dim), create=create, scoring=scoring, index=index)


def _inputs(g: Any, values: List[str]) -> List[Any]:
    """The command line's inputs: texts for a text model, else image paths."""
    from ..text.inputs import text_input_of

    return list(values) if text_input_of(g.network) is not None else [Path(v) for v in values]


def _record_line(r: Any) -> str:
    meta = f"  {json.dumps(r.metadata, sort_keys=True)}" if r.metadata else ""
    return f"{r.identity}: {r.n_samples} sample{'s' if r.n_samples != 1 else ''}{meta}"


def _echo_record(r: Any, as_json: bool, head: str) -> None:
    """An identity's record after enroll / add: its JSON, or ``HEAD<identity>: N samples``."""
    if as_json:
        echo_json(r.to_dict())
    else:
        typer.echo(f"{head}{_record_line(r)}")


@gallery_app.command()
@clean_errors
def enroll(
    identity: str = typer.Argument(..., help="The new identity's name."),
    images: List[str] = typer.Argument(..., help="One or more images of it (texts, for a text model).", metavar="IMAGES|TEXTS..."),
    gallery: Path = GALLERY,
    model: Optional[Path] = MODEL,
    metadata: Optional[str] = typer.Option(None, "--metadata", help="JSON object kept with the identity."),
    scoring: Optional[str] = typer.Option(None, "--scoring", help="A new gallery's default rule: best or mean."),
    dim: Optional[int] = DIM,
    preprocess: str = typer.Option("none", "--preprocess", help="none (the model's plain loader) or signature (scans: crop to the ink, pad, invert, as --task signatures trains; recorded, and every probe of the identity is prepared the same way). A model that records its input recipe prepares files by it either way."),
    as_json: bool = JSON_OUT,
) -> None:
    """Enrol a new identity from images (creates the gallery file if needed)."""
    from ..gallery.references import enroll_references, model_prepares

    with _open(gallery, model, create=True, scoring=scoring, dim=dim) as g:
        meta = None if metadata is None else parse_json_object(metadata, option="--metadata", example=METADATA_EXAMPLE)
        if preprocess == "signature" and g.network is not None and model_prepares(g.network):
            typer.echo("note: the model records its input recipe; the files are prepared by it (--preprocess signature gives way)", err=True)
        r = g.enroll(identity, _inputs(g, images), metadata=meta) if preprocess == "none" else enroll_references(
            g, identity, _inputs(g, images), preprocess=preprocess, metadata=meta)
    _echo_record(r, as_json, "enrolled ")


@gallery_app.command("enroll-folder")
@clean_errors
def enroll_folder(
    folder: Path = typer.Argument(..., help="One sub-folder of images per new identity (the sub-folder's name is its name)."),
    gallery: Path = GALLERY,
    model: Optional[Path] = MODEL,
    batch: int = typer.Option(1000, "--batch", help="Identities per transaction (a batch is written whole or not at all)."),
) -> None:
    """Enrol many new identities at once (a bulk load): one embedding call and one transaction per --batch identities."""
    from ..data._files import images_in
    from ..errors import SiamkitError
    from ..gallery.bulk import enroll_many

    if not folder.is_dir():
        raise SiamkitError(f"{folder} is not a folder of identity sub-folders")
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        raise SiamkitError(f"{folder} has no identity sub-folders")
    items = [(p.name, [str(f) for f in images_in(p)]) for p in subs]
    empty = [name for name, files in items if not files]
    if empty:
        raise SiamkitError(f"{len(empty)} identity sub-folder(s) hold no image, e.g. {empty[0]!r}")
    with _open(gallery, model, create=True) as g:
        n = enroll_many(g, items, batch=batch)
    typer.echo(f"enrolled {n} identities")


@gallery_app.command()
@clean_errors
def add(
    identity: str = typer.Argument(..., help="An enrolled identity."),
    images: List[str] = typer.Argument(..., help="More images of it (texts, for a text model).", metavar="IMAGES|TEXTS..."),
    gallery: Path = GALLERY,
    model: Optional[Path] = MODEL,
    dim: Optional[int] = DIM,
    as_json: bool = JSON_OUT,
) -> None:
    """Add samples to an enrolled identity."""
    with _open(gallery, model, dim=dim) as g:
        r = g.add_samples(identity, _inputs(g, images))
    _echo_record(r, as_json, f"added {len(images)}: ")


@gallery_app.command()
@clean_errors
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
@clean_errors
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
        echo_json({"identities": [r.to_dict() for r in records], "model_fingerprint": meta.get("model_fingerprint")})
        return
    n_samples = sum(r.n_samples for r in records)
    typer.echo(
        f"{len(records)} identities, {n_samples} samples; model {meta.get('model_fingerprint') or meta.get('model_hash')}, "
        f"scoring {meta.get('scoring')}"
    )
    for r in records:
        typer.echo(f"  {_record_line(r)}")


@gallery_app.command()
@clean_errors
def verify(
    identity: str = typer.Argument(..., help="The claimed identity."),
    image: str = typer.Argument(..., help="The probe image (a text, for a text model).", metavar="IMAGE|TEXT"),
    gallery: Path = GALLERY,
    model: Optional[Path] = MODEL,
    scoring: Optional[str] = SCORING,
    rule: Optional[str] = typer.Option(None, "--rule", help="Decide from the K enrolled references: best (closest), mean (mean distance) or learned (a logistic rule on the closest, mean and farthest distance, fitted by calibrate-references), at the threshold `gallery calibrate-references` fitted for the rule and K; default: the gallery's scoring at the model's pair threshold."),
    dim: Optional[int] = DIM,
    as_json: bool = JSON_OUT,
) -> None:
    """1:1: is IMAGE the enrolled IDENTITY? (decision at the model's calibrated threshold)"""
    from ..gallery.references import probe_input

    with _open(gallery, model, scoring=scoring, dim=dim) as g:
        probe = _inputs(g, [image])[0]
        if rule is not None:
            return _verify_references(g, model, identity, probe, rule, as_json)
        r = g.verify(identity, probe_input(g, identity, probe))
    if as_json:
        echo_json(r.to_dict())
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


def _echo_identification(r: Any) -> None:
    """The decision of ``identify`` and its ranked candidates, as text."""
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
@clean_errors
def identify(
    image: str = typer.Argument(..., help="The probe image (a text, for a text model).", metavar="IMAGE|TEXT"),
    gallery: Path = GALLERY,
    model: Optional[Path] = MODEL,
    k: int = typer.Option(5, "-k", "--top", help="Candidates to show."),
    scoring: Optional[str] = SCORING,
    index: str = INDEX,
    dim: Optional[int] = DIM,
    as_json: bool = JSON_OUT,
) -> None:
    """1:N, open set: the closest identities, or "unknown" when none is close enough."""
    from ..errors import SiamkitError

    if k < 1:
        raise SiamkitError(f"-k must be >= 1, got {k}")
    with _open(gallery, model, scoring=scoring, index=index, dim=dim) as g:
        r = g.identify(_inputs(g, [image])[0], k=k)
    if as_json:
        echo_json(r.to_dict())
    else:
        _echo_identification(r)


@gallery_app.command()
@clean_errors
def reembed(
    gallery: Path = GALLERY,
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The NEW model folder to migrate the gallery to."),
) -> None:
    """Migrate the gallery to another model: re-embed every stored sample (one transaction)."""
    from ..errors import SiamkitError
    from ..gallery import Gallery

    if model is None:
        raise SiamkitError("--model is required: the model folder to migrate the gallery to")
    if isinstance(gallery, Path) and not gallery.exists():
        raise SiamkitError(f"gallery {gallery} does not exist")
    with Gallery.migrate(gallery, model) as g:
        n = g.n_samples
        fp = g.meta.get("model_fingerprint") or g.meta.get("model_hash")
    typer.echo(f"re-embedded {n} samples with model {fp}")


def _verify_references(g: Any, model: Any, identity: str, image: Path, rule: str, as_json: bool) -> None:
    """``gallery verify --rule``: the K references' distances and the calibrated decision."""
    from ..gallery.references import ReferenceCalibration, verify_references

    cal = ReferenceCalibration.load(model, expected_fingerprint=g.network.fingerprint)
    r = verify_references(g, identity, image, rule=rule, calibration=cal)
    if as_json:
        echo_json(r.to_dict())
        return
    typer.echo(f"identity:   {r.identity} ({r.k} references, rule {r.rule}, preprocessing {r.preprocess})")
    typer.echo(f"distance:   {r.distance:.6f}  (lower = more similar; to each reference: {', '.join(f'{d:.4f}' for d in r.distances)})")
    if r.same is not None:
        typer.echo(f"decision:   {'GENUINE' if r.same else 'FORGED / DIFFERENT'}  (threshold {r.threshold:.6g} for K={r.calibrated_k})")
        typer.echo(f"confidence: {r.confidence:.4f}  (probability of 'same')")
    else:
        typer.echo("decision:   none")
    if r.note:
        typer.echo(f"note:       {r.note}")


@gallery_app.command("calibrate-references")
@clean_errors
def calibrate_references(
    model: Optional[Path] = MODEL,
    data: Path = typer.Option(..., "--data", help="Held-out writers (WRITER/genuine + WRITER/forged), never the ones you enrol nor the ones the model trained on."),
    k: str = typer.Option("1,3,5", "--k", help="Reference counts to calibrate, comma-separated."),
    draws: int = typer.Option(5, help="Reference draws per writer and K."),
    method: str = typer.Option("eer", help="Threshold: eer, accuracy, or far (with --target-far)."),
    target_far: float = typer.Option(1e-3, help="False accept rate for --method far."),
    seed: int = typer.Option(0, help="Seed of the reference draws."),
) -> None:
    """Fit the threshold of each `verify --rule` (best, mean, learned) for each K on held-out
    writers' genuine vs skilled forgery decisions (and, for learned, the logistic rule
    itself); save MODEL/reference_calibration.json."""
    from ..data.signatures import load_signatures
    from ..errors import ClassOverlapError, SiamkitError
    from ..gallery.references import fit_reference_calibration
    from ..io import load_model
    from ..training.split_record import SplitRecord

    if model is None:
        raise SiamkitError("--model is required: the model folder to calibrate")
    try:
        ks = sorted({int(v) for v in k.split(",") if v.strip()})
    except ValueError:
        raise SiamkitError(f"--k must be comma-separated integers, got {k!r}") from None
    if method not in ("eer", "accuracy", "far"):
        raise SiamkitError(f"--method must be eer, accuracy or far, got {method!r}")
    if not ks or min(ks) < 1 or draws < 1:
        raise SiamkitError(f"--k values and --draws must be >= 1, got --k {k!r} --draws {draws}")
    net = load_model(model)
    sigs = load_signatures(data, image_size=net.input_spec.image_size, require_forged=True,
                           preprocess=net.input_spec.preprocessor() or True)
    record = SplitRecord.load(model.resolve().parent)
    common = record.overlap(list(sigs.writers)) if record is not None else []
    if common:
        raise ClassOverlapError(f"{len(common)} of the {len(sigs.writers)} writers in {data} were trained on (e.g. {common[0]!r}): "
                                "thresholds fitted on them would be optimistic; calibrate on held-out writers")
    cal = fit_reference_calibration(net, sigs, ks, draws=draws, seed=seed, threshold_method=method, target_far=target_far,
                                    source=str(data.resolve()))
    path = cal.save(model)
    for rule, per in cal.calibrators.items():
        typer.echo(f"{rule}: " + ", ".join(f"K={kk} threshold {c.threshold_:.4g} ({c.n_pos_} genuine, {c.n_neg_} forged)" for kk, c in per.items()))
    typer.echo(f"fitted on {len(sigs.writers)} writers ({', '.join(sigs.writers)}); saved {path}; `gallery verify --rule` uses it")
