"""Commands on a trained model: ``summary``, ``compare``, ``calibrate`` and ``evaluate``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import typer

from ._common import JSON_OUT, clean_errors, echo_json, fail, parse_shape

__all__ = ["calibrate", "compare", "evaluate", "summary"]

MODEL_DIR = typer.Argument(..., help="A model folder.")
MAX_PAIRS = typer.Option(500_000, help="Pairs drawn from a folder at most.")


@clean_errors
def summary(
    model: str = typer.Argument(..., help="A model folder, or an encoder name (conv4, resnet, koch, mlp)."),
    input_shape: Optional[str] = typer.Option(None, help="C,H,W (images) or F (vectors); default: the model's."),
    embedding_dim: Optional[int] = typer.Option(None, help="For an encoder name: the embedding size."),
) -> None:
    """Print each layer's output shape and parameter count, and the totals."""
    from ..encoders import create_encoder, list_encoders
    from ..io import load_model
    from ..summary import summarize

    path = Path(model)
    net: Any
    if path.exists():
        net = load_model(path)
        shape = parse_shape(input_shape) if input_shape else net.input_spec.shape
        if not shape:
            fail("the model does not record its input shape; pass --input-shape")
    elif model in list_encoders():
        if not input_shape:
            fail("pass --input-shape for an encoder name, e.g. --input-shape 1,105,105")
        shape = parse_shape(input_shape)
        kwargs: dict[str, Any] = {"in_features": int(math.prod(shape))} if model == "mlp" else {"in_channels": shape[0]}
        if embedding_dim is not None:
            kwargs["embedding_dim"] = embedding_dim
        net = create_encoder(model, **kwargs)
    else:
        fail(f"{model!r} is neither a model folder nor an encoder name ({', '.join(list_encoders())})")
    typer.echo(summarize(net, shape).to_text())


@clean_errors
def compare(
    model: Path = MODEL_DIR,
    image_a: Optional[str] = typer.Argument(None, help="First image (or text, when MODEL is a text model)."),
    image_b: Optional[str] = typer.Argument(None, help="Second image (or text)."),
    as_json: bool = JSON_OUT,
    runtime: str = typer.Option("torch", help="torch (MODEL is a model folder) or onnx (MODEL is a `siamkit export` folder)."),
    batch: Optional[Path] = typer.Option(None, "--batch", help="A CSV of path_a,path_b (optional same): one decision per line, and a warning when the pairs look unlike the calibration's data."),
    dim: Optional[int] = typer.Option(None, "--dim", help="A Matryoshka embedding size (with that size's calibration, `calibrate --dims`); torch runtime, two images."),
    adaptive: bool = typer.Option(False, "--adaptive", help="Decide at the smallest confident size (the cascade `calibrate --dims` fitted); torch runtime, two images."),
) -> None:
    """Distance (lower = closer) and similarity score (higher = more similar) of two images
    (or of every pair of a CSV with --batch; or the cosine similarity of two texts, for a text model)."""
    if batch is not None or image_a is None or image_b is None:
        from .calibration import compare_batch

        if batch is None or image_a is not None or runtime != "torch":
            fail("give two images, or --batch pairs.csv alone (torch runtime)")
        return compare_batch(model, batch, as_json)
    from ..text.model import is_text_model

    if runtime == "torch" and is_text_model(model):
        from .text import compare_text

        return compare_text(model, image_a, image_b, as_json=as_json)
    if (dim is not None or adaptive) and runtime != "torch":
        fail("--dim and --adaptive compare with the torch runtime (a model folder)")
    if adaptive:
        if dim is not None:
            fail("give --dim or --adaptive, not both")
        from ..verify import compare_files_adaptive

        ra = compare_files_adaptive(model, Path(image_a), Path(image_b))
        if as_json:
            echo_json(ra, sort_keys=False)
            return
        steps = ", ".join(f"{k} dims {v:.6f}" for k, v in ra["distances"].items())
        typer.echo(f"decision:   {'SAME' if ra['same'] else 'DIFFERENT'}  (decided at {ra['decided_at']} of "
                   f"{'/'.join(map(str, ra['dims']))} dims; threshold {ra['threshold']:.6g})")
        typer.echo(f"distances:  {steps}  ({ra['distance_kind']})")
        return
    if runtime == "onnx":
        r = _compare_onnx(model, Path(image_a), Path(image_b))
    elif runtime == "torch":
        from ..verify import compare_files

        r = compare_files(model, Path(image_a), Path(image_b), dim=dim)
    else:
        fail(f"--runtime must be torch or onnx, got {runtime!r}")
    if as_json:
        echo_json(r, sort_keys=False)
        return
    typer.echo(f"distance:   {r['distance']:.6f}  (lower = more similar; {r['distance_kind']})")
    typer.echo(f"score:      {r['score']:.6f}  (higher = more similar)")
    if r.get("same") is not None:
        typer.echo(f"decision:   {'SAME' if r['same'] else 'DIFFERENT'}  (calibrated threshold {r['threshold']:.6g})")
        typer.echo(f"confidence: {r['confidence']:.4f}  (probability of 'same')")
    else:
        typer.echo("decision:   none (the model is not calibrated: run `siamkit calibrate`)")


