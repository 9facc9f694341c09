"""Decode untrusted image bytes to the model's input: bytes in, uint8 (C, H, W) out.

Used wherever siamkit meets image bytes it did not write: HTTP uploads, stored feedback
and gallery samples. Nothing here touches the file system. The checks, in order (each
failure is an :class:`ImageDecodeError` with a machine-readable ``code`` and a ``kind``,
never an exception from deep inside PIL):

1. size: at most ``max_bytes`` (``image_too_large``); empty -> ``empty_image``.
2. format by *magic bytes* (the first bytes of the data, not the file name or the
   declared content type): PNG, JPEG, GIF, BMP or WebP (``unsupported_image_type``;
   a PDF renamed ``.png`` stops here).
3. the header, read without decoding pixels: width x height at most ``max_pixels``
   (``image_too_many_pixels``: decompression bombs stop here, before a single pixel is
   decoded).
4. ``Image.verify()`` and a full ``load()`` inside one ``try`` (``invalid_image``:
   truncated or corrupt files), restricted to the sniffed format's decoder.
5. preparation for the model by the one prepare function
   (:func:`siamkit.data.prepare.pil_to_array`: grey ``L`` or ``RGB``, the spec's
   preprocessing steps, bilinear resize), so bytes get the same embedding as the same
   file read from disk.

Torch-free at import (:func:`decode_pil` is used by the torch-free prepare function).
"""

from __future__ import annotations

import io
import warnings

from typing import TYPE_CHECKING

from PIL import Image

from ..errors import DataError
from .prepare import MAX_PIXELS, pil_to_array

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..input_spec import InputSpec

__all__ = ["ImageDecodeError", "sniff_image_format", "decode_pil", "decode_image_bytes", "ALLOWED_FORMATS", "DEFAULT_MAX_IMAGE_BYTES"]

#: sniffed format -> the PIL plugin allowed to decode it
ALLOWED_FORMATS = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}
DEFAULT_MAX_IMAGE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_PIXELS = 16_000_000


class ImageDecodeError(DataError):
    """Image bytes that cannot be used.

    Attributes:
        code: machine-readable reason (``empty_image``, ``image_too_large``,
            ``unsupported_image_type``, ``image_too_many_pixels``, ``invalid_image``).
        kind: ``"invalid"`` (bad content), ``"too_large"`` or ``"unsupported"``: what an
            edge maps to a status (400 / 413 / 415 over HTTP).
        message: the human-readable message.
    """

    def __init__(self, kind: str, code: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message


def sniff_image_format(data: bytes) -> str | None:
    """The image format from the data's magic bytes, or None (not an allowed image)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM") and len(data) >= 14:
        return "bmp"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _describe(data: bytes) -> str:
    if data.startswith(b"%PDF"):
        return "a PDF document"
    if data[:1] in (b"{", b"["):
        return "JSON or text"
    if data.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    return "not a PNG, JPEG, GIF, BMP or WebP image"


def decode_image_bytes(
    data: bytes,
    spec: InputSpec,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    what: str = "image",
) -> torch.Tensor:
    """Validate and decode one image's bytes (:func:`decode_pil`), then prepare it for the
    model (:func:`siamkit.data.prepare.pil_to_array`: channels, the spec's preprocessing
    steps, resize).

    Args:
        data: the encoded image (PNG, JPEG, GIF, BMP or WebP).
        spec: the model's input spec (an image spec: channels, height, width).
        max_bytes: largest accepted encoded size.
        max_pixels: largest accepted width x height, read from the header before decoding.
        what: names the image in messages.

    Shapes:
        -> (C, H, W) uint8, with C, H, W from ``spec``.

    Returns:
        The decoded image.

    Raises:
        ImageDecodeError: with a kind and a code (see the module doc).
    """
    import torch

    img = decode_pil(data, max_bytes=max_bytes, max_pixels=max_pixels, what=what)
    try:
        arr = pil_to_array(img, size=(int(spec.height), int(spec.width)), channels=int(spec.channels), steps=spec.preprocess)  # type: ignore[arg-type]
    except MemoryError:
        raise ImageDecodeError("too_large", "image_too_large", f"{what} needs too much memory to prepare") from None
    except Exception as e:  # noqa: BLE001 - a preprocessing step on hostile pixels
        raise ImageDecodeError("invalid", "invalid_image", f"{what} could not be prepared for the model ({type(e).__name__}: {e})") from None
    if arr.shape != (spec.channels, spec.height, spec.width):  # pragma: no cover - defensive
        raise ImageDecodeError("invalid", "invalid_image", f"{what} decoded to shape {arr.shape}")
    return torch.from_numpy(arr)


def decode_pil(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    what: str = "image",
) -> Image.Image:
    """Validate one image's bytes (checks 1-4 of the module doc) and decode every pixel.

    Args:
        data: the encoded image (PNG, JPEG, GIF, BMP or WebP).
        max_bytes: largest accepted encoded size.
        max_pixels: largest accepted width x height, read from the header before decoding.
        what: names the image in messages.

    Returns:
        The loaded PIL image (its own mode; :func:`~siamkit.data.prepare.pil_to_array`
        converts it).

    Raises:
        ImageDecodeError: with a kind and a code (see the module doc).
    """
    max_pixels = min(int(max_pixels), MAX_PIXELS)
    if not isinstance(data, (bytes, bytearray)):
        raise ImageDecodeError("invalid", "invalid_image", f"{what}: expected file bytes")
    if len(data) == 0:
        raise ImageDecodeError("invalid", "empty_image", f"{what} is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageDecodeError("too_large", "image_too_large", f"{what} is {len(data)} bytes; the limit is {max_bytes}")
    fmt = sniff_image_format(bytes(data[:32]))
    if fmt is None:
        raise ImageDecodeError(
            "unsupported", "unsupported_image_type",
            f"{what} is {_describe(bytes(data[:8]))}; send PNG, JPEG, GIF, BMP or WebP (checked from the content, not the name)",
        )
    plugin = ALLOWED_FORMATS[fmt]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[plugin]) as img:  # header only
                w, h = img.size
                if w < 1 or h < 1:
                    raise ImageDecodeError("invalid", "invalid_image", f"{what} has an empty size {w}x{h}")
                if w * h > max_pixels:
                    raise ImageDecodeError(
                        "too_large", "image_too_many_pixels",
                        f"{what} is {w}x{h} = {w * h} pixels; the limit is {max_pixels}",
                    )
                img.verify()  # structure and checksums, no pixels
            img = Image.open(io.BytesIO(data), formats=[plugin])
            img.load()  # every pixel: truncated data fails here
            return img
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError("too_large", "image_too_many_pixels", f"{what} is too large to decode ({e})") from None
    except MemoryError:
        raise ImageDecodeError("too_large", "image_too_large", f"{what} needs too much memory to decode") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types on hostile input
        raise ImageDecodeError("invalid", "invalid_image", f"{what} is not a readable {fmt.upper()} image ({type(e).__name__})") from None
