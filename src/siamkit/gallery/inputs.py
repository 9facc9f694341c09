"""From what callers pass to what the model takes, and back from what the gallery kept.

Texts, for a text model, are handled by :mod:`siamkit.text.inputs` (token ids, kept as UTF-8).

:func:`prepare_inputs` turns image paths (one or a list), arrays or tensors (one sample
or a batch) into the network's input batch and the :class:`StoredSample` kept of each
(the file's bytes, or the raw array), so that :func:`embed_stored` can embed them again
for another model (``reembed``). :func:`embed_batch` embeds, refusing NaN embeddings.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.decode import decode_image_bytes, sniff_image_format
from ..data.images import MAX_PIXELS
from ..errors import DataError, GalleryError
from ..inference import embed_all
from ..text.inputs import embed_stored_texts, embed_token_ids, prepare_texts, text_input_of
from ..verify import load_image_for
from .store_schema import StoredSample

__all__ = ["shape_text", "is_pathlike", "prepare_inputs", "embed_batch", "decode_stored", "embed_stored"]


def shape_text(shape: Sequence[int]) -> str:
    """A shape as messages write it: ``(1, 24, 24)``."""
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def is_pathlike(x: Any) -> bool:
    """Whether ``x`` names a file (a str or an os.PathLike)."""
    return isinstance(x, (str, os.PathLike))


def prepare_inputs(inputs: Any, network: Any, *, what: str = "inputs") -> tuple[torch.Tensor, list[StoredSample]]:
    """Inputs -> (batch for the network, what to store of each sample).

    Args:
        inputs: image paths (one or a list), or a uint8 / float array or tensor
            (N, *shape), one sample (*shape), or a list of samples.
        network: the model (its input spec).
        what: names the inputs in messages.

    Returns:
        (the batch, one :class:`StoredSample` per sample).

    Shapes:
        -> (N, *input_spec.shape).

    Raises:
        GalleryError: empty, or neither paths nor arrays.
        DataError: unreadable images, wrong shapes, dtypes or NaN values.
    """
    texts = prepare_texts(inputs, network, what=what)  # a text model: texts -> token ids
    if texts is not None:
        return texts
    if is_pathlike(inputs):
        inputs = [inputs]
    if isinstance(inputs, (list, tuple)):
        if len(inputs) == 0:
            raise GalleryError(f"{what}: the list of samples is empty")
        if all(is_pathlike(p) for p in inputs):
            return _from_paths(inputs, network)
        inputs = _stack_arrays(inputs, what)
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(np.ascontiguousarray(inputs))
    if not isinstance(inputs, torch.Tensor):
        raise GalleryError(f"{what} must be image file paths or a uint8 array (N, C, H, W), got {type(inputs).__name__}")
    return _with_stored(_as_batch(inputs.detach().cpu(), network.input_spec.shape, what), what)


def _from_paths(paths: Sequence[Any], network: Any) -> tuple[torch.Tensor, list[StoredSample]]:
    tensors, stored = [], []
    for p in paths:
        p = Path(p)
        tensors.append(load_image_for(network, p))
        stored.append(StoredSample(f"file:{p.suffix.lower() or '.img'}", p.read_bytes()))
    return torch.stack(tensors), stored


def _stack_arrays(items: Sequence[Any], what: str) -> torch.Tensor:
    if not all(isinstance(x, (torch.Tensor, np.ndarray)) for x in items):
        kinds = sorted({type(x).__name__ for x in items})
        raise GalleryError(f"{what} must be image paths or arrays, not a mix of {kinds}")
    try:
        return torch.stack([torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x for x in items])
    except RuntimeError as e:
        raise DataError(f"{what}: the samples differ in shape ({e})") from None


def _as_batch(x: torch.Tensor, spec_shape: tuple[int, ...], what: str) -> torch.Tensor:
    if spec_shape and x.ndim == len(spec_shape):
        x = x[None]
    if x.ndim < 2:
        raise DataError(f"{what}: expected a batch (N, ...) of samples, got shape {shape_text(x.shape)}")
    if x.shape[0] == 0:
        raise GalleryError(f"{what}: no samples (an empty batch)")
    if spec_shape and tuple(x.shape[1:]) != spec_shape:
        raise DataError(
            f"{what}: samples of shape {shape_text(x.shape[1:])}, but the model takes {shape_text(spec_shape)}"
            + (" (channels, height, width)" if len(spec_shape) == 3 else "")
        )
    return x


def _with_stored(x: torch.Tensor, what: str) -> tuple[torch.Tensor, list[StoredSample]]:
    if x.dtype == torch.uint8:
        x = x.contiguous()
        arr = x.numpy()
        fmt = "uint8"
    elif x.is_floating_point():
        x = x.float().contiguous()
        if not torch.isfinite(x).all():
            raise DataError(f"{what} contain NaN or infinite values")
        arr = x.numpy().astype("<f4", copy=False)
        fmt = "float32"
    else:
        raise DataError(f"{what} must be uint8 images (0-255) or floats, got dtype {x.dtype}")
    return x, [StoredSample(fmt, arr[i].tobytes(), tuple(arr.shape[1:])) for i in range(arr.shape[0])]


def embed_batch(network: Any, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Embed a batch of inputs.

    Args:
        network: the model.
        x: its inputs.
        batch_size: inputs per forward pass.

    Returns:
        float32 embeddings on the CPU.

    Shapes:
        x (N, *input_spec.shape) -> (N, embedding_dim).

    Raises:
        DataError: the model produced NaN or infinite embeddings.
    """
    if text_input_of(network) is not None:
        return embed_token_ids(network, x, batch_size)
    e = embed_all(network, x, batch_size=batch_size).detach().cpu().float()
    if not torch.isfinite(e).all():
        raise DataError("the model produced NaN or infinite embeddings for these inputs")
    return e


