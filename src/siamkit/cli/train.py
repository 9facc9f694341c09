"""``siamkit train`` (a new or resumed run on an image folder) and ``siamkit finetune``
(the reported mistakes mixed with replay of the training data)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ._common import clean_errors, echo_json, fail, gallery_location, parse_size, setup_logging

__all__ = ["finetune", "train"]


def _resumed_run(out: Path, data: Path, progress: Optional[bool], task: str) -> tuple[Any, Any]:
    """The saved options of the interrupted run in ``out`` and ``data`` read as it was trained."""
    from ..training import TrainConfig
    from ..training.loop import read_checkpoint_state

    if (out / "ensemble.json").is_file():  # an ensemble run (training/ensemble.py): its options, not a member's
        st = json.loads((out / "ensemble.json").read_text())
    else:
        st = read_checkpoint_state(out)
    config = TrainConfig.from_dict(st["config"])
    if progress is not None:
        config.progress = progress
    shape = st.get("sample_shape", [])
    if len(shape) != 3:
        fail(f"the checkpoint in {out} was not trained on images")
    return config, _load_train_data(data, task, (shape[1], shape[2]), shape[0], config)


def _preprocessor(config: Any) -> Any:
    """The config's preprocessing steps as one PIL -> PIL function (None: none)."""
    from ..input_spec import InputSpec

    return InputSpec().with_recipe(config.preprocess).preprocessor()


def _load_train_data(data: Path, task: str, size: Any, channels: Optional[int], config: Any, class_depth: Optional[int] = None) -> Any:
    """The training images, prepared by the config's input recipe exactly as every later
    caller will prepare raw files: one class per sub-folder, (``signatures``) the CEDAR layout
    with its forgeries kept apart, or (``signatures-genuine``) the genuine signatures of each
    ``WRITER/genuine`` folder (for both signature tasks the ``signature`` preprocessing step is
    added to the config when it has none, so the model records it)."""
    from ..data.images import ImageFolderDataset
    from ..data.signatures import load_signatures

    if task == "classes":
        return ImageFolderDataset.from_folder(data, image_size=size, channels=channels, min_per_class=2,
                                              preprocess=_preprocessor(config), class_depth=class_depth)
    if task == "signatures":
        from ..data.signature_sets import load_signature_task

        size = size or (155, 220)
        if not config.preprocess:
            config.preprocess = [{"kind": "signature", "size": list(size)}]
        ts = load_signature_task(data, size, channels, preprocess=_preprocessor(config))
        typer.echo(f"signatures: {len(ts)} genuine of {len(ts.classes)} writers (class = writer); {ts.n_forgeries} skilled "
                   "forgeries kept apart (validation: held-out writers' genuine vs forgery pairs)")
        return ts
    if task == "signatures-genuine":
        if channels not in (None, 1):
            fail("--task signatures-genuine loads greyscale signatures (--channels 1)")
        size = size or (155, 220)
        if not config.preprocess:
            config.preprocess = [{"kind": "signature", "size": list(size)}]
        sigs = load_signatures(data, image_size=size, require_forged=False, preprocess=_preprocessor(config))
        return sigs.genuine_only()
    fail(f"--task must be classes, signatures or signatures-genuine, got {task!r}")


def _task_fit_options(val_ds: Any) -> dict[str, Any]:
    """fit() options of the task: signatures validate on genuine vs skilled forgery pairs."""
    from ..data.signature_sets import SignatureTrainingSet
    from ..evaluation.signatures import signature_validator

    return {"validate_fn": signature_validator(val_ds.signatures)} if isinstance(val_ds, SignatureTrainingSet) else {}


