"""Reading siamkit's versioned JSON files (model config, calibration, detector, ONNX
export...): the one place that checks ``format`` and ``format_version``.

Needs only the standard library (the torch-free ONNX runtime reads its manifest with it);
:mod:`siamkit.io` re-exports both functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ModelFileError

__all__ = ["read_versioned_json", "check_versioned"]


def read_versioned_json(path: str | Path, *, fmt: str, version: int, what: str) -> dict[str, Any]:
    """Read one of siamkit's versioned JSON files (model config, calibration, detector...).

    Every such file is a JSON object with ``"format"``, ``"format_version"`` and the
    ``"siamkit_version"`` that wrote it; this is the one place that checks them.

    Args:
        path: the JSON file.
        fmt: the expected ``"format"`` value.
        version: the format version this siamkit reads.
        what: how the messages name the file's kind (e.g. ``"calibration"``).

    Returns:
        The parsed object.

    Raises:
        ModelFileError: missing, not JSON, another format, or another format version
            (the message names the file and both versions).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path} is not valid JSON ({e})") from None
    return check_versioned(data, fmt=fmt, version=version, what=what, where=str(path))


def check_versioned(data: Any, *, fmt: str, version: int, what: str, where: str | None = None) -> dict[str, Any]:
    """Check the ``format`` / ``format_version`` header of parsed versioned JSON (the part
    of :func:`read_versioned_json` for data that did not come from a file).

    Args:
        data: the parsed JSON.
        fmt: the expected ``"format"`` value.
        version: the format version this siamkit reads.
        what: how the messages name the kind (e.g. ``"calibration"``).
        where: names the source in messages (a path), or None.

    Returns:
        ``data``, checked.

    Raises:
        ModelFileError: not an object of that format, or another format version.
    """
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ModelFileError(f"{where + ' is ' if where else ''}not a siamkit {what} (format is not {fmt!r})")
    found = data.get("format_version")
    if found != version:
        raise ModelFileError(
            f"{where or 'it'} was written in {what} format {found!r} (siamkit {data.get('siamkit_version')}): "
            f"format version {found!r} is not readable; this siamkit ({__version__}) reads version {version}"
        )
    return data
