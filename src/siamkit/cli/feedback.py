"""``siamkit feedback add / list / stats / review / adapt``: reported mistakes in the feedback store,
and the gallery adapted to them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ._common import FEEDBACK_STORE, JSON_OUT, clean_errors, command_group, echo_json, parse_json_object

__all__ = ["feedback_app"]

feedback_app = command_group("Reported mistakes (the feedback store).")


def _image_arg(path: Path, what: str) -> tuple[bytes, str]:
    """The bytes and sniffed format of an image option's file."""
    from ..errors import DataError
    from ..service.images import sniff_image_format

    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    data = path.read_bytes()
    fmt = sniff_image_format(data[:32])
    if fmt is None:
        raise DataError(f"{what} {path} is not a PNG, JPEG, GIF, BMP or WebP image")
    return data, fmt


def _model_fingerprint(model: Path, images: list[tuple[Optional[tuple[bytes, str]], str]], check_images: bool) -> Optional[str]:
    """The fingerprint of ``model``; with ``check_images``, each image decoded with its input spec first."""
    from ..errors import SiamkitError
    from ..io import load_model
    from ..service.images import Limits, decode_image

    net = load_model(model)
    fingerprint = getattr(net, "fingerprint", None)
    if check_images:
        spec = net.input_spec.require_image()
        for data, what in images:
            if data is not None:
                try:
                    decode_image(data[0], spec, Limits(), what=what)
                except Exception as e:  # noqa: BLE001 - UploadError (and any decode failure): one error line
                    raise SiamkitError(str(e)) from None
    return fingerprint


