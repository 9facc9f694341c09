"""Upload limits and decoding for the HTTP service: bytes in, uint8 (C, H, W) out.

The decoding itself is the library's (:mod:`siamkit.data.decode`); this module holds the
service's :class:`Limits` and maps a decode failure to an :class:`UploadError` carrying an
HTTP status and an error code. The checks, in order:

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

from dataclasses import dataclass

import torch

from ..data.decode import ALLOWED_FORMATS, ImageDecodeError, decode_image_bytes, sniff_image_format
from ..data.images import MAX_PIXELS
from ..errors import SiamkitError
from ..network import InputSpec

__all__ = ["Limits", "UploadError", "sniff_image_format", "decode_image", "ALLOWED_FORMATS"]


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
                raise SiamkitError(f"Limits.{name} must be a positive integer, got {v!r}")
        if self.max_pixels > MAX_PIXELS:
            raise SiamkitError(f"Limits.max_pixels must be at most {MAX_PIXELS}, got {self.max_pixels}")


class UploadError(Exception):
    """A bad upload: ``status`` (HTTP), ``code`` (machine-readable) and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


_STATUS = {"invalid": 400, "too_large": 413, "unsupported": 415}


def decode_image(data: bytes, spec: InputSpec, limits: Limits, *, what: str = "image") -> torch.Tensor:
    """Validate and decode one uploaded image to uint8 (C, H, W) in the model's spec
    (:func:`siamkit.data.decode.decode_image_bytes` under the service's limits).

    Args:
        data: the uploaded bytes.
        spec: the model's input spec.
        limits: the service's limits (``max_image_bytes``, ``max_pixels``).
        what: names the image in messages.

    Returns:
        uint8 (C, H, W).

    Raises:
        UploadError: with status 400 / 413 / 415 and a code (see the module doc).
    """
    try:
        return decode_image_bytes(data, spec, max_bytes=limits.max_image_bytes, max_pixels=limits.max_pixels, what=what)
    except ImageDecodeError as e:
        raise UploadError(_STATUS[e.kind], e.code, e.message) from None
