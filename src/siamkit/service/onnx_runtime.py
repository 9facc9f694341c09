"""The service's ONNX runtime (``siamkit serve --runtime onnx``): ``POST /v1/verify``
answered by :class:`siamkit.export.runtime.OnnxVerifier` (onnxruntime + numpy) instead of
the torch :class:`~siamkit.verify.Verifier`.

``ServiceSettings.model`` is either an export folder (``siamkit export``: it has
``siamkit-onnx.json``) or a model folder, which is exported now to a temporary folder
(removed when the process exits). The uploads are decoded exactly as for the torch
runtime (:func:`siamkit.service.images.decode_image`: the model's input recipe), so the
two runtimes give the same decision for the same pair (tested).

Only the verify route runs on ONNX. The gallery routes (enrol, identify, identity verify)
embed through the gallery's torch model, so ``--gallery`` with ``--runtime onnx`` is
refused at start-up (:class:`~siamkit.errors.SiamkitError`, exit code 2 at the CLI);
without a gallery they answer 503 ``no_gallery`` as for the torch runtime.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..decision import PairDecision
from ..errors import SiamkitError
from ..export.runtime import MANIFEST, MODEL_FILES, OnnxVerifier

__all__ = ["RUNTIMES", "GALLERY_ROUTES_NEED_TORCH", "OnnxServiceVerifier", "open_verifier"]

RUNTIMES = ("torch", "onnx")
GALLERY_ROUTES_NEED_TORCH = (
    "--runtime onnx serves POST /v1/verify only: the gallery routes (/v1/identities..., /v1/identify) "
    "embed with the torch model; drop --gallery or use --runtime torch"
)


class OnnxServiceVerifier:
    """What :class:`~siamkit.service.deps.ServiceState` needs of a verifier, over ONNX.

    ``network`` carries the two facts the state reads from a torch network: the input
    spec and the weights' fingerprint (both from the export's manifest).

    Attributes:
        onnx: the :class:`OnnxVerifier`.
        network: ``input_spec`` and ``fingerprint``.
        calibrator: the manifest's calibration (None: not calibrated), as ``/healthz`` reads it.
        exported_to: the temporary export folder when the model folder was exported at
            start-up (else None).
    """

    runtime = "onnx"

    def __init__(self, onnx: OnnxVerifier, tmp: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.onnx = onnx
        self._tmp = tmp  # kept alive: its finalizer removes the folder at exit
        self.exported_to = Path(tmp.name) if tmp is not None else None
        self.network = SimpleNamespace(input_spec=onnx.input_spec, fingerprint=onnx.manifest.get("fingerprint"))
        self.calibrator = onnx.calibration

    def verify(self, a: Any, b: Any) -> PairDecision:
        """One pair of decoded inputs (uint8 (C, H, W) tensors or arrays).

        Args:
            a: the first input, as :func:`~siamkit.service.images.decode_image` returns it.
            b: the second input, shaped like ``a``.

        Shapes:
            a (C, H, W), b (C, H, W) -> one decision.

        Returns:
            The :class:`PairDecision` (distance, score, and when the export is calibrated,
            decision, confidence and threshold).
        """
        return self.onnx.verify(_as_array(a), _as_array(b))

    def close(self) -> None:
        """Remove the temporary export (if any)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _as_array(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def open_verifier(model: Path, *, gallery: Any = None, precision: str | None = None,
                  threads: int | None = None) -> OnnxServiceVerifier:
    """The ONNX verifier of ``serve --runtime onnx``.

    Args:
        model: an export folder, or a model folder (exported now, fp32, to a temporary
            folder).
        gallery: the service's gallery setting; anything but None is refused (the gallery
            routes need torch).
        precision: ``"fp32"`` or ``"int8"``; None: fp32 (int8 was slower than fp32 in
            onnxruntime on the CPUs measured, see docs/benchmarks.md "Performance suite").
        threads: onnxruntime's intra-op threads (None: the CPU count).

    Returns:
        The verifier.

    Raises:
        SiamkitError: a gallery was given, an unknown precision, or the folder is neither
            an export nor a model folder (ModelFileError / ExportError name the problem).
    """
    if gallery is not None:
        raise SiamkitError(GALLERY_ROUTES_NEED_TORCH)
    if precision is not None and precision not in MODEL_FILES:
        raise SiamkitError(f"the ONNX precision must be one of {sorted(MODEL_FILES)}, got {precision!r}")
    model = Path(model)
    tmp = None
    folder = model
    if not (model / MANIFEST).is_file():
        if not (model / "config.json").is_file():
            raise SiamkitError(f"{model} is neither a siamkit export (no {MANIFEST}) nor a model folder (no config.json)")
        from ..export.writer import export_onnx  # imports torch: only for a model folder

        tmp = tempfile.TemporaryDirectory(prefix="siamkit-onnx-")
        try:
            folder = export_onnx(model, tmp.name, quantize="int8" if precision == "int8" else None)
        except BaseException:
            tmp.cleanup()
            raise
    try:
        onnx = OnnxVerifier.from_dir(folder, precision=precision or "fp32", threads=threads or os.cpu_count() or 1)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    return OnnxServiceVerifier(onnx, tmp)