def _compare_onnx(export_dir: Path, image_a: Path, image_b: Path) -> dict[str, Any]:
    """compare_files' answer, from an export folder through onnxruntime."""
    from ..export.runtime import OnnxVerifier

    v = OnnxVerifier.from_dir(export_dir)
    r = v.verify_files(image_a, image_b).to_dict()
    r["distance_kind"] = v.distance_kind
    return r


def _scored(net: Any, data: Path, max_pairs: int, seed: int, **protocol: Any) -> tuple[Any, Any]:
    """Score a split given as an image folder or a pair CSV.

    Returns (scored pairs, the folder's dataset or None for a pair CSV).
    """
    from ..data.images import ImageFolderDataset
    from ..data.pairs import PairCSVDataset
    from ..evaluation.protocols import score_folder, score_pair_csv
    spec = net.input_spec
    if not spec.is_image:
        fail("evaluate and calibrate take image models; this model was trained on vectors")
    size, ch = spec.image_size, int(spec.channels)
    ds = None
    if data.is_file() and data.suffix.lower() == ".csv":
        scored = score_pair_csv(net, PairCSVDataset.from_csv(data, image_size=size, channels=ch, preprocess=spec.preprocessor()),
                                baseline=protocol.get("baseline", True))
    else:
        ds = ImageFolderDataset.from_folder(data, image_size=size, channels=ch, preprocess=spec.preprocessor())
        check = protocol.pop("check_classes", None)
        if check is not None:
            check(ds.classes)
        scored = score_folder(net, ds, max_pairs=max_pairs, seed=seed, **protocol)
    if ds is None and protocol.get("check_classes") is not None:
        scored.split["class_overlap"] = "not checked: a pair file has no class names"
    scored.split["data"] = str(data.resolve())
    return scored, ds


