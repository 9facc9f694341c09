"""The ``siamkit`` command: a thin edge that parses options once and calls the library.

Bad input ends with one line ``error: ...`` on stderr and exit code 2, never a
traceback (set ``SIAMKIT_DEBUG=1`` to see one).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer

from .errors import SiamkitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="siamkit: Siamese networks for similarity learning.",
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _mount_subcommands() -> None:
    """Command groups that live next to their library code (they import lazily)."""
    from .anomaly_cli import anomaly_app
    from .gallery.cli import gallery_app
    from .service.cli import feedback_app, finetune_command, keys_app, serve

    app.add_typer(gallery_app, name="gallery")
    app.add_typer(anomaly_app, name="anomaly")
    app.command()(serve)
    app.command("finetune")(finetune_command)
    app.add_typer(keys_app, name="keys")
    app.add_typer(feedback_app, name="feedback")


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _clean_errors(fn: F) -> F:
    """Turn user errors into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("SIAMKIT_DEBUG"):
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (SiamkitError, FileNotFoundError, NotADirectoryError, PermissionError, FloatingPointError) as e:
            _fail(str(e))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as e:  # noqa: BLE001 - the CLI edge: report, never a traceback
            _fail(f"unexpected {type(e).__name__}: {e} (set SIAMKIT_DEBUG=1 for the traceback)", 1)

    return wrapper  # type: ignore[return-value]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise SiamkitError(f"--input-shape must be integers like 1,105,105, got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise SiamkitError(f"--input-shape must be positive integers like 1,105,105, got {text!r}")
    return shape


def _parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    shape = _parse_shape(text)
    if len(shape) == 1:
        return (shape[0], shape[0])
    if len(shape) == 2:
        return (shape[0], shape[1])
    raise SiamkitError(f"--image-size takes SIDE or H,W, got {text!r}")


@app.command()
@_clean_errors
def demo(
    out: Path = typer.Option(Path("siamkit-demo"), help="Report folder."),
    epochs: int = typer.Option(20, help="Training epochs."),
    seed: int = typer.Option(0, help="Random seed."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: on a terminal)."),
) -> None:
    """Train on scikit-learn's handwritten digits 0-6 and report on the unseen digits 7-9."""
    from .demo import run_demo

    result = run_demo(out, epochs=epochs, seed=seed, progress=progress)
    m, b = result["model"], result["baseline"]
    typer.echo(f"\nsiamkit demo: digits 0-6 for training, unseen digits 7-9 for testing ({result['test_images']} images)")
    typer.echo(f"{'':28}{'ROC AUC':>10}{'EER':>9}{'3-way 1-shot':>15}")
    typer.echo(f"{'trained Siamese network':28}{m['roc_auc']:>10.4f}{m['eer']:>9.4f}{m['one_shot_accuracy']:>15.4f}")
    typer.echo(f"{'raw pixels (no training)':28}{b['roc_auc']:>10.4f}{b['eer']:>9.4f}{b['one_shot_accuracy']:>15.4f}")
    typer.echo(f"trained in {result['train_seconds']:.1f} s; report: {out}/ (metrics.json, roc.png, distances.png, embeddings.png, model/)")


