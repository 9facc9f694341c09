"""The calibration parts of ``siamkit calibrate`` / ``evaluate`` / ``compare --batch`` /
``gallery calibrate``: the identification threshold, the shift warnings, batch decisions.

A thin edge: the work is in :mod:`siamkit.calibration`, :mod:`siamkit.verify_batch` and
:mod:`siamkit.gallery.selfcal`; these functions parse, call and print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ._common import JSON_OUT, clean_errors, echo_json, fail

__all__ = ["calibrate_identification", "domain_check", "compare_batch", "gallery_calibrate"]


def calibrate_identification(model: Path, net: Any, scored: Any, *, target_far: float, gallery_fraction: float,
                             enrol_samples: Optional[int], seed: int, pair_calibrator: Any) -> None:
    """``siamkit calibrate --mode identification``: fit the open-set threshold and store it
    beside the pair threshold (kept when the model has one, else ``pair_calibrator``).

    Args:
        model: the model folder.
        net: the loaded network.
        scored: the validation split scored by ``_scored`` (embeddings and labels).
        target_far: share of never-enrolled probes that may be accepted.
        gallery_fraction: share of the identities enrolled per simulated gallery.
        enrol_samples: images enrolled per identity (None: half).
        seed: the seed of the simulated galleries.
        pair_calibrator: a pair calibrator fitted on the same split, used when the model
            has no calibration yet.

    Returns:
        None (prints, saves calibration.json).
    """
    from ..calibration import Calibrator, fit_open_set_threshold
    from ..inference import network_pairwise

    if scored.embeddings is None:
        fail("--mode identification needs an image folder (one sub-folder per identity), not a pair file")
    d = network_pairwise(net, scored.embeddings, scored.embeddings).double().numpy()
    ot = fit_open_set_threshold(d, scored.labels.numpy(), target_far=target_far, gallery_fraction=gallery_fraction,
                                enrol_per_identity=enrol_samples, seed=seed, split_name=scored.split["data"])
    cal = Calibrator.load(model, expected_fingerprint=net.fingerprint)
    kept = cal is not None
    cal = (cal if kept else pair_calibrator).set_identification(ot)
    path = cal.save(model)
    typer.echo(f"identification threshold {ot.threshold:.6g}: at most {target_far:g} of never-enrolled probes accepted "
               f"(realised {ot.far:.4f} on {ot.n_unknown_probes:,} unknown probes, {ot.n_rotations} simulated galleries of "
               f"~{ot.n_enrolled:.0f} identities); DIR {ot.dir:.4f} on {ot.n_known_probes:,} known probes")
    pair = "kept" if kept else f"fitted on the same split ({cal.method_})"
    typer.echo(f"pair threshold {cal.threshold_:.6g} ({pair}); saved {path}; `siamkit gallery identify` and the "
               "service's identify now use the identification threshold")


def domain_check(cal: Any, scored: Any, what: str) -> Optional[dict[str, Any]]:
    """Warn when the impostor pairs of an evaluation split do not look like the calibration's.

    Args:
        cal: the model's calibrator (None: nothing to check).
        scored: the scored split (distances, same).
        what: the split's name for the message.

    Returns:
        The shift report as a dict for the report's metrics, or None.
    """
    from ..calibration import check_shift

    if cal is None or getattr(cal, "scores_", None) is None:
        return None
    imp = scored.distances[~scored.same].double().numpy()
    if len(imp) < 30:
        return None
    n_classes = None if scored.labels is None else int(scored.labels.unique().numel())
    r = check_shift(cal.scores_, imp, threshold=float(cal.threshold_), data=what, n_classes=n_classes)
    if r.shifted:
        typer.echo(r.message, err=True)
    return r.to_dict()


@clean_errors
def compare_batch(model: Path, batch: Path, as_json: bool = JSON_OUT) -> None:
    """``siamkit compare MODEL --batch pairs.csv``: one decision per line (JSON lines with
    ``--json``), and a warning on stderr when the pairs look unlike the calibration's data."""
    from ..verify import Verifier
    from ..verify_batch import compare_pair_list

    res = compare_pair_list(Verifier.from_dir(model), batch)
    if not as_json:
        typer.echo("path_a,path_b,distance,score,same,confidence")
    for r in res.rows:
        if as_json:
            typer.echo(json.dumps(r, sort_keys=False))
        else:
            same = "" if r["same"] is None else ("SAME" if r["same"] else "DIFFERENT")
            conf = "" if r["confidence"] is None else f"{r['confidence']:.4f}"
            typer.echo(f"{r['path_a']},{r['path_b']},{r['distance']:.6f},{r['score']:.6f},{same},{conf}")
    if res.shift is not None and res.shift.shifted:
        typer.echo(res.shift.message, err=True)
    for note in res.notes:
        typer.echo(f"note: {note}", err=True)


@clean_errors
def gallery_calibrate(
    gallery: Path = typer.Option(..., "--gallery", "-g", help="The gallery file (SQLite)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The model folder the gallery uses."),
    target_far: float = typer.Option(1e-3, "--target-far", help="False accept rate to fit the gallery's threshold for."),
    scoring: Optional[str] = typer.Option(None, "--scoring", help="best or mean; default: the gallery's."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Fit and print, do not store."),
    as_json: bool = JSON_OUT,
) -> None:
    """Re-fit the gallery's own threshold for a target FAR from the impostor trials it holds
    (every sample against every other enrolled identity), with confidence intervals; verify
    and identify then use it. Also checks the enrolled identities against the model's
    calibration data."""
    from ..errors import SiamkitError
    from ..gallery import Gallery
    from ..gallery.selfcal import calibrate_gallery, gallery_shift

    if model is None:
        raise SiamkitError("--model is required: the model folder the gallery was built with")
    if not gallery.exists():
        raise SiamkitError(f"gallery {gallery} does not exist (enroll creates it)")
    with Gallery.open(gallery, model, create=False) as g:
        rec = calibrate_gallery(g, target_far, scoring=scoring, save=not dry_run)
        shift = gallery_shift(g)
    if as_json:
        echo_json({**rec, "shift": None if shift is None else shift.to_dict(), "saved": not dry_run})
        return
    lo, hi = rec["far_ci"]
    tlo, thi = rec["threshold_ci"]
    typer.echo(f"verify threshold {rec['threshold']:.6g} at target FAR {target_far:g} ({rec['scoring']} rule): "
               f"FAR {rec['far']:.2e} on {rec['n_impostor_trials']:,} impostor trials (95% CI {lo:.2e}-{hi:.2e}); "
               f"threshold 95% CI {tlo:.6g}-{thi:.6g}")
    ident = rec["identification"]
    if ident is not None:
        a, b = ident["far_ci"]
        typer.echo(f"identify threshold {ident['threshold']:.6g}: false alarms {ident['far']:.2e} on "
                   f"{ident['n_unknown_probes']:,} leave-one-identity-out searches (95% CI {a:.2e}-{b:.2e})")
    else:
        typer.echo(rec["note"])
    if shift is not None:
        typer.echo(shift.message, err=shift.shifted)
    typer.echo("not stored (--dry-run)" if dry_run else f"stored in {gallery}; `gallery verify` / `gallery identify` use it")
