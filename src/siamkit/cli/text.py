"""The text-pair side of ``siamkit train --task text``, ``siamkit compare`` and
``siamkit evaluate`` (the commands dispatch here when the task or the model is text).

``train --task text`` reads the options the user gave ``siamkit train`` explicitly
(``--epochs``, ``--batch-size``, ``--lr``, ``--loss``, ``--encoder``, ``--val-fraction``,
``--seed``, ``--embedding-dim``) and uses text defaults for the others: the image defaults
(20 epochs at lr 1e-3, contrastive) would ruin a pretrained encoder.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import typer

from .._atomic import write_json_atomic
from ._common import echo_json, fail

__all__ = ["TEXT_DEFAULTS", "compare_text", "evaluate_text", "train_text", "train_text_from_train_options"]

#: the defaults of ``train --task text`` (pretrained / from scratch)
TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrained": {"epochs": 1, "batch_size": 16, "lr": 2e-5, "loss": "cosent"},
    "scratch": {"epochs": 10, "batch_size": 32, "lr": 1e-3, "loss": "cosent"},
}
_FORWARDED = ("epochs", "batch_size", "lr", "loss", "encoder", "val_fraction", "validation", "seed", "embedding_dim",
              "progress", "encoder_options")


_TEXT_OWN = ("data", "out", "task", "recipe", "pretrained", "max_length", "verbose")  # train options text reads itself
_NOT_FLAGS = ("validation", "encoder_options")  # text recipe keys, not siamkit train flags


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def train_text_from_train_options(ctx: typer.Context, recipe: Optional[str] = None) -> None:
    """Run ``train --task text`` (or a text recipe) with the options of this ``siamkit
    train`` call that were given explicitly (the context's parameter sources) over the
    recipe's; the rest take text defaults.

    Args:
        ctx: the ``siamkit train`` command's context.
        recipe: a text recipe's name or file (``task = "text"``), or None.
    """
    from ..training.recipes import load_text_recipe

    given = {k: v for k, v in ctx.params.items() if _given(ctx, k)}
    ignored = sorted(k for k in given if k not in _FORWARDED and k not in _TEXT_OWN)
    if ignored:  # image and vector options (--init, --ema, --augment, ...): refused, never silently ignored
        flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
        fail(f"{flags}: not an option of text twins; a text twin starts from --pretrained PATH_OR_NAME or from scratch "
             f"with {', '.join('--' + k.replace('_', '-') for k in _FORWARDED if k not in _NOT_FLAGS)}")
    if ctx.params.get("data") is None:
        fail("--data is required: a text-pair CSV/TSV or an STS Benchmark / SICK / MRPC folder")
    r = load_text_recipe(recipe) if recipe is not None else None
    options = dict(r.train) if r is not None else {}
    options.update({k: given[k] for k in _FORWARDED if k in given})
    forwarded = {k: options.pop(k) for k in list(options) if k in _FORWARDED}
    train_text(
        data=Path(ctx.params["data"]), out=Path(ctx.params["out"]),
        pretrained=given.get("pretrained", r.pretrained if r is not None else None),
        max_length=given.get("max_length") or (r.max_length if r is not None else 128), extra=options, **forwarded,
    )


def _build_twin(pretrained: Optional[str], encoder: Optional[str], texts: Any, max_length: int,
                embedding_dim: Optional[int], seed: int, encoder_options: Optional[dict[str, Any]] = None) -> Any:
    from ..text import pretrained_twin, scratch_twin

    if pretrained:
        if encoder not in (None, "hf_text"):
            fail(f"--encoder {encoder} with --pretrained: a pretrained model is its own encoder")
        if encoder_options:
            fail("encoder_options are for from-scratch twins (rnn / transformer_seq), not a pretrained model")
        return pretrained_twin(pretrained, max_length=max_length)
    if encoder not in (None, "rnn", "transformer_seq"):
        fail(f"--encoder for text is rnn or transformer_seq (or give --pretrained PATH_OR_NAME), got {encoder!r}")
    try:
        return scratch_twin(texts, encoder=encoder or "rnn", max_length=max_length, embedding_dim=embedding_dim or 128,
                            seed=seed, **(encoder_options or {}))
    except (TypeError, ValueError) as e:  # a misspelt or bad encoder_options entry
        fail(f"encoder_options: {e}")


def train_text(
    *,
    data: Path,
    out: Path,
    pretrained: Optional[str] = None,
    max_length: int = 128,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    lr: Optional[float] = None,
    loss: Optional[str] = None,
    encoder: Optional[str] = None,
    val_fraction: float = 0.1,
    validation: Optional[str] = None,
    seed: int = 0,
    embedding_dim: Optional[int] = None,
    progress: Optional[bool] = None,
    extra: Optional[dict[str, Any]] = None,
    encoder_options: Optional[dict[str, Any]] = None,
) -> None:
    """Train a text twin on pairs; writes OUT/model (and its calibration for binary pairs).
    ``extra``: further :class:`~siamkit.training.text.TextTrainConfig` fields (a recipe's);
    ``encoder_options``: further :func:`~siamkit.text.scratch_twin` arguments (a recipe's).

    The validation split is carved from the training pairs (``val_fraction``), or is the
    dataset's own dev split (``validation="dev"``: STS-B ``sts-dev.csv``, SICK
    ``SICK_trial.txt``): the best validation score's weights are kept and, for binary
    pairs, the decision threshold is fitted on it (never on test data).
    """
    from ..calibration import Calibrator
    from ..data.text import load_text_pairs
    from ..text import TextTwin
    from ..training.text import TextTrainConfig, fit_text_pairs

    if (out / "model").exists():
        fail(f"{out} already holds a model; choose another --out")
    pairs = load_text_pairs(data, split="train")
    if validation not in (None, "dev"):
        fail(f"validation = {validation!r}: use \"dev\" (the dataset's dev split) or val_fraction")
    if validation == "dev" and not data.is_dir():
        typer.echo(f"{data} is one file, not a dataset folder with a dev split: carving {val_fraction:.0%} of it instead")
        validation = None
    if validation == "dev":
        train, val = pairs, load_text_pairs(data, split="dev")
    else:
        train, val = pairs.split(val_fraction, seed=seed) if val_fraction > 0 else (pairs, None)
    if pairs.binary and val is None:
        fail("binary pairs need a validation split to fit the decision threshold: give --val-fraction > 0")
    defaults = TEXT_DEFAULTS["pretrained" if pretrained else "scratch"]
    config = TextTrainConfig(
        loss=loss or defaults["loss"], epochs=epochs or defaults["epochs"], batch_size=batch_size or defaults["batch_size"],
        lr=lr or defaults["lr"], seed=seed, **(extra or {}),
    )
    twin = _build_twin(pretrained, encoder, train.texts_a + train.texts_b, max_length, embedding_dim, seed,
                       encoder_options)
    kind = "binary (same / different)" if pairs.binary else "graded"
    source = "the dev split" if validation == "dev" else f"carved from {data.name}"
    typer.echo(f"{len(train)} {kind} training pairs, {len(val) if val else 0} validation pairs ({source})")
    history = fit_text_pairs(twin, train, config=config, val=val, out_dir=out, progress=progress,
                             on_epoch=lambda r: typer.echo(_epoch_line(r, pairs.binary)))
    model_dir = out / "model"
    twin = TextTwin.load(model_dir)
    record: dict[str, Any] = {"train": asdict(config), "history": history, "data": str(data), "pretrained": pretrained,
                              "train_pairs": len(train), "val_pairs": len(val) if val else 0}
    if pairs.binary and val is not None:
        distances = 1.0 - twin.similarity(val.texts_a, val.texts_b)
        cal = Calibrator(threshold_method="accuracy").fit(distances, val.targets > 0.5, "validation",
                                                         model_fingerprint=twin.network.fingerprint)
        cal.save(model_dir)
        record["threshold"] = cal.threshold_
        typer.echo(f"decision threshold {cal.threshold_:.4f} (cosine distance; accuracy on the validation split)")
    write_json_atomic(out / "train_text.json", record)
    typer.echo(f"model: {model_dir}")


def _epoch_line(record: dict[str, Any], binary: bool) -> str:
    val = record.get("val_score")
    name = "ROC AUC" if binary else "Spearman"
    tail = f"  validation {name} {val:.4f}" if val is not None else ""
    return f"epoch {record['epoch']}: loss {record['loss']:.4f}{tail}"


def compare_text(model: Path, text_a: str, text_b: str, *, as_json: bool) -> None:
    """Print the cosine similarity of two texts (and the calibrated decision, if any).

    Args:
        model: a text model folder.
        text_a: the first text.
        text_b: the second text.
        as_json: print JSON.
    """
    from ..calibration import Calibrator
    from ..text import TextTwin

    twin = TextTwin.load(model)
    sim = float(twin.similarity([text_a], [text_b])[0])
    r: dict[str, Any] = {"similarity": sim, "distance": 1.0 - sim, "distance_kind": "cosine"}
    cal = Calibrator.load(model, expected_fingerprint=twin.network.fingerprint)
    if cal is not None:
        r.update(same=bool(cal.decide([1.0 - sim])[0]), threshold=cal.threshold_,
                 confidence=float(cal.confidence([1.0 - sim])[0]))
    if as_json:
        echo_json(r, sort_keys=False)
        return
    typer.echo(f"similarity: {sim:.6f}  (cosine, higher = more similar)")
    if cal is not None:
        typer.echo(f"decision:   {'SAME' if r['same'] else 'DIFFERENT'}  (calibrated threshold {cal.threshold_:.6g})")


def evaluate_text(model: Path, data: Path, out: Path) -> None:
    """Score a test split of text pairs; writes OUT/metrics.json.

    Graded pairs: Pearson and Spearman. Binary pairs: ROC AUC, and accuracy / precision /
    recall / F1 at the threshold calibrated on the validation split.

    Args:
        model: a text model folder.
        data: the test pairs (a file or a dataset folder: its test split).
        out: the report folder.
    """
    from ..calibration import Calibrator
    from ..data.text import load_text_pairs
    from ..evaluation.text import text_pair_metrics
    from ..text import TextTwin

    twin = TextTwin.load(model)
    pairs = load_text_pairs(data, split="test")
    cal = Calibrator.load(model, expected_fingerprint=twin.network.fingerprint)
    if cal is not None:
        cal.check_not_fitted_on(str(data.resolve()))
    m = text_pair_metrics(twin.similarity(pairs.texts_a, pairs.texts_b), pairs,
                          threshold=cal.threshold_ if (cal is not None and pairs.binary) else None)
    m.update(model=str(model), data=str(data), binary=pairs.binary)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", m)
    if pairs.binary:
        at = f"   accuracy {m['accuracy']:.4f}   F1 {m['f1']:.4f} at threshold {m['threshold']:.4f}" if "f1" in m else \
            "   (no calibrated threshold)"
        typer.echo(f"{m['n']} pairs: ROC AUC {m['roc_auc']:.4f}{at}")
    else:
        typer.echo(f"{m['n']} pairs: Pearson {m['pearson']:.4f}   Spearman {m['spearman']:.4f}")
    typer.echo(f"metrics: {out / 'metrics.json'}")
