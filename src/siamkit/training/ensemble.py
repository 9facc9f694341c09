"""Train an ensemble: ``TrainConfig(ensemble=n)`` trains n networks, seeds apart, and
joins them into one model (:class:`~siamkit.encoders.ensemble.EnsembleEncoder`).

Each member is an ordinary :func:`~siamkit.training.fit` run with ``seed + k``, its own
best epoch on the validation data, and (with an ``out_dir``) its own run folder
``members/K`` (model, checkpoint, ``metrics.jsonl``). The joined network, saved to
``out_dir/model``, embeds with every member and compares the concatenation of their unit
embeddings (over ``sqrt(n)``), so calibration, galleries, ``compare`` and ONNX export take
it as they take one network. ``ensemble.json`` in the run folder keeps the options (for
``siamkit train --resume``); resume continues the member that was running and keeps the
finished ones (a file ``DONE`` in their folder).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..data.splits import split_by_class
from ..encoders.ensemble import EnsembleEncoder
from .._atomic import write_json_atomic
from ..errors import ModelFileError
from ..io import load_model, save_model
from ..network import SiameseNetwork
from .checkpoint import MODEL_DIR
from .distributed import barrier, init_from_env, is_main

__all__ = ["fit_ensemble", "join_networks"]

DONE = "DONE"


def join_networks(networks: list[SiameseNetwork]) -> SiameseNetwork:
    """Trained networks as one ensemble network (unit embeddings concatenated, Euclidean).

    Args:
        networks: 2 or more networks taking the same inputs (the first one's input spec,
            preprocessing and TTA included, is the ensemble's).

    Returns:
        The ensemble network, in eval mode.

    Raises:
        ValueError: fewer than 2 networks, a pair head, or networks that take other inputs.
    """
    if any(n.input_spec != networks[0].input_spec for n in networks):
        raise ValueError("the networks of an ensemble must take the same inputs (their input specs differ)")
    net = SiameseNetwork(EnsembleEncoder.from_networks(networks), distance="euclidean", normalize=True,
                         input_spec=networks[0].input_spec)
    return net.eval()


def fit_ensemble(train_x: torch.Tensor, train_y: torch.Tensor, config: Any, *, out_dir: str | Path | None = None,
                 resume: bool = False, **fit_options: Any) -> Any:
    """Train ``config.ensemble`` networks (seeds ``config.seed + k``) and join them.

    Args:
        train_x: the training samples, as for :func:`~siamkit.training.fit`.
        train_y: their class labels.
        config: the :class:`~siamkit.training.TrainConfig`; ``ensemble`` >= 2.
        out_dir: the run folder (members in ``members/K``, the joined model in
            ``model``); None keeps everything in memory.
        resume: continue an interrupted run in ``out_dir``.
        **fit_options: passed to every member's :func:`~siamkit.training.fit`
            (validation data, callbacks, groups, validate_fn, ...). Without validation
            data and with ``config.val_fraction``, the classes are held out once (seed
            ``config.seed``), the same for every member.

    Returns:
        A :class:`~siamkit.training.loop.FitResult`: the joined network; ``history``,
        ``best_epoch`` and ``best_metric`` of the last member, and ``members``: each
        member's best epoch, best metric and epochs run.

    Raises:
        ModelFileError: ``out_dir`` already holds an ensemble run and ``resume`` is off,
            or ``resume`` without ``out_dir``.
    """
    from .loop import FitResult, fit

    n = int(config.ensemble)
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ModelFileError("resume needs out_dir")
    init_from_env()  # under torchrun: join the group now, so that the check below precedes every write
    if out is not None and (out / "members").exists() and not resume:
        raise ModelFileError(f"{out} already holds an ensemble run; resume it or choose another folder")
    barrier()  # under torchrun: every rank has checked the folder before rank 0 writes to it
    if out is not None and not resume and is_main():  # what `siamkit train --resume` reads back
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "ensemble.json", {"config": config.to_dict(), "sample_shape": list(train_x.shape[1:])})
    if fit_options.get("val_x") is None and config.val_fraction > 0:  # one held-out split for every member
        tr, va = split_by_class(torch.as_tensor(train_y), config.val_fraction, config.seed)
        fit_options = {**fit_options, "val_x": train_x[va], "val_y": torch.as_tensor(train_y)[va]}
        if fit_options.get("groups") is not None:
            fit_options["groups"] = fit_options["groups"][tr]
        train_x, train_y = train_x[tr], torch.as_tensor(train_y)[tr]
    nets, members, last = [], [], None
    for k in range(n):
        cfg = dataclasses.replace(config, ensemble=1, seed=config.seed + k)
        folder = out / "members" / str(k) if out is not None else None
        if folder is not None and (folder / DONE).is_file():
            nets.append(load_model(folder / MODEL_DIR))
            members.append({"member": k, "seed": cfg.seed, "resumed": "done"})
            continue
        again = resume and folder is not None and (folder / "checkpoint").is_dir()
        last = fit(train_x, train_y, cfg, out_dir=folder, resume=again, **fit_options)
        nets.append(last.network)
        members.append({"member": k, "seed": cfg.seed, "best_epoch": last.best_epoch,
                        "best_metric": last.best_metric, "epochs": len(last.history)})
        if folder is not None and is_main():
            (folder / DONE).write_text("finished\n")
        barrier()
    network = join_networks(nets)
    if out is not None and is_main():  # files from rank 0 only, as fit() writes them
        save_model(network, out / MODEL_DIR, extra={"train_config": config.to_dict(), "ensemble": members})
    barrier()  # no rank returns before rank 0 has written the model
    if last is None:  # every member was done already
        return FitResult(network, [], 0, None, False, members)
    return FitResult(network, last.history, last.best_epoch, last.best_metric, last.stopped_early, members)
