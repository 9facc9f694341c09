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
    tta: str | None = None,
) -> torch.Tensor:
    """Embed a whole set in eval mode, in batches. uint8 images are scaled to [0, 1].

    Args:
        tta: test-time augmentation for images: the mean embedding over views of each
            image (re-normalised when the network normalises). ``"shift"``: the image and
            its four 1-pixel shifts (edges replicated); ``"flip"``: the image and its
            mirror image (faces); ``"shift+flip"``: both; None: the image only. Measured
            on Omniglot (docs/benchmarks.md): ``"shift"`` adds about 1 point of 20-way
            accuracy for 5x the embedding time.

    Shapes: (N, ...) -> (N, D) float32. The network's train/eval mode is restored.
    """
    if tta is not None:
        return _embed_tta(network, inputs, tta, batch_size=batch_size, precision=precision, channels_last=channels_last)
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


_TTA = ("shift", "flip", "shift+flip")


def _tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    views = [x]
    if "shift" in tta:
        h, w = x.shape[-2:]
        pad = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        views += [pad[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    if "flip" in tta:
        views += [v.flip(-1) for v in views]
    return views


def _embed_tta(
    network: SiameseNetwork, inputs: torch.Tensor, tta: str, *, batch_size: int, precision: str, channels_last: bool
) -> torch.Tensor:
    if tta not in _TTA:
        raise ValueError(f"tta {tta!r}: choose one of {_TTA} or None")
    if inputs.ndim != 4:
        raise ValueError(f"tta needs images (N, C, H, W), got shape {tuple(inputs.shape)}")
    parts: list[torch.Tensor] = []
    for start in range(0, inputs.shape[0], batch_size):
        x = to_float(inputs[start : start + batch_size])
        views = _tta_views(x, tta)
        e = embed_all(network, torch.cat(views), batch_size=batch_size, precision=precision, channels_last=channels_last)
        parts.append(e.view(len(views), x.shape[0], -1).mean(0))
    if not parts:
        return torch.zeros(0, network.embedding_dim)
    total = torch.cat(parts)
    return torch.nn.functional.normalize(total, dim=1) if network.normalize else total


def pair_distances_of_embeddings(
    network: SiameseNetwork, embeddings: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, chunk: int = 65536
) -> torch.Tensor:
    """The network's distance (its head's, if any) for index pairs of an embedded set."""
    with torch.no_grad():
        parts = [
            network.embedding_distance(embeddings[a[s]], embeddings[b[s]]).float() for s in _chunks(a.numel(), chunk)
        ]
    return torch.cat(parts) if parts else embeddings.new_zeros(0)
