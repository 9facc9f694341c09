"""Reading what a request uploads: multipart image files (one or a batch), base64 images
in JSON bodies, and the ``metadata`` form field, each under the service's limits.

The bytes are only read and size-checked here; decoding is
:meth:`~siamkit.service.deps.ServiceState.decode` (in a worker thread).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Optional

from fastapi import UploadFile

from ..errors import SiamkitError
from ..gallery.store_schema import check_metadata
from .errors import ApiError
from .images import Limits

__all__ = ["b64_image", "parse_metadata", "read_batch", "read_upload"]


def _too_large(what: str, limits: Limits) -> ApiError:
    return ApiError(413, "image_too_large", f"{what} is larger than {limits.max_image_bytes} bytes")


async def read_upload(f: UploadFile, limits: Limits, what: str) -> bytes:
    """The bytes of one uploaded file, at most ``limits.max_image_bytes`` (else 413).

    Args:
        f: the uploaded file.
        limits: the service's limits.
        what: names the image in messages.

    Returns:
        The file's bytes.
    """
    data = await f.read(limits.max_image_bytes + 1)
    if len(data) > limits.max_image_bytes:
        raise _too_large(what, limits)
    return data


async def read_batch(images: list[UploadFile], limits: Limits) -> list[bytes]:
    """The bytes of 1..``limits.max_batch`` uploaded images (``images[i]`` in messages).

    Args:
        images: the uploaded files.
        limits: the service's limits.

    Returns:
        Each file's bytes.
    """
    if len(images) == 0:
        raise ApiError(422, "invalid_request", "send at least one image")
    if len(images) > limits.max_batch:
        raise ApiError(413, "batch_too_large", f"{len(images)} images; the limit is {limits.max_batch} per request")
    return [await read_upload(f, limits, f"images[{i}]") for i, f in enumerate(images)]


def b64_image(text: str, limits: Limits, what: str) -> bytes:
    """The bytes of a base64 (standard alphabet) image, at most ``limits.max_image_bytes``.

    Args:
        text: the base64 text.
        limits: the service's limits.
        what: names the image in messages.

    Returns:
        The decoded bytes (400 ``invalid_base64`` when they are not base64).
    """
    if len(text) > (limits.max_image_bytes * 4) // 3 + 8:
        raise _too_large(what, limits)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_base64", f"{what} is not valid base64") from None


def parse_metadata(text: Optional[str], limits: Limits) -> Optional[dict[str, Any]]:
    """The ``metadata`` form field: a JSON object of at most ``limits.max_text`` characters.

    Args:
        text: the field (None or empty: no metadata).
        limits: the service's limits.

    Returns:
        The object, or None.
    """
    if text is None or text == "":
        return None
    if len(text) > limits.max_text:
        raise ApiError(413, "metadata_too_large", f"metadata is longer than {limits.max_text} characters")
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ApiError(422, "invalid_metadata", "metadata must be a JSON object") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_metadata", "metadata must be a JSON object")
    try:
        return check_metadata(value)
    except SiamkitError as e:
        raise ApiError(422, "invalid_metadata", str(e)[:300]) from None
