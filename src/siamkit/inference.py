"""Batched inference helpers: embed a whole set, compare pairs of inputs."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .data.images import to_float
from .network import SiameseNetwork

__all__ = ["embed_all", "pair_distances_of_embeddings", "autocast_context"]


def autocast_context(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``precision="bf16"``, nothing for ``"fp32"``."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def embed_all(
    network: SiameseNetwork,
    inputs: torch.Tensor,
    *,
    batch_size: int = 256,
    precision: str = "fp32",
    channels_last: bool = False,
) -> torch.Tensor:
    """Embed a whole set in eval mode, in batches. uint8 images are scaled to [0, 1].

    Shapes: (N, ...) -> (N, D) float32. The network's train/eval mode is restored.
    """
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device
    out = []
    try:
        with torch.no_grad(), autocast_context(precision, device):
            for s in _chunks(inputs.shape[0], batch_size):
                x = to_float(inputs[s]).to(device)
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                out.append(network.embed(x).float())
    finally:
        network.train(was_training)
    if not out:
        return torch.zeros(0, network.embedding_dim)
    return torch.cat(out)


def pair_distances_of_embeddings(
    network: SiameseNetwork, embeddings: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, chunk: int = 65536
) -> torch.Tensor:
    """The network's distance (its head's, if any) for index pairs of an embedded set."""
    with torch.no_grad():
        parts = [
            network.embedding_distance(embeddings[a[s]], embeddings[b[s]]).float() for s in _chunks(a.numel(), chunk)
        ]
    return torch.cat(parts) if parts else embeddings.new_zeros(0)
