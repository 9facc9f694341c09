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
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .encoders import create_encoder
from .errors import ModelFileError
from .network import SiameseNetwork

__all__ = [
    "save_model",
    "load_model",
    "read_config",
    "file_fingerprint",
    "write_json_atomic",
    "save_state_dict",
    "load_state_dict",
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "FORMAT",
    "FORMAT_VERSION",
]

FORMAT = "siamkit-model"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON through a temporary file and an atomic rename (no half-written files)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_state_dict(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors save through a temporary file and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

    Args:
        extra: JSON-able information kept under ``"extra"`` in config.json (e.g. the
            training configuration and metrics).
    """
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


def read_config(path: str | Path) -> dict[str, Any]:
    """Read and check a model folder's config.json."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model folder {path} does not exist")
    cfg_path = path / CONFIG if path.is_dir() else path
    if not cfg_path.is_file():
        raise ModelFileError(f"{path} is not a siamkit model folder (no {CONFIG})")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{cfg_path} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{cfg_path} is not a siamkit model config (format is not {FORMAT!r})")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written in model format {version} (siamkit {config.get('siamkit_version')}); "
            f"this siamkit ({__version__}) reads format {FORMAT_VERSION}"
        )
    return config


def build_network(net_cfg: dict[str, Any]) -> SiameseNetwork:
    """Rebuild an (untrained) network from the ``"network"`` part of a config."""
    try:
        enc_cfg = net_cfg["encoder"]
        encoder = create_encoder(enc_cfg["name"], **enc_cfg.get("kwargs", {}))
        return SiameseNetwork(
            encoder,
            distance=net_cfg.get("distance", "euclidean"),
            normalize=net_cfg.get("normalize", False),
            head=net_cfg.get("head"),
            input_spec=net_cfg.get("input_spec"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"the network recipe in the model config cannot be built: {e}") from None


def load_model(path: str | Path, *, device: str | torch.device | None = None) -> SiameseNetwork:
    """Load a model folder written by :func:`save_model`, in eval mode.

    Never unpickles: weights come from safetensors, the recipe from JSON.
    """
    path = Path(path)
    config = read_config(path)
    network = build_network(config.get("network", {}))
    state = load_state_dict(path / WEIGHTS)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise ModelFileError(f"the weights in {path / WEIGHTS} do not fit the network in {path / CONFIG}: {first}") from None
    network.eval()
    network.fingerprint = config.get("fingerprint") or file_fingerprint(path / WEIGHTS)  # type: ignore[assignment]
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
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for source in (tensors, meta.get("scalars", {})):
        for name, value in source.items():
            pid, key = name.split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}