def _split(ds: Any, out: Path, val_data: Optional[Path], val_classes: Optional[Path], config: Any) -> tuple[Any, Any, Any]:
    """(training set, validation set or None, the split record) from the options; a run
    that is resumed reuses its recorded split."""
    from ..data.splits import split_by_class
    from ..training.split_record import SplitRecord

    fraction, seed = config.val_fraction, config.seed
    recorded = SplitRecord.load(out)
    if recorded is not None and val_data is None and val_classes is None:
        if recorded.val_data:
            val_data = Path(recorded.val_data)
        else:
            names = recorded.val_classes
            return _hold_out(ds, names, recorded.source)
    if val_data is not None:
        val = _load_val(val_data, ds, config)
        common = sorted(set(val.classes) & set(ds.classes))
        if common:
            fail(f"--val-data {val_data} shares {len(common)} class(es) with --data (e.g. {common[0]!r}); validation classes must be unseen")
        rec = SplitRecord(list(ds.classes), list(val.classes), f"--val-data {val_data}", str(val_data.resolve()))
        return ds, val, rec
    if val_classes is not None:
        if not val_classes.is_file():
            fail(f"--val-classes {val_classes} does not exist")
        names = [ln.strip() for ln in val_classes.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        unknown = sorted(set(names) - set(ds.classes))
        if unknown:
            fail(f"--val-classes names {len(unknown)} class(es) not in --data (e.g. {unknown[0]!r})")
        return _hold_out(ds, names, f"--val-classes {val_classes}")
    if fraction <= 0:
        return ds, None, SplitRecord(list(ds.classes), [], "none (--val-fraction 0)")
    _, va = split_by_class(ds.labels, fraction, seed)
    names = [ds.classes[int(c)] for c in sorted(set(ds.labels[va].tolist()))]
    return _hold_out(ds, names, f"--val-fraction {fraction}, seed {seed}")


def _load_val(val_data: Path, ds: Any, config: Any) -> Any:
    """``--val-data`` read as the training data was: a class folder, or for the signature
    tasks the ``WRITER/genuine|forged`` layout (validation: its genuine vs skilled forgery
    pairs; ``signatures-genuine``: its genuine signatures)."""
    from ..data.images import ImageFolderDataset
    from ..data.signature_sets import SignatureTrainingSet, load_signature_task

    if isinstance(ds, SignatureTrainingSet):
        return load_signature_task(val_data, ds.image_size, preprocess=_preprocessor(config))
    if any(p["kind"] == "signature" for p in config.preprocess) and _is_signature_layout(val_data):
        from ..data.signatures import load_signatures

        return load_signatures(val_data, image_size=ds.image_size, require_forged=False, preprocess=_preprocessor(config)).genuine_only()
    return ImageFolderDataset.from_folder(val_data, image_size=ds.image_size, channels=ds.channels, min_per_class=2,
                                          preprocess=_preprocessor(config))


def _is_signature_layout(folder: Path) -> bool:
    """Whether the folder's sub-folders hold ``genuine`` folders (the CEDAR layout)."""
    return folder.is_dir() and any((d / "genuine").is_dir() for d in folder.iterdir() if d.is_dir())


def _hold_out(ds: Any, names: list[str], source: str) -> tuple[Any, Any, Any]:
    from ..training.split_record import SplitRecord

    val_set = set(names)
    train_ids = [i for i, c in enumerate(ds.classes) if c not in val_set]
    val_ids = [i for i, c in enumerate(ds.classes) if c in val_set]
    if len(train_ids) < 2:
        fail(f"holding out {len(val_ids)} classes leaves {len(train_ids)} to train on (at least 2 needed)")
    train, val = ds.subset(train_ids), ds.subset(val_ids) if val_ids else None
    return train, val, SplitRecord(list(train.classes), list(val.classes) if val is not None else [], source)


def _rotations(recipe: Optional[str], flag: Optional[str], out: Path, resume: bool, task: str) -> tuple[int, ...]:
    """The rotations trained on as new classes: the run's recorded ones (resume), else
    ``--rotations``, else the recipe's ``[data] rotations``, else none."""
    from ..data.class_rotations import check_rotations
    from ..training.recipes import load_recipe
    from ..training.split_record import SplitRecord

    if resume:
        rec = SplitRecord.load(out)
        return tuple(rec.rotations) if rec is not None else (0,)
    if flag is None:
        return load_recipe(recipe).rotations if recipe is not None else (0,)
    try:
        rots = check_rotations([int(v) for v in flag.replace(" ", "").split(",") if v])
    except ValueError as e:
        fail(f"--rotations {flag!r}: {e}")
    if rots != (0,) and task != "classes":
        fail(f"--rotations works with --task classes, not {task}")
    return rots


def _rotated_training(train_ds: Any, rots: tuple[int, ...]) -> Any:
    """The training set with each rotation of a class as a new class (and a line saying so)."""
    from ..data.class_rotations import with_rotated_classes

    if rots == (0,):
        return train_ds
    out = with_rotated_classes(train_ds, rots)
    typer.echo(f"rotations {', '.join(map(str, rots))} as new classes: {len(out.classes)} training classes, {len(out)} images")
    return out


def _encoder_kwargs(width: Optional[int], grid: Optional[int], dropout: Optional[float]) -> dict[str, Any]:
    """The encoder options given on the command line (the encoder's defaults for the rest)."""
    given = {"width": width, "grid": grid, "dropout": dropout}
    return {k: v for k, v in given.items() if v is not None}


def _print_result(result: Any, out: Path) -> None:
    last = result.history[-1] if result.history else {}
    typer.echo(
        f"done: {len(result.history)} epochs, best epoch {result.best_epoch}"
        + (f", validation ROC AUC {result.best_metric:.4f}" if result.best_metric is not None else "")
        + (" (stopped early)" if result.stopped_early else "")
    )
    if last.get("images_per_s"):
        typer.echo(f"last epoch: {last['images_per_s']:.0f} images/s")
    if result.members:
        typer.echo(f"ensemble of {len(result.members)} networks, best epochs "
                   f"{[m.get('best_epoch', 'kept') for m in result.members]}; their runs: {out / 'members'}")
        typer.echo(f"model: {out / 'model'}   metrics logs: {out / 'members' / 'K' / 'metrics.jsonl'}")
    else:
        typer.echo(f"model: {out / 'model'}   metrics log: {out / 'metrics.jsonl'}")
    if (out / "training.png").is_file():
        typer.echo(f"training curves: {out / 'training.png'}")
    alarmed = [r for r in result.history if r.get("alarms")]
    if alarmed:
        last = "; ".join(a["message"] for a in alarmed[-1]["alarms"])
        typer.echo(f"warning: health alarms in epoch(s) {[r['epoch'] for r in alarmed]}; the last: {last}", err=True)


#: ``siamkit train`` options that set a TrainConfig field of the same name
_FIELD_FLAGS = (
    "encoder", "embedding_dim", "distance", "normalize", "loss", "miner", "margin", "batching", "batch_size",
    "m_per_class", "epochs", "steps_per_epoch", "optimizer", "lr", "weight_decay", "schedule", "step_size", "gamma",
    "grad_clip", "ema", "augment", "rotation", "shear", "translate", "fill", "val_fraction", "patience", "tie_break",
    "precision", "channels_last", "seed", "ensemble", "progress", "health", "tta", "cross_batch_memory", "memory_warmup",
)


def _initial_weights(init: Optional[Path]) -> Any:
    """--init's weights, read before any file of the run is written (not a model, or a damaged one: exit 2)."""
    from ..training.init_weights import initial_state

    return initial_state(init) if init is not None else None


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given on the command line (or its environment variable)."""
    source = ctx.get_parameter_source(name)  # typer's own ParameterSource enum: compare by name
    return getattr(source, "name", None) in ("COMMANDLINE", "ENVIRONMENT")


def _config_and_input(ctx: typer.Context, recipe: Optional[str], flags: dict[str, Any]) -> tuple[Any, str, Any, Optional[int]]:
    """(TrainConfig, task, image size, channels) from the recipe with the options given on
    the command line overriding its fields; without a recipe, from the options alone."""
    from ..training import TrainConfig
    from ..training.recipes import load_recipe

    fields = {k: flags[k] for k in _FIELD_FLAGS}
    fields["embedding_dim"] = fields["embedding_dim"] or None
    if flags.get("matryoshka_dims"):  # a recipe's [train] matryoshka_dims unless given here
        from ..matryoshka import parse_dims

        fields["matryoshka_dims"] = parse_dims(flags["matryoshka_dims"])
    enc_kw = _encoder_kwargs(flags["width"], flags["grid"], flags["dropout"])
    size = parse_size(flags["image_size"])
    if recipe is None:
        return TrainConfig(**fields, encoder_kwargs=enc_kw), flags["task"], size, flags["channels"]
    r = load_recipe(recipe)
    given = {k: v for k, v in fields.items() if k == "matryoshka_dims" or _given(ctx, k)}
    base = r.train.to_dict()
    if "encoder" in given and given["encoder"] != base["encoder"]:
        base["encoder_kwargs"] = {}  # another encoder: the recipe's encoder options do not apply
    given["encoder_kwargs"] = {**base["encoder_kwargs"], **enc_kw}
    if "loss" in given and "miner" not in given:
        base["miner"] = None  # the new loss's default miner
    config = TrainConfig.from_dict({**base, **given})
    task = flags["task"] if _given(ctx, "task") else r.task
    size = size if _given(ctx, "image_size") else r.input.image_size
    channels = flags["channels"] if _given(ctx, "channels") else r.input.channels
    return config, task, size, channels


def _with_backbone(ctx: typer.Context, config: Any, size: Any, backbone: Optional[str]) -> tuple[Any, Any]:
    """(config, image size) with a pretrained backbone (``--backbone``, or a recipe's
    ``hf_image`` encoder): the ``hf_image`` encoder on it, its processor's input size
    (unless --image-size) and centre crop, and lr 1e-4 unless one is given."""
    from ..encoders.vision import backbone_input

    kw = config.encoder_kwargs
    ref = backbone or (kw.get("backbone") if config.encoder == "hf_image" else None)
    if ref is None:
        return config, size
    if backbone is not None and _given(ctx, "encoder") and config.encoder != "hf_image":
        fail(f"--encoder {config.encoder} with --backbone: the backbone is the encoder (hf_image)")
    conv_options = [f"--{n}" for n in ("width", "grid", "dropout") if _given(ctx, n)]
    if conv_options:
        fail(f"{', '.join(conv_options)}: options of the conv encoders, not of a pretrained backbone")
    extra = sorted(set(kw) - {"backbone", "pooling"}) if config.encoder == "hf_image" else []
    if extra:
        fail(f"the hf_image encoder takes the options backbone and pooling, not {extra}")
    info = backbone_input(ref)
    pooling = {"pooling": kw["pooling"]} if config.encoder == "hf_image" and "pooling" in kw else {}
    config.encoder, config.encoder_kwargs = "hf_image", {"backbone": str(ref), **pooling}
    config.preprocess = info.preprocess() + [s for s in config.preprocess if s not in info.preprocess()]
    if not _given(ctx, "lr") and ctx.params.get("recipe") is None:
        config.lr = 1e-4  # the from-scratch default (1e-3) would wreck pretrained weights
    config.validate()
    return config, size if _given(ctx, "image_size") else info.size


@clean_errors
def train(
    ctx: typer.Context,
    data: Optional[Path] = typer.Option(None, "--data", help="Folder with one sub-folder of images per class."),
    out: Path = typer.Option(Path("runs/train"), help="Output folder: model/, checkpoint/, metrics.jsonl."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="A shipped recipe (faces, signatures, omniglot, digits; `siamkit recipes`) or a .toml file; the options given here override its fields."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out with its saved options."),
    encoder: str = typer.Option("conv4", help="Encoder: conv4, resnet, koch, mlp (hf_image: see --backbone)."),
    embedding_dim: int = typer.Option(64, help="Embedding size (0 = the encoder's pooled features)."),
    matryoshka_dims: Optional[str] = typer.Option(None, "--matryoshka-dims", help="Nested embedding sizes, e.g. 16,32,64,128 (ending at --embedding-dim): the loss is summed over these prefixes (Matryoshka), so the model works at each size (`evaluate --dims`, `gallery ... --dim`)."),
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
    ema: float = typer.Option(0.0, help="Keep an exponential moving average of the weights with this decay per step, in [0, 1) (0 = off); validation and the saved model use it."),
    cross_batch_memory: int = typer.Option(0, "--cross-batch-memory", help="Rows of a cross-batch memory (XBM, e.g. 16384; 0 = off): triplet / contrastive anchors are mined against the batch plus earlier batches' embeddings."),
    memory_warmup: int = typer.Option(0, "--memory-warmup", help="Steps trained before the cross-batch memory is used and filled."),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="Random affine augmentation."),
    rotation: float = typer.Option(10.0, help="Augmentation: max rotation in degrees."),
    shear: float = typer.Option(0.1, help="Augmentation: max shear factor."),
    translate: float = typer.Option(0.1, help="Augmentation: max shift as a fraction of the side."),
    fill: float = typer.Option(0.0, help="Augmentation: background value in [0, 1] (1 = white paper)."),
    image_size: Optional[str] = typer.Option(None, help="Resize images to SIDE or H,W (default: the recipe's, else the first image's size)."),
    channels: Optional[int] = typer.Option(None, help="1 (grey) or 3 (colour); default: the recipe's, else from the files."),
    tta: Optional[str] = typer.Option(None, help="Test-time augmentation the model records: none, shift, flip, shift+flip."),
    val_fraction: float = typer.Option(0.2, help="Fraction of classes held out for validation and early stopping (names saved in OUT/split.json)."),
    val_data: Optional[Path] = typer.Option(None, "--val-data", help="A separate validation folder (other classes); nothing is then held out from --data."),
    val_classes: Optional[Path] = typer.Option(None, "--val-classes", help="A file of class names, one per line, held out from --data for validation."),
    rotations: Optional[str] = typer.Option(None, "--rotations", help="Degrees, e.g. 0,90,180,270: each rotation of a training class is a new class (default: the recipe's [data] rotations, else none; validation classes are not rotated)."),
    class_depth: Optional[int] = typer.Option(None, "--class-depth", help="1: classes are the sub-folders of --data; 2: their sub-folders (GROUP/CLASS, e.g. Omniglot's ALPHABET/CHARACTER); default: 2 when every sub-folder holds only folders of images, else 1 (the summary line says which)."),
    task: str = typer.Option("classes", help="classes (one sub-folder per class, or GROUP/CLASS: see --class-depth); signatures (WRITER/genuine + WRITER/forged: trains on the genuine signatures, class = writer, and validates on the held-out writers' genuine vs skilled forgery pairs; forgeries are never a writer's class); signatures-genuine (WRITER/genuine only, forgeries not loaded); text (text pairs: a text_a,text_b,label_or_score CSV or an STS-B / SICK / MRPC folder)."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="--task text: a pretrained sentence encoder (local folder or hub name) to fine-tune; default: a from-scratch twin."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from the weights of this saved model (same encoder, options, embedding size and channels; the input size may differ with a globally pooled encoder), e.g. one trained on a related task; default: random weights."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="A pretrained image backbone to fine-tune as the twin: a local transformers model folder (config.json + model.safetensors [+ preprocessor_config.json]); the encoder becomes hf_image, the input size and crop its processor's (unless --image-size), lr 1e-4 unless given."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="--task text: the most tokens per text (default 128)."),
    patience: Optional[int] = typer.Option(5, help="Stop after this many epochs without a better validation ROC AUC."),
    tie_break: str = typer.Option("earlier", help="Which epoch a validation tie keeps: earlier or later."),
    precision: str = typer.Option("auto", help="auto (bf16 + channels_last where the CPU has native bfloat16, else fp32), fp32 or bf16."),
    channels_last: bool = typer.Option(False, "--channels-last/--no-channels-last", help="channels_last memory format."),
    seed: int = typer.Option(0, help="Random seed."),
    ensemble: int = typer.Option(
        1, min=1, help="Train N networks (seeds seed..seed+N-1, each its own best epoch) and join them into one model."
    ),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: on a terminal)."),
    health: bool = typer.Option(
        True, "--health/--no-health", help="Probe-batch health statistics and alarms (collapse, ...) every epoch, training.png."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each epoch."),
) -> None:
    """Train on a folder of images laid out one sub-folder per class, from a recipe
    (--recipe) or the options (or, with --task text, on text pairs). Every epoch prints a
    line with its loss, validation ROC AUC and health (probe distances, active triplets,
    spread, effective rank, gradient norm); alarms (collapse, no active triplets, below raw
    pixels) are printed as warnings with their likely fix."""
    setup_logging(verbose)
    from ..training.recipes import recipe_task

    text_recipe = recipe is not None and recipe_task(recipe) == "text"
    if task == "text" or text_recipe:
        from .text import train_text_from_train_options

        return train_text_from_train_options(ctx, recipe if text_recipe else None)
    from ..training import fit
    from ..training.distributed import init_from_env
    from ..training.health import summarize

    env = init_from_env()  # under torchrun: join the process group; rank 0 prints and writes
    if env is not None and not env.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the other ranks train silently until they exit
    if data is None:
        fail("--data is required: a folder with one sub-folder of images per class")
    if val_data is not None and val_classes is not None:
        fail("give --val-data or --val-classes, not both")
    if resume:
        if recipe is not None or init is not None:
            fail("--resume continues with the run's saved options and weights; leave out --recipe and --init")
        config, ds = _resumed_run(out, data, progress, task)
    else:
        flags = dict(locals())
        config, task, size, channels = _config_and_input(ctx, recipe, flags)
        config, size = _with_backbone(ctx, config, size, backbone)
        if out.exists() and not out.is_dir():
            fail(f"--out {out} is an existing file; give a folder (new, or one that holds no run)")
        if (out / "checkpoint").exists() or (out / "members").exists():
            fail(f"{out} already holds a run; use --resume to continue it or choose another --out")
        init = _initial_weights(init)  # type: ignore[assignment]
        ds = _load_train_data(data, task, size, channels, config, class_depth)
    from ..data.images import layout_note

    rots = _rotations(recipe, rotations, out, resume, task)
    typer.echo(f"{len(ds)} images of {len(ds.classes)} classes, {ds.channels}x{ds.image_size[0]}x{ds.image_size[1]}"
               + (f" (recipe {recipe})" if recipe else "") + layout_note(ds.classes))
    train_ds, val_ds, record = _split(ds, out, val_data, val_classes, config)
    record.rotations = list(rots)
    split_path = record.save(out)
    typer.echo(f"training on {len(record.train_classes)} classes, validating on {len(record.val_classes)} "
               f"({record.source}); class names in {split_path}")
    train_ds = _rotated_training(train_ds, rots)
    result = fit(train_ds.images, train_ds.labels, config, out_dir=out, resume=resume,
                 val_x=val_ds.images if val_ds is not None else None, val_y=val_ds.labels if val_ds is not None else None,
                 callbacks=[lambda r: typer.echo(summarize(r))], init=init, **_task_fit_options(val_ds))
    _print_result(result, out)


def _print_finetune_report(rep: dict[str, Any], out: Path) -> None:
    o, n = rep["held_out"]["old"], rep["held_out"]["new"]
    sc = rep.get("feedback_screening", {})
    if sc:
        typer.echo(f"feedback: {sc['reports_teaching']} report(s) in {sc['claims_teaching']} claim(s) taught; "
                   f"{len(sc['waiting_for_reporters'])} wait for more reporters; {len(sc['held_contradicted'])} held as contradicted")
    typer.echo(f"feedback pairs right: {rep['feedback_pairs_right']['old']:.3f} -> {rep['feedback_pairs_right']['new']:.3f} "
               f"({rep['feedback_pairs_fixed']} fixed, {rep['feedback_pairs_broken']} broken, of {rep['feedback_pairs']})")
    typer.echo(f"held-out ROC AUC {o['roc_auc']:.4f} -> {n['roc_auc']:.4f}; accuracy {o['accuracy']:.4f} -> {n['accuracy']:.4f}")
    typer.echo(f"new model: {out}" + (f"; gallery re-embedded ({rep['gallery_reembedded']} samples)" if "gallery_reembedded" in rep else ""))


def _rollback(model: Path, gallery: Optional[Path]) -> None:
    from ..training.finetune import rollback as run_rollback

    if gallery is None:
        fail("--rollback needs --gallery (the gallery to put back on the previous model)")
    r = run_rollback(model, gallery)
    typer.echo(f"gallery {gallery} back on {r['model_dir']} ({r['fingerprint'][:12]}); {r['samples']} samples re-embedded")


@clean_errors
def finetune(
    model: Path = typer.Option(..., "--model", "-m", help="The current (calibrated) model folder; with --rollback, the fine-tuned one."),
    feedback: Optional[Path] = typer.Option(None, "--feedback", parser=gallery_location, metavar="FILE|URL", help="The feedback store (required unless --rollback)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The new model folder (written only when it is not worse)."),
    replay: Optional[Path] = typer.Option(None, "--replay", help="The original training data: one sub-folder of images per class."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", parser=gallery_location, metavar="FILE|URL", help="The gallery (for identify / identity_verify feedback)."),
    reembed_gallery: bool = typer.Option(False, "--reembed-gallery", help="Re-embed the gallery with the new model."),
    steps: int = typer.Option(300, help="Optimizer steps."),
    lr: float = typer.Option(2e-4, help="Learning rate."),
    feedback_weight: float = typer.Option(2.0, help="Weight of a feedback pair relative to a replay pair."),
    max_regression: float = typer.Option(0.005, help="Largest allowed drop of held-out ROC AUC / accuracy."),
    seed: int = typer.Option(0, help="Seed of the class split and batches."),
    min_reporters: int = typer.Option(
        2, "--min-reporters", min=1,
        help="Distinct reporters needed behind a report before it teaches the model (contradicted reports are held for review).",
    ),
    rollback: bool = typer.Option(
        False, "--rollback", help="Put --gallery back on the model that --model (a fine-tuned folder) started from, re-embedded."
    ),
) -> None:
    """Fine-tune on the reported mistakes mixed with replay of the training data;
    re-calibrate; refuse to write the new model if it is worse on held-out classes.
    A report teaches only when --min-reporters distinct reporters made it and no report
    contradicts it. `--rollback --model NEW --gallery G` undoes a `--reembed-gallery`."""
    from ..data.images import ImageFolderDataset
    from ..errors import FinetuneRefused
    from ..training.finetune import FinetuneConfig
    from ..training.finetune import finetune as run_finetune
    from ..io import read_config
    from ..network import InputSpec

    if rollback:
        _rollback(model, gallery)
        return
    if out is None or replay is None or feedback is None:
        fail("--feedback, --out and --replay are required (unless --rollback)")
    spec = InputSpec.from_dict(read_config(model)["network"].get("input_spec"))
    if not spec.is_image:
        fail("finetune takes image models")
    ds = ImageFolderDataset.from_folder(replay, image_size=spec.image_size, channels=int(spec.channels),
                                        preprocess=spec.preprocessor())
    cfg = FinetuneConfig(steps=steps, lr=lr, feedback_weight=feedback_weight, max_regression=max_regression,
                         min_reporters=min_reporters, seed=seed)
    try:
        rep = run_finetune(model, feedback, out, replay_images=ds.images, replay_labels=ds.labels, gallery=gallery,
                           reembed_gallery=reembed_gallery, config=cfg)
    except FinetuneRefused as e:
        echo_json(e.report["held_out"], sort_keys=False, err=True)
        typer.echo(f"refused: {e}", err=True)
        raise typer.Exit(3) from None
    _print_finetune_report(rep, out)