@app.command()
@_clean_errors
def train(
    data: Optional[Path] = typer.Option(None, "--data", help="Folder with one sub-folder of images per class."),
    out: Path = typer.Option(Path("runs/train"), help="Output folder: model/, checkpoint/, metrics.jsonl."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out with its saved options."),
    encoder: str = typer.Option("conv4", help="Encoder: conv4, resnet, koch, mlp."),
    embedding_dim: int = typer.Option(64, help="Embedding size (0 = the encoder's pooled features)."),
    width: Optional[int] = typer.Option(None, help="conv4: channels per block."),
    grid: Optional[int] = typer.Option(None, help="conv4: pool the last map to GRID x GRID before flattening."),
    dropout: Optional[float] = typer.Option(None, help="Encoder dropout before the projection."),
    distance: str = typer.Option("euclidean", help="euclidean, sqeuclidean, cosine, l1."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="L2-normalise embeddings."),
    loss: str = typer.Option(
        "triplet", help="contrastive, triplet, binary (Koch pair head), mnr, views, normsoftmax (cosine classifier)."
    ),
    miner: Optional[str] = typer.Option(None, help="all_pairs, hard_pairs, batch_hard, semi_hard (default: by loss)."),
    margin: float = typer.Option(0.2, help="Triplet margin / contrastive negative margin."),
    batching: str = typer.Option("classes", help="classes (m-per-class batches, mined) or pairs (random genuine/impostor pairs)."),
    batch_size: int = typer.Option(64, help="Images per batch."),
    m_per_class: int = typer.Option(4, help="Images per class in a batch."),
    epochs: int = typer.Option(20, help="Epochs."),
    steps_per_epoch: Optional[int] = typer.Option(None, help="Batches per epoch (default: images / batch size)."),
    optimizer: str = typer.Option("adam", help="adam or adamw."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    weight_decay: float = typer.Option(0.0, help="Weight decay."),
    schedule: str = typer.Option("cosine", help="cosine, step or none."),
    step_size: int = typer.Option(10, help="step schedule: epochs per step."),
    gamma: float = typer.Option(0.1, help="step schedule: factor per step."),
    grad_clip: Optional[float] = typer.Option(None, help="Clip the gradient norm to this."),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="Random affine augmentation."),
    rotation: float = typer.Option(10.0, help="Augmentation: max rotation in degrees."),
    fill: float = typer.Option(0.0, help="Augmentation: background value in [0, 1] (1 = white paper)."),
    image_size: Optional[str] = typer.Option(None, help="Resize images to SIDE or H,W (default: first image's size)."),
    channels: Optional[int] = typer.Option(None, help="1 (grey) or 3 (colour); default: from the files."),
    val_fraction: float = typer.Option(0.2, help="Fraction of classes held out for validation and early stopping."),
    patience: Optional[int] = typer.Option(5, help="Stop after this many epochs without a better validation ROC AUC."),
    precision: str = typer.Option("auto", help="auto (bf16 + channels_last where the CPU has native bfloat16, else fp32), fp32 or bf16."),
    channels_last: bool = typer.Option(False, "--channels-last/--no-channels-last", help="channels_last memory format."),
    seed: int = typer.Option(0, help="Random seed."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: on a terminal)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each epoch."),
) -> None:
    """Train on a folder of images laid out one sub-folder per class."""
    from .data.images import ImageFolderDataset
    from .training import TrainConfig, fit
    from .training.loop import read_checkpoint_state

    _setup_logging(verbose)
    if data is None:
        _fail("--data is required: a folder with one sub-folder of images per class")
    assert data is not None
    if resume:
        st = read_checkpoint_state(out)
        config = TrainConfig.from_dict(st["config"])
        if progress is not None:
            config.progress = progress
        shape = st.get("sample_shape", [])
        if len(shape) != 3:
            _fail(f"the checkpoint in {out} was not trained on images")
        ds = ImageFolderDataset.from_folder(data, image_size=(shape[1], shape[2]), channels=shape[0], min_per_class=2)
    else:
        enc_kwargs: dict[str, Any] = {}
        if width is not None:
            enc_kwargs["width"] = width
        if grid is not None:
            enc_kwargs["grid"] = grid
        if dropout is not None:
            enc_kwargs["dropout"] = dropout
        config = TrainConfig(
            encoder=encoder, encoder_kwargs=enc_kwargs, embedding_dim=embedding_dim or None, normalize=normalize,
            distance=distance, loss=loss, miner=miner, margin=margin, batching=batching, batch_size=batch_size, m_per_class=m_per_class,
            epochs=epochs, steps_per_epoch=steps_per_epoch, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
            schedule=schedule, step_size=step_size, gamma=gamma, grad_clip=grad_clip, augment=augment,
            rotation=rotation, fill=fill, val_fraction=val_fraction, patience=patience, precision=precision,
            channels_last=channels_last, seed=seed, progress=progress,
        )
        if (out / "checkpoint").exists():
            _fail(f"{out} already holds a run; use --resume to continue it or choose another --out")
        ds = ImageFolderDataset.from_folder(data, image_size=_parse_size(image_size), channels=channels, min_per_class=2)
    typer.echo(f"{len(ds)} images of {len(ds.classes)} classes, {ds.channels}x{ds.image_size[0]}x{ds.image_size[1]}")
    result = fit(ds.images, ds.labels, config, out_dir=out, resume=resume)
    last = result.history[-1] if result.history else {}
    typer.echo(
        f"done: {len(result.history)} epochs, best epoch {result.best_epoch}"
        + (f", validation ROC AUC {result.best_metric:.4f}" if result.best_metric is not None else "")
        + (" (stopped early)" if result.stopped_early else "")
    )
    if last.get("images_per_s"):
        typer.echo(f"last epoch: {last['images_per_s']:.0f} images/s")
    typer.echo(f"model: {out / 'model'}   metrics log: {out / 'metrics.jsonl'}")


@app.command()
@_clean_errors
def summary(
    model: str = typer.Argument(..., help="A model folder, or an encoder name (conv4, resnet, koch, mlp)."),
    input_shape: Optional[str] = typer.Option(None, help="C,H,W (images) or F (vectors); default: the model's."),
    embedding_dim: Optional[int] = typer.Option(None, help="For an encoder name: the embedding size."),
) -> None:
    """Print each layer's output shape and parameter count, and the totals."""
    from .encoders import create_encoder, list_encoders
    from .io import load_model
    from .summary import summarize

    path = Path(model)
    net: Any
    if path.exists():
        net = load_model(path)
        shape = _parse_shape(input_shape) if input_shape else net.input_spec.shape
        if not shape:
            _fail("the model does not record its input shape; pass --input-shape")
    elif model in list_encoders():
        if not input_shape:
            _fail("pass --input-shape for an encoder name, e.g. --input-shape 1,105,105")
        shape = _parse_shape(input_shape)
        kwargs: dict[str, Any] = {"in_features": int(__import__("math").prod(shape))} if model == "mlp" else {"in_channels": shape[0]}
        if embedding_dim is not None:
            kwargs["embedding_dim"] = embedding_dim
        net = create_encoder(model, **kwargs)
    else:
        _fail(f"{model!r} is neither a model folder nor an encoder name ({', '.join(list_encoders())})")
    typer.echo(summarize(net, shape).to_text())


@app.command()
@_clean_errors
def compare(
    model: Path = typer.Argument(..., help="A model folder."),
    image_a: Path = typer.Argument(..., help="First image."),
    image_b: Path = typer.Argument(..., help="Second image."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Distance (lower = closer) and similarity score (higher = more similar) of two images."""
    from .verify import compare_files

    r = compare_files(model, image_a, image_b)
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    typer.echo(f"distance:   {r['distance']:.6f}  (lower = more similar; {r['distance_kind']})")
    typer.echo(f"score:      {r['score']:.6f}  (higher = more similar)")
    if r.get("same") is not None:
        typer.echo(f"decision:   {'SAME' if r['same'] else 'DIFFERENT'}  (calibrated threshold {r['threshold']:.6g})")
        typer.echo(f"confidence: {r['confidence']:.4f}  (probability of 'same')")
    else:
        typer.echo("decision:   none (the model is not calibrated: run `siamkit calibrate`)")


def _scored(model: Path, data: Path, max_pairs: int, seed: int):  # type: ignore[no-untyped-def]
    """Load a model and score a split given as an image folder or a pair CSV."""
    from .data.images import ImageFolderDataset
    from .data.pairs import PairCSVDataset
    from .evaluation.protocols import score_folder, score_pair_csv
    from .io import load_model

    net = load_model(model)
    spec = net.input_spec
    if not spec.is_image:
        _fail("evaluate and calibrate take image models; this model was trained on vectors")
    size, ch = spec.image_size, int(spec.channels)
    if data.is_file() and data.suffix.lower() == ".csv":
        scored = score_pair_csv(net, PairCSVDataset.from_csv(data, image_size=size, channels=ch))
    else:
        scored = score_folder(net, ImageFolderDataset.from_folder(data, image_size=size, channels=ch), max_pairs=max_pairs, seed=seed)
    scored.split["data"] = str(data.resolve())
    return net, scored


@app.command()
@_clean_errors
def calibrate(
    model: Path = typer.Argument(..., help="A model folder."),
    data: Path = typer.Option(..., "--data", help="Validation split: an image folder (one sub-folder per class) or a path_a,path_b,same CSV."),
    method: str = typer.Option("eer", help="Threshold: eer, accuracy, or far (with --target-far)."),
    target_far: float = typer.Option(1e-3, help="False accept rate for --method far."),
    confidence: str = typer.Option("platt", help="Confidence mapping: platt or isotonic."),
    max_pairs: int = typer.Option(500_000, help="Pairs drawn from a folder at most."),
    seed: int = typer.Option(0, help="Seed of the pair subset."),
) -> None:
    """Fit the decision threshold and confidence on a validation split; save calibration.json."""
    from .calibration import Calibrator

    net, scored = _scored(model, data, max_pairs, seed)
    cal = Calibrator(threshold_method=method, target_far=target_far, confidence_method=confidence)
    cal.fit(scored.distances, scored.same, split_name=scored.split["data"], model_fingerprint=net.fingerprint)
    path = cal.save(model)
    typer.echo(f"threshold {cal.threshold_:.6g} ({method}) fitted on {cal.n_pos_:,} genuine and {cal.n_neg_:,} impostor pairs")
    typer.echo(f"saved {path}; `siamkit compare` and `siamkit evaluate` now use it")


@app.command()
@_clean_errors
def evaluate(
    model: Path = typer.Argument(..., help="A model folder."),
    data: Path = typer.Option(..., "--data", help="Test split: an image folder (one sub-folder per class) or a path_a,path_b,same CSV."),
    out: Path = typer.Option(Path("report"), help="Report folder (report.md, PNGs, metrics.json)."),
    max_pairs: int = typer.Option(500_000, help="Pairs drawn from a folder at most."),
    seed: int = typer.Option(0, help="Seed of the pair subset and episodes."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also score raw pixels on the same pairs."),
) -> None:
    """Score a test split: ROC, EER, TAR@FAR, DET, confusion at the calibrated threshold,
    one-shot accuracy, retrieval; writes a report folder."""
    from .calibration import Calibrator
    from .evaluation.report import write_report

    net, scored = _scored(model, data, max_pairs, seed)
    cal = Calibrator.load(model, expected_fingerprint=net.fingerprint)
    if cal is not None:
        cal.check_not_fitted_on(scored.split["data"])
    m = write_report(
        out, scored.distances, scored.same, title=f"{model.name} on {data.name}", split=scored.split,
        calibration=cal.to_dict() if cal is not None else None, embeddings=scored.embeddings, labels=scored.labels,
        extra=scored.extra, baseline=("raw pixels", scored.baseline) if baseline else None,
    )
    v, t = m["verification"], m["at_threshold"]
    typer.echo(f"ROC AUC {v['roc_auc']:.4f}   EER {v['eer']:.4f}   accuracy {t['accuracy']:.4f} at threshold {t['threshold']:.4g} ({t['source']})")
    for k, val in scored.extra.items():
        if "accuracy" in val:
            typer.echo(f"{k.replace('_', ' ')}: {val['accuracy']:.4f} ± {val['ci95']:.4f} (raw pixels {val['baseline_accuracy']:.4f})")
    typer.echo(f"report: {out / 'report.md'}")


_mount_subcommands()


def main() -> None:
    """Entry point of the ``siamkit`` command."""
    app(prog_name="siamkit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
