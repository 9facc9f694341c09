"""The one way a raw image becomes a network's input (numpy + PIL; torch only for the
tensor forms, imported when they are called).

decode (a path, validated bytes or a PIL image) -> channels (grey ``L`` or ``RGB``) ->
the spec's preprocessing steps (:mod:`siamkit.data.preprocess`) -> bilinear resize to the
spec's size -> uint8 (C, H, W). Every path that embeds raw inputs calls it: training data
(:meth:`~siamkit.data.images.ImageFolderDataset.from_folder` through
:func:`~siamkit.data.images.load_image`), ``compare`` / :class:`~siamkit.verify.Verifier`,
``evaluate`` and ``calibrate``, the gallery, the service, the anomaly CLI, feedback pairs,
fine-tuning and the torch-free ONNX runtime. Bytes from outside go through
:func:`siamkit.data.decode.decode_pil` (byte and pixel caps, magic bytes) first.

Example:
    >>> from siamkit.data.prepare import prepare_image     # doctest: +SKIP
    >>> x = prepare_image("scan.png", network.input_spec)   # doctest: +SKIP
    >>> x.shape                                              # doctest: +SKIP
    torch.Size([1, 75, 110])
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .preprocess import apply_steps

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..input_spec import InputSpec

__all__ = ["MAX_PIXELS", "image_channels", "pil_to_array", "decode_path", "prepare_array", "prepare_image", "prepare_images"]

#: refuse images larger than this many pixels before decoding (decompression bombs)
MAX_PIXELS = 64_000_000


def _palette_is_grey(img: Image.Image) -> bool:
    pal = img.getpalette()
    if not pal:
        return True
    arr = np.asarray(pal[: 3 * 256]).reshape(-1, 3)
    return bool((arr[:, 0] == arr[:, 1]).all() and (arr[:, 1] == arr[:, 2]).all())


def image_channels(img: Image.Image) -> int:
    """1 for a grey image (modes 1, L, I, F, LA, grey palettes), else 3."""
    return 1 if img.mode in ("1", "L", "I", "I;16", "F", "LA") or (img.mode == "P" and _palette_is_grey(img)) else 3


def pil_to_array(
    img: Image.Image, *, size: tuple[int, int] | None, channels: int | None, steps: Sequence[Any] = ()
) -> np.ndarray:
    """A decoded PIL image -> uint8 (C, H, W): channels, preprocessing steps, resize.

    Args:
        img: the decoded image.
        size: (height, width) of the output (bilinear, antialiased); None keeps the size
            the steps leave.
        channels: 1 (grey) or 3 (RGB); None = the image's own.
        steps: preprocessing steps (PIL -> PIL), applied in order after the channel
            conversion and before the resize.

    Shapes:
        -> (C, H, W) uint8.

    Returns:
        The array.

    Raises:
        DataError: a channel count other than 1 or 3.
    """
    want = channels or image_channels(img)
    if want not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {want}")
    mode = "L" if want == 1 else "RGB"
    img = img.convert(mode)
    if steps:
        img = apply_steps(img, steps)
        if img.mode != mode:
            img = img.convert(mode)
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.array(arr, copy=True, order="C")


def decode_path(
    path: str | Path, *, size: tuple[int, int] | None, channels: int | None, steps: Sequence[Any] = ()
) -> np.ndarray:
    """Decode one image file and prepare it (:func:`pil_to_array`), the pixel cap checked
    on the header before any pixel is decoded.

    Args:
        path: the image file.
        size: (height, width) to resize to; None keeps it.
        channels: 1 or 3; None keeps the file's own.
        steps: preprocessing steps.

    Shapes:
        -> (C, H, W) uint8.

    Returns:
        The array.

    Raises:
        DataError: the file is missing, not an image, truncated or too large.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} does not exist")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check fires inside Image.open, before ours can read the
            # header size: both its warning and its error become a DataError below
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise DataError(f"image {path} is {img.width}x{img.height}, larger than {MAX_PIXELS} pixels")
                return pil_to_array(img, size=size, channels=channels, steps=steps)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"image {path} is larger than {MAX_PIXELS} pixels ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot read image {path}: {e}") from None


def prepare_array(source: Any, spec: InputSpec, *, what: str = "image") -> np.ndarray:
    """THE preparation of one raw image for a model: decode, channels, the spec's
    preprocessing steps, resize (torch-free).

    Args:
        source: a path, the encoded bytes (validated by
            :func:`siamkit.data.decode.decode_pil` with its default caps), or a PIL image.
        spec: the model's input spec (an image spec).
        what: names the image in messages about bytes.

    Shapes:
        -> (C, H, W) uint8 with C, H, W from ``spec``.

    Returns:
        The network's input for this image, before scaling to [0, 1].

    Raises:
        DataError: the spec is not an image spec, or the image cannot be read (an
            :class:`~siamkit.data.decode.ImageDecodeError` for bytes).
    """
    spec.require_image()
    size, channels = spec.image_size, int(spec.channels)  # type: ignore[arg-type]
    if isinstance(source, (bytes, bytearray, memoryview)):
        from .decode import decode_pil

        img = decode_pil(bytes(source), what=what)
        return pil_to_array(img, size=size, channels=channels, steps=spec.preprocess)
    if isinstance(source, Image.Image):
        return pil_to_array(source, size=size, channels=channels, steps=spec.preprocess)
    if isinstance(source, (str, Path)):
        return decode_path(source, size=size, channels=channels, steps=spec.preprocess)
    raise DataError(f"{what}: expected an image path, bytes or a PIL image, got {type(source).__name__}")


def prepare_image(source: Any, spec: InputSpec, *, what: str = "image") -> torch.Tensor:
    """:func:`prepare_array` as a torch tensor.

    Args:
        source: a path, encoded bytes or a PIL image.
        spec: the model's input spec.
        what: names the image in messages.

    Shapes:
        -> (C, H, W) uint8.

    Returns:
        The network's input (uint8; :func:`siamkit.data.images.to_float` scales it).

    Raises:
        DataError: see :func:`prepare_array`.
    """
    import torch

    return torch.from_numpy(prepare_array(source, spec, what=what))


def prepare_images(sources: Sequence[Any], spec: InputSpec, *, what: str = "image") -> torch.Tensor:
    """The batch form of :func:`prepare_image`.

    Args:
        sources: paths, encoded bytes or PIL images.
        spec: the model's input spec.
        what: names the images in messages.

    Shapes:
        -> (N, C, H, W) uint8.

    Returns:
        The batch (an empty list gives (0, C, H, W)).

    Raises:
        DataError: see :func:`prepare_array`.
    """
    import torch

    spec.require_image()
    if not sources:
        return torch.zeros((0, int(spec.channels), *spec.image_size), dtype=torch.uint8)  # type: ignore[arg-type]
    return torch.from_numpy(np.stack([prepare_array(s, spec, what=what) for s in sources]))
