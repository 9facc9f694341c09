"""Static int8 quantization of an image export's fp32 graph (onnxruntime, QDQ).

:func:`quantize_static_int8` runs onnxruntime's ``quant_pre_process`` (shape inference
and graph optimisation) on the fp32 graph, then ``quantize_static`` with
``QuantFormat.QDQ``, per-channel int8 weights (``QuantType.QInt8``), uint8 activations
(``QuantType.QUInt8``) and MinMax ranges from calibration images fed through the graph.
For convnets this is what makes int8 fast: onnxruntime fuses the QDQ pairs into QLinearConv
(the dynamic ``ConvInteger`` path is slower than fp32). See docs/benchmarks.md for figures.

Calibration images are read with the model's own input recipe
(:func:`siamkit.data.prepare.prepare_array`, the loader ``siamkit compare`` and
:meth:`OnnxVerifier.embed_files` use), so they see exactly what the deployed graph sees.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import IMAGE_EXTENSIONS
from ..errors import DataError
from ..input_spec import InputSpec
from .runtime import INPUT_NAME

__all__ = ["calibration_batch", "quantize_static_int8", "STATIC_METHOD", "MAX_CALIBRATION_IMAGES"]

STATIC_METHOD = "onnxruntime.quantize_static"
#: a folder with more images is subsampled evenly (sorted paths) to this many
MAX_CALIBRATION_IMAGES = 200
_BATCH = 16


def _folder_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"calibration data folder {folder} does not exist or is not a folder")
    paths = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not paths:
        raise DataError(f"calibration data folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def calibration_batch(source: Any, spec: InputSpec, *, max_images: int = MAX_CALIBRATION_IMAGES) -> np.ndarray:
    """The calibration inputs as the graph takes them: float32 (N, *shape) in [0, 1].

    Args:
        source: a folder of image files (searched recursively; each read with the
            model's input recipe), or an array (N, *shape): uint8, or float in [0, 1].
        spec: the model's input spec.
        max_images: at most this many images (evenly spaced over the sorted paths / rows).

    Returns:
        The batch.

    Raises:
        DataError: no such folder, a folder without images, an unreadable image, or an
            array of the wrong shape or empty.
    """
    shape = tuple(spec.shape)
    if isinstance(source, (str, Path)):
        folder = Path(source)
        paths = _folder_images(folder)
        if len(paths) > max_images:
            paths = [paths[i] for i in np.linspace(0, len(paths) - 1, max_images).round().astype(int)]
        from ..data.prepare import prepare_array

        try:
            x = np.stack([prepare_array(p, spec) for p in paths])
        except DataError as e:
            raise DataError(f"calibration data folder {folder}: {e}") from None
    else:
        x = np.asarray(source)
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or len(x) == 0:
            raise DataError(f"calibration array must be (N, {', '.join(map(str, shape))}) with N >= 1, "
                            f"got {tuple(x.shape)}")
        if len(x) > max_images:
            x = x[np.linspace(0, len(x) - 1, max_images).round().astype(int)]
    return x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a fixed batch."""

    def __init__(self, x: np.ndarray) -> None:
        self._chunks = iter([{INPUT_NAME: x[i:i + _BATCH]} for i in range(0, len(x), _BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._chunks, None)


def quantize_static_int8(fp32: bytes, calibration: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """Static QDQ int8 quantization of a serialized fp32 graph.

    Args:
        fp32: the fp32 graph (input ``input``, float32 in [0, 1]).
        calibration: float32 (N, *shape), from :func:`calibration_batch`.

    Returns:
        The int8 graph and the manifest's ``quantization`` entry.
    """
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("--quantize needs onnxruntime: pip install 'siamkit[onnx]'") from e
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre), str(dst), _Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        data = dst.read_bytes()
    info = {
        "kind": "int8", "method": STATIC_METHOD, "format": "QDQ", "per_channel": True,
        "weight_type": "QInt8", "activation_type": "QUInt8", "calibrate_method": "MinMax",
        "calibration_images": int(len(calibration)),
    }
    return data, info