@clean_errors
def calibrate(
    model: Path = MODEL_DIR,
    data: Path = typer.Option(..., "--data", help="Validation split: an image folder (one sub-folder per class) or a path_a,path_b,same CSV."),
    method: str = typer.Option("eer", help="Threshold: eer, accuracy, or far (with --target-far)."),
    target_far: Optional[float] = typer.Option(None, help="False accept rate for --method far (default 1e-3) or of never-enrolled probes for --mode identification (default 1e-2)."),
    confidence: str = typer.Option("platt", help="Confidence mapping: platt or isotonic."),
    max_pairs: int = MAX_PAIRS,
    seed: int = typer.Option(0, help="Seed of the pair subset."),
    mode: str = typer.Option("pair", help="pair (the 1:1 threshold) or identification (the open-set 'unknown' threshold of gallery identify, fitted on simulated galleries of the split's identities)."),
    gallery_fraction: float = typer.Option(0.75, help="--mode identification: share of the identities enrolled per simulated gallery (the others probe as never enrolled)."),
    enrol_samples: Optional[int] = typer.Option(None, help="--mode identification: images enrolled per identity (default: half of its images)."),
    dims: Optional[str] = typer.Option(None, "--dims", help="Matryoshka sizes (e.g. 16,32,64,128, or all): a calibration per size (calibration-dimD.json) and the adaptive size cascade (adaptive.json) on the same pairs; an image folder."),
    max_disagreement: float = typer.Option(0.005, help="--dims: share of the pairs the adaptive cascade may decide at a smaller size differently from the full size (sets its bands)."),
) -> None:
    """Fit the decision threshold and confidence on a validation split; save calibration.json."""
    from ..calibration import Calibrator

    from ..io import load_model

    if mode not in ("pair", "identification"):
        fail(f"--mode must be pair or identification, got {mode!r}")
    net = load_model(model)
    if dims is not None:
        from .sizes import calibrate_sizes

        if mode != "pair":
            fail("--dims calibrates the pair threshold per size; leave out --mode")
        return calibrate_sizes(model, net, data, dims, method=method, target_far=target_far if target_far is not None else 1e-3,
                               confidence=confidence, max_pairs=max_pairs, seed=seed, max_disagreement=max_disagreement)
    scored, _ = _scored(net, data, max_pairs, seed, baseline=False, one_shot=False)
    far = target_far if target_far is not None else (1e-2 if mode == "identification" else 1e-3)
    cal = Calibrator(threshold_method=method, target_far=far if mode == "pair" else 1e-3, confidence_method=confidence)
    n_classes = None if scored.labels is None else int(scored.labels.unique().numel())
    cal.fit(scored.distances, scored.same, split_name=scored.split["data"], model_fingerprint=net.fingerprint, n_classes=n_classes)
    if mode == "identification":
        from .calibration import calibrate_identification

        return calibrate_identification(model, net, scored, target_far=far, gallery_fraction=gallery_fraction,
                                        enrol_samples=enrol_samples, seed=seed, pair_calibrator=cal)
    path = cal.save(model)
    typer.echo(f"threshold {cal.threshold_:.6g} ({method}) fitted on {cal.n_pos_:,} genuine and {cal.n_neg_:,} impostor pairs")
    typer.echo(f"saved {path}; `siamkit compare` and `siamkit evaluate` now use it")


def _overlap_check(model: Path, train_run: Optional[Path], allow_overlap: bool, notes: dict[str, Any]) -> Any:
    """A function refusing (or, with --allow-overlap, noting) test classes that were trained
    on, from ``--train-run`` or the run folder holding the model; None when no split is known."""
    from ..errors import ClassOverlapError
    from ..training.split_record import SPLIT_FILE, SplitRecord

    run = train_run if train_run is not None else model.resolve().parent
    record = SplitRecord.load(run)
    if record is None:
        if train_run is not None:
            fail(f"--train-run {train_run} has no {SPLIT_FILE} (runs record their split since this version)")
        return None

    def check(classes: list[str]) -> None:
        notes["train_run"] = str(run)
        try:
            record.check_disjoint(classes, "the test folder")
        except ClassOverlapError as e:
            if not allow_overlap:
                raise
            common = record.overlap(classes)
            notes["class_overlap_warning"] = (f"WARNING: {len(common)} of the {len(classes)} test classes were "
                                              f"trained on (--allow-overlap); these numbers overstate the model")
            notes["overlapping_classes"] = common
            typer.echo(f"WARNING: {e}", err=True)
        else:
            notes["class_overlap"] = f"none: the test classes are disjoint from the {len(record.train_classes)} training classes"

    return check


