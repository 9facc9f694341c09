"""Save and load models and checkpoints: safetensors + JSON, never pickle.

A model folder holds:

- ``config.json``: format name and version, the siamkit version that wrote it, and the
  recipe of the network (encoder name + arguments, distance, head, input spec);
- ``model.safetensors``: the weights;
- ``calibration.json`` (optional, written by calibration).

Loading rebuilds the network from the recipe and loads the weights strictly: a file from
another format version, an unknown encoder, or weights that do not fit the recipe give a
:class:`~siamkit.errors.ModelFileError` naming the problem.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from ._atomic import atomic_path, write_json_atomic
from .encoders import create_encoder
from .errors import ModelFileError, SiamkitError
from .network import SiameseNetwork
from .versioned import check_versioned, read_versioned_json

__all__ = [
    "save_model",
    "load_model",
    "read_config",
    "network_from_config",
    "read_versioned_json",
    "check_versioned",
    "check_fingerprint",
    "file_fingerprint",
    "write_json_atomic",
    "save_state_dict",
    "load_state_dict",
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "FORMAT",
    "FORMAT_VERSION",
]

logger = logging.getLogger(__name__)

FORMAT = "siamkit-model"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def save_state_dict(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically (see :mod:`siamkit._atomic`).

    Args:
        state: name -> tensor (moved to CPU and made contiguous).
        path: the file to (re)place.
        metadata: string metadata stored in the file's header.
    """
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=metadata)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, with a clear error when it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path} is not a readable safetensors file ({e})") from None


