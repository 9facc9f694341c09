"""Batched inference helpers: embed a whole set, compare pairs of inputs."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from .data.images import to_float
from .input_spec import TTA_MODES
from .matryoshka import prefix
from .network import SiameseNetwork

__all__ = ["embed_all", "pair_distances_of_embeddings", "autocast_context", "network_pairwise"]


def autocast_context(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``precision="bf16"``, nothing for ``"fp32"``.

    Args:
        precision: ``"bf16"`` or ``"fp32"`` (any other value also gives no autocast).
        device: the device (or its type) whose operations are autocast.

    Returns:
        A context manager: ``torch.autocast`` for bf16, else ``contextlib.nullcontext()``.
    """
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
    tta: str | None = "spec",
    dim: int | None = None,
) -> torch.Tensor:
    """Embed a whole set in eval mode, in batches. uint8 images are scaled to [0, 1].

    Args:
        network: the network whose :meth:`~siamkit.network.SiameseNetwork.embed` is used
            (put in eval mode for the call).
        inputs: the whole set; uint8 images are scaled to [0, 1], other dtypes cast to
            float32.
        batch_size: rows per forward pass.
        precision: ``"fp32"``, or ``"bf16"`` for bfloat16 autocast (the result is
            float32 either way).
        channels_last: give 4-D batches the channels-last memory format.
        tta: test-time augmentation for images: the mean embedding over views of each
            image (re-normalised when the network normalises). ``"shift"``: the image and
            its four 1-pixel shifts (edges replicated); ``"flip"``: the image and its
            mirror image (faces); ``"shift+flip"``: both; None: the image only. Measured
            on Omniglot (docs/benchmarks.md): ``"shift"`` adds about 1 point of 20-way
            accuracy for 5x the embedding time. ``"spec"`` (the default): the model's own,
            ``network.input_spec.tta`` (what its recipe says; None for models saved
            before input recipes), so every embedding made for a user applies it.
        dim: the embedding size (a Matryoshka prefix, :meth:`SiameseNetwork.at_dim`);
            None: the network's own.

    Shapes: (N, ...) -> (N, D) float32 (D = ``dim`` when given). The network's train/eval mode is restored.

    Returns:
        The embeddings, in input order, on the network's device and without gradients
        (an empty set gives a (0, D) CPU tensor).

    Raises:
        ValueError: an unknown ``tta``, or ``tta`` on inputs that are not (N, C, H, W).
        EmbeddingSizeError: a ``dim`` the model does not take.
    """
    if dim is not None:
        network = network.at_dim(dim)
    if getattr(network, "dim", None) is not None:  # a prefix is always the full embedding's
        full = embed_all(network.at_dim(network.full_dim), inputs, batch_size=batch_size, precision=precision,
                         channels_last=channels_last, tta=tta)
        return prefix(full, network.dim, normalize=network.normalize)
    if tta == "spec":
        tta = getattr(getattr(network, "input_spec", None), "tta", None)
    if tta is not None and tta != "none":
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


_TTA = TTA_MODES


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
        e = embed_all(network, torch.cat(views), batch_size=batch_size, precision=precision, channels_last=channels_last, tta=None)
        parts.append(e.view(len(views), x.shape[0], -1).mean(0))
    if not parts:
        return torch.zeros(0, network.embedding_dim)
    total = torch.cat(parts)
    return torch.nn.functional.normalize(total, dim=1) if network.normalize else total


def pair_distances_of_embeddings(
    network: SiameseNetwork, embeddings: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, chunk: int = 65536
) -> torch.Tensor:
    """The network's distance (its head's, if any) for index pairs of an embedded set.

    Args:
        network: a :class:`~siamkit.network.SiameseNetwork` (its
            :meth:`~siamkit.network.SiameseNetwork.embedding_distance`).
        embeddings: the embedded set.
        a: row index of each pair's first side.
        b: row index of each pair's second side.
        chunk: pairs compared per call (bounded memory).

    Shapes:
        embeddings (N, D), a (P,), b (P,) -> (P,).

    Returns:
        The distances (lower = closer; a pair head's ``-logit``), float32, no gradient.
    """
    with torch.no_grad():
        parts = [
            network.embedding_distance(embeddings[a[s]], embeddings[b[s]]).float() for s in _chunks(a.numel(), chunk)
        ]
    return torch.cat(parts) if parts else embeddings.new_zeros(0)


def network_pairwise(network: Any, queries: torch.Tensor, vectors: torch.Tensor, *, chunk_elems: int = 1 << 24) -> torch.Tensor:
    """The network's distance (lower = closer; a pair head's ``-logit``) of every query
    embedding to every vector: the one "queries against many embeddings" used by the
    gallery, the anomaly detector, evaluation and fine-tuning.

    Args:
        network: a :class:`~siamkit.network.SiameseNetwork` (its distance, or its pair head).
        queries: query embeddings.
        vectors: the embeddings to compare with.
        chunk_elems: about this many distances are computed at once (bounded memory).

    Shapes:
        queries (Q, D), vectors (N, D) -> (Q, N).

    Returns:
        The distances, no gradient.
    """
    q, n = queries.shape[0], vectors.shape[0]
    if q == 0 or n == 0:
        return vectors.new_zeros(q, n)
    with torch.no_grad():
        if network.pair_head is None:
            rows = max(1, chunk_elems // max(1, n))
            return torch.cat([network.distance.pairwise(queries[i : i + rows], vectors) for i in range(0, q, rows)])
        out = vectors.new_empty(q, n)
        step = max(1, chunk_elems // max(1, vectors.shape[1]))
        for i in range(q):
            for j in range(0, n, step):
                v = vectors[j : j + step]
                out[i, j : j + step] = network.embedding_distance(queries[i : i + 1].expand(v.shape[0], -1), v)
        return out