@clean_errors
def evaluate(
    model: Path = MODEL_DIR,
    data: Path = typer.Option(..., "--data", help="Test split: an image folder (one sub-folder per class) or a path_a,path_b,same CSV."),
    out: Path = typer.Option(Path("report"), help="Report folder (report.md, PNGs, metrics.json)."),
    max_pairs: int = MAX_PAIRS,
    seed: int = typer.Option(0, help="Seed of the pair subset and episodes."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also score raw pixels on the same pairs (--no-baseline: not computed at all)."),
    n_way: Optional[int] = typer.Option(None, "--n-way", help="N of the N-way K-shot episodes (default: 5 and 20 where there are enough classes)."),
    k_shot: int = typer.Option(1, "--k-shot", help="Supports per class in an episode."),
    train_run: Optional[Path] = typer.Option(None, "--train-run", help="The training run folder (its split.json); default: the folder holding MODEL, if it has one."),
    allow_overlap: bool = typer.Option(False, "--allow-overlap", help="Score a test folder that shares classes with training (marked in the report)."),
    dims: Optional[str] = typer.Option(None, "--dims", help="Embedding sizes (Matryoshka prefixes), e.g. 16,32,64,128 or all: one table of ROC AUC / EER / one-shot per size (and the adaptive cascade of `calibrate --dims`), OUT/sizes.md; an image folder."),
    retrieval_queries: int = typer.Option(10_000, "--retrieval-queries", help="Retrieval metrics from at most this many query images (a seeded subsample, each ranked against every image; 0 = all: time O(N^2))."),
    runs: Optional[Path] = typer.Option(None, "--runs", help="Also score Lake et al.'s official one-shot runs in this folder (Omniglot's one_shot_runs: runNN/training, test, class_labels.txt), with the model's input recipe and TTA."),
    protocol: str = typer.Option("pairs", "--protocol", help="pairs (all pairs of a class folder or a pair CSV) or signatures (WRITER/genuine + WRITER/forged, writer-independent: genuine-genuine = same, genuine-skilled forgery = different; pooled and per-writer EER, shortcut probes, random forgeries apart)."),
) -> None:
    """Score a test split: ROC, EER, TAR@FAR, DET, confusion at the calibrated threshold,
    one-shot accuracy, retrieval; writes a report folder."""
    from ..calibration import Calibrator
    from ..evaluation.report import write_report
    from ..io import load_model
    from ..text.model import is_text_model

    if is_text_model(model):
        from .text import evaluate_text

        return evaluate_text(model, data, out)
    if k_shot < 1:
        fail(f"--k-shot must be >= 1, got {k_shot}")
    if retrieval_queries < 0:
        fail(f"--retrieval-queries must be >= 0 (0 = all), got {retrieval_queries}")
    net = load_model(model)
    cal = Calibrator.load(model, expected_fingerprint=net.fingerprint)
    if cal is not None:
        cal.check_not_fitted_on(str(data.resolve()))
    notes: dict[str, Any] = {}
    check = _overlap_check(model, train_run, allow_overlap, notes)
    if dims is not None:
        from .sizes import evaluate_sizes

        return evaluate_sizes(model, net, data, dims, out, max_pairs=max_pairs, seed=seed, n_way=n_way, k_shot=k_shot,
                              check=check, notes=notes)
    if protocol == "signatures":
        return _evaluate_signatures(net, data, out, baseline, seed, check, cal, notes)
    if protocol != "pairs":
        fail(f"--protocol must be pairs or signatures, got {protocol!r}")
    from ..data.images import layout_note

    scored, ds = _scored(net, data, max_pairs, seed, baseline=baseline, check_classes=check,
                        n_way=[n_way] if n_way is not None else None, k_shot=k_shot, retrieval_queries=retrieval_queries or None)
    scored.split.update(notes)
    if runs is not None:
        from ..evaluation.protocols import score_one_shot_runs

        scored.extra["official_one_shot_runs"] = r = score_one_shot_runs(net, runs, baseline=baseline)
        scored.split["official_one_shot_runs"] = f"{r['runs']} runs x {r['queries'] // r['runs']} queries, {r['n_way']}-way, from {runs}"
    from .calibration import domain_check

    if (dom := domain_check(cal, scored, f"{data.name} (its impostor pairs)")) is not None:
        scored.extra["calibration_domain"] = dom
    title = f"{model.name} on {data.name}" + (" (TEST CLASSES OVERLAP TRAINING)" if "class_overlap_warning" in notes else "")
    m = write_report(
        out, scored.distances, scored.same, title=title, split=scored.split,
        calibration=cal.to_dict() if cal is not None else None, embeddings=scored.embeddings, labels=scored.labels,
        extra=scored.extra, baseline=("raw pixels", scored.baseline) if scored.baseline is not None else None,
    )
    v, t = m["verification"], m["at_threshold"]
    typer.echo(f"{scored.split['images']:,} images of {scored.split['classes']:,} classes" + layout_note(ds.classes) + f"; TTA {net.input_spec.tta or 'none'}"
               if ds is not None else f"{scored.split['pairs']:,} pairs from {data.name}")
    typer.echo(f"ROC AUC {v['roc_auc']:.4f}   EER {v['eer']:.4f}   accuracy {t['accuracy']:.4f} at threshold {t['threshold']:.4g} ({t['source']})")
    for k, val in scored.extra.items():
        if "accuracy" in val:
            raw = f" (raw pixels {val['baseline_accuracy']:.4f})" if "baseline_accuracy" in val else ""
            typer.echo(f"{k.replace('_', ' ')}: {val['accuracy']:.4f} ± {val['ci95']:.4f}{raw}")
    if "baseline" in m:
        typer.echo(f"raw pixels: ROC AUC {m['baseline']['roc_auc']:.4f}   EER {m['baseline']['eer']:.4f}")
    else:
        typer.echo("raw-pixel baseline: not computed (--no-baseline)")
    if "class_overlap_warning" in notes:
        typer.echo(notes["class_overlap_warning"])
    typer.echo(f"report: {out / 'report.md'}")


def _evaluate_signatures(net: Any, data: Path, out: Path, baseline: bool, seed: int, check: Any, cal: Any, notes: dict[str, Any]) -> None:
    """``evaluate --protocol signatures``: the library call and its summary lines."""
    from ..evaluation.signatures import evaluate_signature_folder

    m = evaluate_signature_folder(net, data, out, baseline=baseline, seed=seed, check_writers=check,
                                  calibration=cal.to_dict() if cal is not None else None)
    sk = m["signatures"]["skilled"]
    typer.echo(f"writers: {', '.join(m['signatures']['writers'])}; {notes.get('class_overlap', 'training writers unknown (no split.json)')}")
    for name, r in sk.items():
        p = r["per_writer_eer"]
        typer.echo(f"skilled forgeries, {name.replace('probe:', 'probe ')}: ROC AUC {r['roc_auc']:.4f}   EER {r['eer']:.4f}"
                   f"   per-writer EER {p['mean']:.4f} ± {p['sd']:.4f} (worst {p['worst']:.4f}, {p['worst_writer']})")
    for name, r in m["signatures"].get("random", {}).items():
        typer.echo(f"random forgeries, {name.replace('probe:', 'probe ')}: ROC AUC {r['roc_auc']:.4f}   EER {r['eer']:.4f}")
    if not baseline:
        typer.echo("raw-pixel baseline: not computed (--no-baseline)")
    if "class_overlap_warning" in notes:
        typer.echo(notes["class_overlap_warning"])
    typer.echo(f"per-writer EER of every writer: {out / 'metrics.json'}; report: {out / 'report.md'}")
