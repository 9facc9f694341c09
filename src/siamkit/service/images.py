"""Upload validation and decoding for the HTTP service: bytes in, uint8 (C, H, W) out.

Nothing here touches the file system: an upload is a ``bytes`` object, decoded from
memory. The checks, in order (each failure is an :class:`UploadError` carrying an HTTP
status and an error code, never an exception from deep inside PIL):

1. size: at most ``Limits.max_image_bytes`` (413 ``image_too_large``); empty -> 400.
2. format by *magic bytes* (the first bytes of the data, not the file name or the
   declared content type): PNG, JPEG, GIF, BMP or WebP (415 ``unsupported_image_type``;
   a PDF renamed ``.png`` stops here).
3. the header, read without decoding pixels: width x height at most
   ``Limits.max_pixels`` (413 ``image_too_many_pixels``: decompression bombs stop here,
   before a single pixel is decoded).
4. ``Image.verify()`` and a full ``load()`` inside one ``try`` (400 ``invalid_image``:
   truncated or corrupt files), restricted to the sniffed format's decoder.
5. conversion to the model's input spec exactly as :func:`siamkit.data.images.load_image`
   does it (grey ``L`` or ``RGB``, bilinear resize), so a pair sent to the service gets the
   same distance as the same files given to :class:`~siamkit.verify.Verifier`.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.images import MAX_PIXELS
from ..network import InputSpec

__all__ = ["Limits", "UploadError", "sniff_image_format", "decode_image", "ALLOWED_FORMATS"]

#: sniffed format -> the PIL plugin allowed to decode it
ALLOWED_FORMATS = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}


@dataclass(frozen=True)
class Limits:
    """Every limit of the service (all in bytes / pixels / counts).

    Attributes:
        max_request_bytes: a whole request body (Content-Length and the streamed body).
        max_json_bytes: a JSON body (``POST /v1/feedback``, images in base64 included).
        max_image_bytes: one uploaded image.
        max_pixels: width x height of one image, read from its header before decoding.
        max_batch: images in one enrolment / add-samples request.
        max_k: candidates ``identify`` may return.
        max_text: characters in a free-text field (note, reporter, metadata JSON).
    """

    max_request_bytes: int = 16 * 1024 * 1024
    max_json_bytes: int = 4 * 1024 * 1024
    max_image_bytes: int = 4 * 1024 * 1024
    max_pixels: int = 16_000_000
    max_batch: int = 16
    max_k: int = 100
    max_text: int = 2000

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_json_bytes", "max_image_bytes", "max_pixels", "max_batch", "max_k", "max_text"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {v!r}")
        if self.max_pixels > MAX_PIXELS:
            raise ValueError(f"Limits.max_pixels must be at most {MAX_PIXELS}, got {self.max_pixels}")


class UploadError(Exception):
    """A bad upload: ``status`` (HTTP), ``code`` (machine-readable) and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
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


def decode_image(data: bytes, spec: InputSpec, limits: Limits, *, what: str = "image") -> torch.Tensor:
    """Validate and decode one uploaded image to uint8 (C, H, W) in the model's spec.

    Raises:
        UploadError: with status 400 / 413 / 415 and a code (see the module doc).
    """
    if not isinstance(data, (bytes, bytearray)):
        raise UploadError(400, "invalid_image", f"{what}: expected file bytes")
    if len(data) == 0:
        raise UploadError(400, "empty_image", f"{what} is empty (0 bytes)")
    if len(data) > limits.max_image_bytes:
        raise UploadError(413, "image_too_large", f"{what} is {len(data)} bytes; the limit is {limits.max_image_bytes}")
    fmt = sniff_image_format(bytes(data[:32]))
    if fmt is None:
        raise UploadError(
            415, "unsupported_image_type",
            f"{what} is {_describe(bytes(data[:8]))}; send PNG, JPEG, GIF, BMP or WebP (checked from the content, not the name)",
        )
    plugin = ALLOWED_FORMATS[fmt]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[plugin]) as img:  # header only
                w, h = img.size
                if w < 1 or h < 1:
                    raise UploadError(400, "invalid_image", f"{what} has an empty size {w}x{h}")
                if w * h > limits.max_pixels:
                    raise UploadError(
                        413, "image_too_many_pixels",
                        f"{what} is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}",
                    )
                img.verify()  # structure and checksums, no pixels
            with Image.open(io.BytesIO(data), formats=[plugin]) as img:
                img.load()  # every pixel: truncated data fails here
                mode = "L" if spec.channels == 1 else "RGB"
                if img.mode != mode:
                    img = img.convert(mode)
                if (img.height, img.width) != (spec.height, spec.width):
                    img = img.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(413, "image_too_many_pixels", f"{what} is too large to decode ({e})") from None
    except MemoryError:
        raise UploadError(413, "image_too_large", f"{what} needs too much memory to decode") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types on hostile input
        raise UploadError(400, "invalid_image", f"{what} is not a readable {fmt.upper()} image ({type(e).__name__})") from None
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    if arr.shape != (spec.channels, spec.height, spec.width):  # pragma: no cover - defensive
        raise UploadError(400, "invalid_image", f"{what} decoded to shape {arr.shape}")
    return torch.from_numpy(np.array(arr, copy=True, order="C"))