def decode_stored(sample: StoredSample, sample_id: int, network: Any) -> torch.Tensor:
    """A kept input as ``network``'s input (image files are decoded to its size).

    Args:
        sample: the kept input.
        sample_id: its id (for messages).
        network: the model it is for.

    Returns:
        The input tensor (uint8 image, or the raw array).

    Shapes:
        -> input_spec.shape.

    Raises:
        GalleryError: the image cannot be decoded for this model, or a raw array of
            another shape.
    """
    if sample.format.startswith("file:"):
        try:
            return _decode_file(sample, network)
        except DataError as e:
            raise GalleryError(f"stored sample {sample_id} cannot be decoded for the new model: {e}") from None
    arr = sample.array()
    spec_shape = network.input_spec.shape
    if spec_shape and tuple(arr.shape) != spec_shape:
        raise GalleryError(
            f"stored sample {sample_id} is a {shape_text(arr.shape)} array but the new model takes "
            f"{shape_text(spec_shape)}; samples enrolled from image files can be resized, raw arrays cannot"
        )
    return torch.from_numpy(arr.copy())


def _decode_file(sample: StoredSample, network: Any) -> torch.Tensor:
    """Image-file bytes -> uint8 (C, H, W), exactly as enrolment read the file."""
    spec = network.input_spec
    if spec.is_image and spec.channels in (1, 3) and sniff_image_format(sample.data[:32]) is not None:
        # the enrolled file's own bytes: no size limit beyond load_image's pixel cap
        return decode_image_bytes(sample.data, spec, max_bytes=len(sample.data), max_pixels=MAX_PIXELS, what="the image")
    # formats the byte decoder does not take (PGM, TIFF, ...): through a scratch file, as enrolled
    with tempfile.TemporaryDirectory(prefix="siamkit-sample-") as folder:
        scratch = Path(folder) / f"sample{sample.format[5:] or '.img'}"
        scratch.write_bytes(sample.data)
        return load_image_for(network, scratch)


def embed_stored(store: Any, network: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every kept input of a gallery, embedded with ``network`` (for re-embedding).

    Args:
        store: the :class:`~siamkit.gallery.store.GalleryStore`.
        network: the new model.
        batch_size: samples read and embedded at a time.

    Returns:
        (sample ids int64 (N,), embeddings float32 (N, embedding_dim)).

    Raises:
        GalleryError: some samples were enrolled without keeping their input, or one
            does not fit the new model.
    """
    if text_input_of(network) is not None:
        return embed_stored_texts(store, network, batch_size)
    ids: list[int] = []
    parts: list[torch.Tensor] = []
    missing = 0
    for batch in store.iter_stored_samples(batch_size):
        xs = []
        for sid, s in batch:
            if s is None:
                missing += 1
                continue
            ids.append(sid)
            xs.append(decode_stored(s, sid, network))
        if xs:
            parts.append(embed_batch(network, torch.stack(xs), batch_size))
    if missing:
        raise GalleryError(
            f"cannot re-embed: {missing} sample(s) were enrolled without keeping their input "
            "(keep_inputs=False); re-enrol them from the original images"
        )
    emb = torch.cat(parts).numpy() if parts else np.zeros((0, network.embedding_dim), np.float32)
    return np.asarray(ids, dtype=np.int64), emb