def save_model(network: SiameseNetwork, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``network`` to the folder ``path`` (created if needed). Returns the folder.

    Writes ``model.safetensors``, then ``config.json`` with the weights' fingerprint
    (both atomically), and sets ``network.fingerprint`` to it.

    Args:
        network: the network to save (its :meth:`~siamkit.network.SiameseNetwork.config`
            and weights).
        path: the model folder.
        extra: JSON-able information kept under ``"extra"`` in config.json (e.g. the
            training configuration and metrics).

    Returns:
        The folder, as a :class:`~pathlib.Path`.

    Raises:
        ValueError: the encoder was not made by :func:`~siamkit.encoders.create_encoder`
            (it cannot be saved by name), or the network is a prefix view (``at_dim``).
    """
    if getattr(network, "dim", None) is not None:
        raise ValueError(f"this network is a view at {network.dim} dimensions (at_dim): save the full network")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "siamkit_version": __version__,
        "network": network.config(),
        "extra": extra or {},
    }
    save_state_dict(network.state_dict(), path / WEIGHTS, metadata={"format": FORMAT})
    config["fingerprint"] = file_fingerprint(path / WEIGHTS)
    write_json_atomic(path / CONFIG, config)
    network.fingerprint = config["fingerprint"]  # type: ignore[assignment]
    return path


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes, as ``"sha256:<hex>"`` (identifies a model's weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def check_fingerprint(
    saved: str | None,
    given: str | None,
    *,
    where: str,
    hint: str = "",
    error: type[SiamkitError] = ModelFileError,
    allow_unsaved: bool = False,
) -> None:
    """The one rule for "does this file belong to this model?" (calibration, anomaly
    detector, a gallery's calibrator).

    A file that records no fingerprint (written before fingerprints existed, or for an
    unsaved network) cannot be checked: a warning. A network without a fingerprint (never
    saved or loaded) cannot be checked either: an error, since the file's numbers would be
    applied to weights nobody can name, unless the caller works with unsaved networks
    (``allow_unsaved``). Otherwise the two must be equal.

    Args:
        saved: the fingerprint the file records (or None).
        given: the fingerprint of the network it is used with (or None).
        where: names the file in messages.
        hint: appended to the mismatch message (what to do, e.g. "; recalibrate").
        error: the error class raised (a :class:`~siamkit.errors.SiamkitError`).
        allow_unsaved: accept a network without a fingerprint.

    Raises:
        SiamkitError: ``error``, when the network has no fingerprint (and that is not
            allowed) or the fingerprints differ.
    """
    if saved is None:
        if given is not None:
            logger.warning("%s records no model fingerprint: cannot check that it belongs to this model", where)
        return
    if given is None:
        if allow_unsaved:
            return
        raise error(
            f"{where} was fitted for model {saved!r}, but this network has no fingerprint (it was never saved "
            "or loaded): load the model folder it was fitted with"
        )
    if given != saved:
        raise error(
            f"{where} was fitted for model {saved!r}, not for this model ({given!r}): "
            f"use it with that model, not with this model{hint}"
        )


def read_config(path: str | Path) -> dict[str, Any]:
    """Read and check a model folder's config.json (format and version).

    Args:
        path: a model folder, or its config.json.

    Returns:
        The parsed config.

    Raises:
        ModelFileError: no such folder, no config.json, not JSON, another format or
            format version.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model folder {path} does not exist")
    cfg_path = path / CONFIG if path.is_dir() else path
    if not cfg_path.is_file():
        raise ModelFileError(f"{path} is not a siamkit model folder (no {CONFIG})")
    return read_versioned_json(cfg_path, fmt=FORMAT, version=FORMAT_VERSION, what="model config")


def network_from_config(net_cfg: dict[str, Any]) -> SiameseNetwork:
    """Rebuild an (untrained) network from the ``"network"`` part of a model config
    (what :meth:`SiameseNetwork.config` wrote). Training builds a network from a
    :class:`~siamkit.training.TrainConfig` instead (``siamkit.training.build_network``).

    Args:
        net_cfg: the recipe: encoder name + keyword arguments, distance, normalize,
            head, input spec.

    Returns:
        The network, with freshly initialised weights.

    Raises:
        ModelFileError: the recipe cannot be built (unknown encoder, bad arguments).
    """
    try:
        enc_cfg = net_cfg["encoder"]
        encoder = create_encoder(enc_cfg["name"], **enc_cfg.get("kwargs", {}))
        return SiameseNetwork(
            encoder,
            distance=net_cfg.get("distance", "euclidean"),
            normalize=net_cfg.get("normalize", False),
            head=net_cfg.get("head"),
            input_spec=net_cfg.get("input_spec"),
            matryoshka_dims=net_cfg.get("matryoshka_dims"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"the network recipe in the model config cannot be built: {e}") from None


def load_model(path: str | Path, *, device: str | torch.device | None = None) -> SiameseNetwork:
    """Load a model folder written by :func:`save_model`, in eval mode.

    Never unpickles: weights come from safetensors, the recipe from JSON.

    Args:
        path: the model folder.
        device: where to move the network; None leaves it on the CPU.

    Returns:
        The network, in eval mode, with ``fingerprint`` set (the sha256 of the weights
        file, recomputed; it must equal the one config.json records).

    Raises:
        ModelFileError: no such folder or no config.json, another format or format
            version, a recipe that cannot be built, or weights that are missing,
            damaged, do not fit the recipe, or differ from the fingerprint config.json records.
    """
    path = Path(path)
    config = read_config(path)
    network = network_from_config(config.get("network", {}))
    state = load_state_dict(path / WEIGHTS)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise ModelFileError(f"the weights in {path / WEIGHTS} do not fit the network in {path / CONFIG}: {first}") from None
    network.eval()
    actual = file_fingerprint(path / WEIGHTS)
    recorded = config.get("fingerprint")
    if recorded and recorded != actual:
        # the calibration, galleries and detectors are tied to the recorded fingerprint:
        # weights changed since (corrupted, or swapped in by hand) would inherit them silently
        raise ModelFileError(
            f"{path / WEIGHTS} does not match the fingerprint {path / CONFIG} records ({recorded}, the file is "
            f"{actual}): the weights were changed or damaged after saving; save the model again"
        )
    network.fingerprint = actual  # type: ignore[assignment]
    if device is not None:
        network.to(device)
    return network


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            name = f"{pid}.{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value
            else:
                scalars[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`.

    Args:
        tensors: the tensor half, named ``"<param id>.<key>"``.
        meta: the JSON half: ``"param_groups"`` and the ``"scalars"`` (named like the
            tensors).

    Returns:
        An optimizer ``state_dict`` (``{"state": ..., "param_groups": ...}``, integer
        param ids) for ``optimizer.load_state_dict``.
    """
    state: dict[int, dict[str, Any]] = {}
    for source in (tensors, meta.get("scalars", {})):
        for name, value in source.items():
            pid, key = name.split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}
