"""The Matryoshka parts of ``siamkit evaluate --dims`` and ``siamkit calibrate --dims``:
one table of AUC / EER / one-shot per embedding size, a calibration per size and the
adaptive size cascade. A thin edge over :mod:`siamkit.evaluation.sizes` and
:mod:`siamkit.adaptive`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ._common import fail

__all__ = ["calibrate_sizes", "evaluate_sizes", "parse_dims_option"]


def parse_dims_option(text: str, net: Any) -> list[int]:
    """``--dims 16,32,64,128`` (``all``: the model's Matryoshka sizes) -> the sizes.

    Args:
        text: the option's value.
        net: the loaded model.

    Returns:
        The sizes, each checked against the model (an error line and exit 2 otherwise).
    """
    from ..matryoshka import parse_dims

    if text.strip() == "all":
        if not net.matryoshka_dims:
            fail("--dims all: this model was not trained with --matryoshka-dims; list the sizes (e.g. 16,32,64)")
        return list(net.matryoshka_dims)
    dims = list(parse_dims(text))
    for d in dims:
        net.at_dim(d)  # EmbeddingSizeError: error line, exit 2
    return dims


def _folder(net: Any, data: Path, check: Optional[Callable[[list[str]], None]]) -> Any:
    from ..data.images import ImageFolderDataset

    spec = net.input_spec
    if not spec.is_image:
        fail("--dims takes image models; this model was trained on vectors")
    if data.is_file():
        fail("--dims scores a labelled image folder (one sub-folder per class), not a pair file")
    ds = ImageFolderDataset.from_folder(data, image_size=spec.image_size, channels=int(spec.channels),
                                        preprocess=spec.preprocessor())
    if check is not None:
        check(ds.classes)
    return ds


def evaluate_sizes(model: Path, net: Any, data: Path, dims_text: str, out: Path, *, max_pairs: int, seed: int,
                   n_way: Optional[int], k_shot: int, check: Optional[Callable[[list[str]], None]],
                   notes: dict[str, Any]) -> None:
    """``siamkit evaluate --dims``: the per-size table (and the adaptive cascade's report
    when ``calibrate --dims`` fitted one); writes ``OUT/sizes.md`` and ``OUT/sizes.json``.

    Args:
        model: the model folder (its per-size calibrations and ``adaptive.json``).
        net: the loaded full-size network.
        data: the labelled test folder.
        dims_text: the ``--dims`` value.
        out: the report folder.
        max_pairs: pairs at most.
        seed: pairs and episodes.
        n_way: the N of the episodes (None: 5 and 20).
        k_shot: supports per class.
        check: the class-overlap check (None: no training split known).
        notes: what the overlap check found.
    """
    from .._atomic import write_json_atomic, write_text_atomic
    from ..adaptive import SizeCascade
    from ..calibration import Calibrator
    from ..evaluation.sizes import score_sizes, sizes_table

    dims = parse_dims_option(dims_text, net)
    ds = _folder(net, data, check)
    s = score_sizes(net, ds.images, ds.labels, dims, max_pairs=max_pairs, seed=seed,
                    n_way=[n_way] if n_way is not None else (5, 20), k_shot=k_shot)
    for row in s.rows:
        view = net.at_dim(row["dim"])
        cal = Calibrator.load(model, expected_fingerprint=view.fingerprint, dim=view.dim)
        if cal is not None:
            cal.check_not_fitted_on(str(data.resolve()))
            row["accuracy_at_threshold"] = float((cal.decide(s.distances[row["dim"]]) == s.same.numpy()).mean())
    result: dict[str, Any] = {"model": str(model), "data": str(data.resolve()), "rows": s.rows, "split": {**s.split, **notes}}
    cascade = SizeCascade.load(model, expected_fingerprint=net.fingerprint)
    table = sizes_table(s.rows)
    if cascade is not None and all(d in dims for d in cascade.dims):
        result["adaptive"] = rep = {"dims": cascade.dims, **cascade.report(s.distances, s.same)}
        at = ", ".join(f"{k}: {v:.1%}" for k, v in rep["decided_at"].items())
        table += (f"\n\nadaptive size ({'/'.join(map(str, cascade.dims))}): decided at {at}; accuracy {rep['accuracy']:.4f} "
                  f"vs {rep['accuracy_full']:.4f} at {cascade.dims[-1]} dims alone (agreement {rep['agreement_with_full']:.4f}); "
                  f"{rep['mean_values_compared']:.1f} values compared per pair instead of {cascade.dims[-1]}")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sizes.md", f"# {model.name} on {data.name}, by embedding size\n\n{table}\n")
    write_json_atomic(out / "sizes.json", result)
    typer.echo(table)
    typer.echo(f"report: {out / 'sizes.md'}")


def calibrate_sizes(model: Path, net: Any, data: Path, dims_text: str, *, method: str, target_far: float,
                    confidence: str, max_pairs: int, seed: int, max_disagreement: float) -> None:
    """``siamkit calibrate --dims``: a ``calibration-dimD.json`` per size (the full size's
    ``calibration.json``), and the adaptive cascade over the sizes (``adaptive.json``).

    Args:
        model: the model folder.
        net: the loaded full-size network.
        data: the labelled validation folder.
        dims_text: the ``--dims`` value.
        method: the threshold method.
        target_far: for ``method="far"``.
        confidence: platt or isotonic.
        max_pairs: pairs at most.
        seed: the pair subset.
        max_disagreement: the cascade's budget of early decisions that differ from the full size's.
    """
    from ..adaptive import SizeCascade
    from ..calibration import Calibrator
    from ..evaluation.sizes import score_sizes

    dims = parse_dims_option(dims_text, net)
    ds = _folder(net, data, None)
    s = score_sizes(net, ds.images, ds.labels, dims, max_pairs=max_pairs, seed=seed, n_way=())
    split = str(data.resolve())
    n_classes = int(ds.labels.unique().numel())
    for d in dims:
        view = net.at_dim(d)
        cal = Calibrator(threshold_method=method, target_far=target_far, confidence_method=confidence)
        cal.fit(s.distances[d], s.same, split_name=split, model_fingerprint=view.fingerprint, n_classes=n_classes)
        path = cal.save(model, dim=view.dim)
        typer.echo(f"{d} dims: threshold {cal.threshold_:.6g} ({method}); saved {path}")
    if len(dims) >= 2:
        cascade = SizeCascade(dims=sorted(dims), threshold_method=method, target_far=target_far,
                              max_disagreement=max_disagreement)
        cascade.fit(s.distances, s.same, model_fingerprint=net.fingerprint)
        rep = cascade.report(s.distances, s.same)
        path = cascade.save(model)
        at = ", ".join(f"{k}: {v:.1%}" for k, v in rep["decided_at"].items())
        typer.echo(f"adaptive size: decided at {at} on this split; saved {path}")
