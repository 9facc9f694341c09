"""``siamkit anomaly fit / score / evaluate``: a thin edge over :mod:`siamkit.anomaly`.

Images are read the way the model was trained (its ``input_spec``: channels, height, width).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import JSON_OUT, clean_errors, command_group, echo_json

__all__ = ["anomaly_app"]

anomaly_app = command_group("Anomaly detection: the distance to the k nearest normal references (higher = more anomalous).")

DETECTOR = typer.Option(..., "--detector", help="A detector folder written by `siamkit anomaly fit`.")
FITTED_MODEL = typer.Option(..., "--model", help="The model folder the detector was fitted with.")
BATCH_SIZE = typer.Option(256, help="Images per embedding batch.")


def _image_files(path: Path, what: str) -> list[Path]:
    from ..data._files import is_image, natural_key
    from ..errors import DataError

    if not path.exists():
        raise DataError(f"{what} {path} does not exist")
    if path.is_file():
        return [path]
    files = sorted(
        (p for p in path.rglob("*") if is_image(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)),
        key=lambda p: natural_key(str(p.relative_to(path))),
    )
    if not files:
        raise DataError(f"{what} {path} has no images")
    return files


def _load(network: Any, paths: list[Path]) -> Any:
    import torch

    from ..verify import load_image_for

    return torch.stack([load_image_for(network, p) for p in paths])


def _load_model(model: Path) -> Any:
    from ..errors import DataError
    from ..io import load_model

    net = load_model(model)
    if not net.input_spec.is_image:
        raise DataError(f"the model in {model} was not trained on images (its input spec has no image size)")
    return net


def _decision(flag: bool | None) -> str:
    return "n/a" if flag is None else ("ANOMALY" if flag else "normal")


@anomaly_app.command("fit")
@clean_errors
def fit_cmd(
    model: Path = typer.Option(..., "--model", help="A model folder."),
    normal: Path = typer.Option(..., "--normal", help="Normal images: a folder (searched recursively) or one image."),
    out: Path = typer.Option(..., "--out", help="Detector folder to write (anomaly.json + references.npz)."),
    k: int = typer.Option(5, "--k", help="Nearest references per image."),
    reduction: str = typer.Option("mean", help="mean, max (= kth: the k-th neighbour's distance) or median."),
    quantile: float = typer.Option(0.99, help="Threshold: this quantile of the references' leave-one-out scores."),
    distance: str | None = typer.Option(None, help="euclidean, sqeuclidean, cosine or l1 (default: the model's)."),
    batch_size: int = BATCH_SIZE,
) -> None:
    """Fit a detector on normal images only; the threshold flags about 1 - QUANTILE of normal images."""
    from ..anomaly import AnomalyDetector

    net = _load_model(model)
    paths = _image_files(normal, "normal image folder")
    x = _load(net, paths)
    det = AnomalyDetector(k=k, reduction=reduction, distance=distance, quantile=quantile)
    det.fit_inputs(net, x, batch_size=batch_size, fitted_on=str(normal.resolve()))
    det.save(out)
    assert det.threshold_ is not None
    typer.echo(
        f"{len(paths)} normal references, k={k}, {reduction} of {det.distance_} distances; threshold "
        f"{det.threshold_:.6g} (quantile {quantile:g} of the leave-one-out scores)"
    )
    typer.echo(f"saved {out}")


@anomaly_app.command("score")
@clean_errors
def score_cmd(
    images: list[Path] = typer.Argument(..., help="Image files (or folders of images) to score."),
    detector: Path = DETECTOR,
    model: Path = FITTED_MODEL,
    as_json: bool = JSON_OUT,
    batch_size: int = BATCH_SIZE,
) -> None:
    """Anomaly score (higher = more anomalous) and decision of each image."""
    from ..anomaly import AnomalyDetector

    net = _load_model(model)
    det = AnomalyDetector.load(detector, network=net)
    paths = [p for item in images for p in _image_files(item, "image")]
    scores = det.score_inputs(net, _load(net, paths), batch_size=batch_size)
    thr = det.threshold_
    rows = [
        {"path": str(p), "score": float(s), "anomaly": None if thr is None else bool(s > thr)}
        for p, s in zip(paths, scores.tolist())
    ]
    if as_json:
        echo_json({"threshold": thr, "results": rows}, sort_keys=False)
        return
    width = max(len(r["path"]) for r in rows)
    typer.echo(f"{'image':<{width}}  {'score':>12}  decision")
    for r in rows:
        typer.echo(f"{r['path']:<{width}}  {r['score']:>12.6g}  {_decision(r['anomaly'])}")
    if thr is None:
        typer.echo("(the detector has no threshold: no decisions)")
    else:
        typer.echo(f"threshold {thr:.6g} ({det.threshold_source_}): ANOMALY when score > threshold")


def _plot_histogram(scores: Any, is_anomaly: Any, threshold: float | None, path: Path, title: str) -> Path:
    """Histograms of the normal and the anomalous images' scores, with the threshold."""
    import numpy as np

    from ..evaluation.plots import pyplot

    plt = pyplot()

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(is_anomaly, dtype=bool)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(s.min(), s.max(), 50) if s.max() > s.min() else 10
    ax.hist(s[~y], bins=bins, alpha=0.6, density=True, color="tab:green", label=f"normal ({(~y).sum():,})")
    ax.hist(s[y], bins=bins, alpha=0.6, density=True, color="tab:red", label=f"anomalous ({y.sum():,})")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3g}")
    ax.set(xlabel="anomaly score (higher = more anomalous)", ylabel="density", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _echo_metrics(m: dict[str, Any], threshold_source: str | None) -> None:
    typer.echo(f"{m['n_normal']} normal, {m['n_anomalous']} anomalous images")
    typer.echo(f"AUROC {m['auroc']:.4f}   average precision {m['average_precision']:.4f}")
    c = m["confusion"]
    if c is None:
        typer.echo("no threshold: no confusion (fit one on a labelled set)")
    else:
        typer.echo(
            f"at threshold {m['threshold']:.6g} ({threshold_source}): tp {c['tp']}  fp {c['fp']}  tn {c['tn']}  "
            f"fn {c['fn']}   accuracy {c['accuracy']:.4f}  precision {c['precision']:.4f}  recall {c['recall']:.4f}  "
            f"false alarm rate {c['false_alarm_rate']:.4f}"
        )


def _write_report(out: Path, m: dict[str, Any], det: Any, paths: list[Path], scores: Any, is_anom: Any, sources: dict[str, str]) -> None:
    """``OUT/metrics.json`` (the metrics, the detector's parameters, every image's score) and ``OUT/histogram.png``.

    ``sources`` names the detector, model, normal and anomalous folders as given (JSON keys are sorted).
    """
    from .._atomic import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    report = dict(
        m,
        **sources,
        model_fingerprint=det.model_fingerprint_,
        threshold_source=det.threshold_source_,
        params={"k": det.k, "reduction": det.reduction, "distance": det.distance_},
        scores=[
            {"path": str(p), "score": float(s), "is_anomaly": bool(a)}
            for p, s, a in zip(paths, scores.tolist(), is_anom.tolist())
        ],
    )
    write_json_atomic(out / "metrics.json", report)
    title = f"{Path(sources['normal']).name} vs {Path(sources['anomalous']).name}"
    _plot_histogram(scores, is_anom, det.threshold_, out / "histogram.png", title)
    typer.echo(f"report: {out / 'metrics.json'}, {out / 'histogram.png'}")


@anomaly_app.command("evaluate")
@clean_errors
def evaluate_cmd(
    detector: Path = DETECTOR,
    model: Path = FITTED_MODEL,
    normal: Path = typer.Option(..., "--normal", help="Held-out normal images (not the references)."),
    anomalous: Path = typer.Option(..., "--anomalous", help="Anomalous images."),
    out: Path | None = typer.Option(None, "--out", help="Report folder: metrics.json and histogram.png."),
    batch_size: int = BATCH_SIZE,
) -> None:
    """AUROC, average precision and the confusion at the detector's threshold."""
    import numpy as np

    from ..anomaly import AnomalyDetector, anomaly_metrics
    from ..errors import SiamkitError

    net = _load_model(model)
    det = AnomalyDetector.load(detector, network=net)
    if det.fitted_on_ is not None and Path(det.fitted_on_) == normal.resolve():
        raise SiamkitError(
            f"{normal} holds the detector's own references: their scores would include themselves; "
            "evaluate on held-out normal images"
        )
    p_norm = _image_files(normal, "normal image folder")
    p_anom = _image_files(anomalous, "anomalous image folder")
    emb = det.embed_inputs(net, _load(net, p_norm + p_anom), batch_size=batch_size)
    is_anom = np.r_[np.zeros(len(p_norm), bool), np.ones(len(p_anom), bool)]
    nearest = det.kneighbors(emb[: len(p_norm)])[:, 0]
    dup = int((nearest == 0.0).sum())
    if dup:
        typer.echo(f"warning: {dup} of the {len(p_norm)} normal images are identical to a reference (optimistic)", err=True)
    scores = det.score(emb)
    m = anomaly_metrics(scores, is_anom, det.threshold_)
    _echo_metrics(m, det.threshold_source_)
    if out is not None:
        sources = {"detector": str(detector), "model": str(model), "normal": str(normal), "anomalous": str(anomalous)}
        _write_report(out, m, det, p_norm + p_anom, scores, is_anom, sources)
