"""Start a training run from another model's weights (``fit(..., init=...)``,
``siamkit train --init MODEL_DIR``): transfer from a related task.

The model must have the same architecture as the network the config builds (the same
encoder, encoder options, embedding size and input channels); its input recipe and
image size may differ. With an encoder that ends in global pooling (``conv4`` with
``grid = 1``), weights learnt at one image size apply at any other, e.g. a network
trained on Omniglot's handwritten characters at 64x64 fine-tuned on signature scans at
75x110 (docs/benchmarks.md, "CEDAR without the scan shortcut"). Only the weights are
taken: the optimiser, schedule and epoch start afresh, and a resumed run ignores
``init`` (its checkpoint holds the weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import DataError

__all__ = ["initial_state", "load_initial_weights"]


def initial_state(init: Any) -> dict[str, torch.Tensor]:
    """The state dict of ``init``.

    Args:
        init: a saved model folder (safetensors + JSON, :func:`siamkit.load_model`), a
            network (any :class:`torch.nn.Module`) or a state dict.

    Returns:
        Its weights and buffers (copies).

    Raises:
        ModelFileError: a folder that holds no model, or a damaged one.
        DataError: anything else.
    """
    if isinstance(init, (str, Path)):
        from ..io import load_model

        init = load_model(init)
    if isinstance(init, torch.nn.Module):
        init = init.state_dict()
    if not isinstance(init, Mapping) or not all(isinstance(v, torch.Tensor) for v in init.values()):
        raise DataError(f"init must be a model folder, a network or a state dict, got {type(init).__name__}")
    return {k: v.detach().clone() for k, v in init.items()}


def load_initial_weights(network: torch.nn.Module, init: Any) -> None:
    """Copy ``init``'s weights into ``network`` (in place, so an optimiser built on its
    parameters keeps them).

    Args:
        network: the freshly built network.
        init: what :func:`initial_state` takes.

    Returns:
        None.

    Raises:
        DataError: ``init`` has other weights than ``network`` (missing, extra or of
            another shape: another architecture), naming the first ones.
    """
    state = initial_state(init)
    own = network.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        what = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "", f"not in this network {extra[:3]}" if extra else "",
            f"other shapes: {shapes[:3]}" if shapes else "") if part)
        raise DataError(f"the init model's weights do not fit this network (another encoder, embedding size "
                        f"or channel count?): {what}")
    network.load_state_dict(state)