@feedback_app.command("add")
@clean_errors
def feedback_add(
    feedback: Path = FEEDBACK_STORE,
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
    from ..feedback import open_feedback

    a = _image_arg(image_a, "--image-a")
    b = _image_arg(image_b, "--image-b") if image_b is not None else None
    pred: dict[str, Any] = parse_json_object(predicted, option="--predicted") if predicted else {}
    truth: dict[str, Any] = {"identity": true_identity} if kind == "identify" else {"same": same}
    fingerprint = None
    if model is not None:
        fingerprint = _model_fingerprint(model, [(a, "--image-a"), (b, "--image-b")], model_checked)
    with open_feedback(feedback) as store:
        fid = store.add(
            actor=f"cli:{reporter}", kind=kind, image_a=a, image_b=b, identity=identity, predicted=pred, truth=truth,
            reporter=reporter, note=note, model_fingerprint=fingerprint,
        )
    typer.echo(f"feedback {fid} recorded in {feedback}")


@feedback_app.command("list")
@clean_errors
def feedback_list(
    feedback: Path = FEEDBACK_STORE,
    status: Optional[str] = typer.Option(None, help="new, used, rejected or held (contradicted, waiting for review)."),
    as_json: bool = JSON_OUT,
) -> None:
    """List the reported mistakes (without the images)."""
    from ..feedback import open_feedback

    with open_feedback(feedback, create=False) as store:
        rows = [r.summary() for r in store.list(status=status)]
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        typer.echo(f"{r['id']:>5}  {r['status']:<8} {r['kind']:<15} truth={json.dumps(r['truth'])}  by {r['actor']}")


@feedback_app.command("stats")
@clean_errors
def feedback_stats(
    feedback: Path = FEEDBACK_STORE,
    top: int = typer.Option(10, min=1, help="How many of the most reported identities to list."),
    as_json: bool = JSON_OUT,
) -> None:
    """Reports by status (new / used / rejected / held), by kind and by identity."""
    from ..feedback import open_feedback

    with open_feedback(feedback, create=False) as store:
        st = store.stats(top=top)
    if as_json:
        echo_json(st)
        return
    typer.echo(f"{st['total']} reports from {st['reporters']} reporters ({st['total'] - st['confirmations']} mistake(s), "
               f"{st['confirmations']} confirmation(s)); {st['finetunes']} fine-tune(s) so far")
    typer.echo("by status: " + ", ".join(f"{k} {v}" for k, v in st["by_status"].items()))
    typer.echo("by kind:   " + ", ".join(f"{k} {v}" for k, v in st["by_kind"].items()))
    if st["top_identities"]:
        typer.echo("most reported identities: " + ", ".join(f"{w} ({n})" for w, n in st["top_identities"]))


@feedback_app.command("review")
@clean_errors
def feedback_review(
    feedback_id: int = typer.Argument(..., help="The report's id (see `siamkit feedback list --status held`)."),
    feedback: Path = FEEDBACK_STORE,
    accept: bool = typer.Option(..., "--accept/--reject", help="The report is right (its contradicting reports are rejected) / wrong."),
    reviewer: str = typer.Option(..., "--reviewer", help="Who reviews it (audited)."),
) -> None:
    """Settle a report: --accept it (reports that contradict it are rejected, it may teach
    again) or --reject it."""
    from ..feedback import open_feedback, review_report

    with open_feedback(feedback, create=False) as store:
        changed = review_report(store, feedback_id, accept=accept, actor=f"cli:{reviewer}")
    typer.echo(f"back to new: {changed['new'] or 'none'}; rejected: {changed['rejected'] or 'none'}")


@feedback_app.command("adapt")
@clean_errors
def feedback_adapt(
    gallery: Path = typer.Option(..., "--gallery", "-g", help="The gallery to adapt (a SQLite file or postgresql:// URL)."),
    model: Path = typer.Option(..., "--model", "-m", help="The gallery's model folder (calibrated, or a calibrated gallery)."),
    feedback: Optional[Path] = typer.Option(None, "--feedback", help="The feedback store (default: GALLERY.feedback.sqlite)."),
    min_reporters: int = typer.Option(2, "--min-reporters", help="Distinct reporters a report needs before it counts."),
    prior: float = typer.Option(5.0, "--prior", help="How many reports the global threshold is worth (shrinkage; > 0)."),
    templates: bool = typer.Option(True, "--templates/--no-templates", help="Enrol confirmed genuine probes as samples."),
    confirmations: bool = typer.Option(True, "--confirmations/--no-confirmations",
                                       help="Also learn from reports that confirm a decision (a confirmed match is a template update)."),
    negatives: bool = typer.Option(True, "--negatives/--no-negatives",
                                   help="Keep confirmed impostor probes as negative templates of the identity they claimed."),
    as_json: bool = JSON_OUT,
) -> None:
    """Gallery-side adaptation, no training: enrol confirmed falsely rejected probes as
    samples, give each reported identity its own threshold, shrunk toward the global one, and keep
    confirmed impostor probes as its negative templates (verify and identify use all three)."""
    from ..errors import SiamkitError
    from ..feedback import FeedbackStore, default_feedback_path
    from ..gallery import Gallery
    from ..gallery.adapt import adapt_gallery
    from ..gallery.backend import gallery_location

    if not prior > 0 or min_reporters < 1:
        raise SiamkitError(f"--prior must be > 0 and --min-reporters >= 1 (got {prior}, {min_reporters})")
    where = gallery_location(str(gallery))
    if isinstance(where, Path) and not where.exists():
        raise SiamkitError(f"gallery {where} does not exist")
    fb = feedback or default_feedback_path(where)
    if not Path(fb).exists():
        raise SiamkitError(f"feedback store {fb} does not exist")
    with Gallery.open(where, model, create=False) as g, FeedbackStore.open(fb, create=False) as store:
        rec = adapt_gallery(g, store, min_reporters=min_reporters, prior=prior, add_templates=templates, negatives=negatives,
                           confirmations=confirmations, actor="cli:adapt")
    if as_json:
        echo_json(rec)
        return
    moved = ", ".join(f"{k} {v:.4f}" for k, v in sorted(rec["thresholds"].items())[:10])
    typer.echo(f"{len(rec['thresholds'])} identities with their own threshold (global {rec['global_threshold']:.4f})"
               + (f": {moved}" if moved else "") + f"; {len(rec['templates_added'])} confirmed probe(s) enrolled as samples"
               + f"; {sum(rec['negatives'].values())} negative template(s)")
