"""``siamkit export``: a model folder -> an ONNX export folder for torch-free deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import clean_errors, fail

__all__ = ["export"]


@clean_errors
def export(
    model: Path = typer.Argument(..., help="A model folder."),
    fmt: str = typer.Option("onnx", "--format", help="Export format (only onnx)."),
    out: Path = typer.Option(..., "--out", help="The export folder (created; its files are replaced)."),
    quantize: Optional[str] = typer.Option(
        None, "--quantize", help="Also write an int8 graph: int8 (static with --calibration-data; without it dynamic, "
        "with a warning: slower than fp32 for convnets) or int8-dynamic."),
    calibration_data: Optional[Path] = typer.Option(
        None, "--calibration-data", help="A folder of ~100-200 images (searched recursively, read with the model's input "
        "recipe) for static int8 quantization (--quantize int8; image models)."),
) -> None:
    """Write the encoder as ONNX (final, normalised embeddings; dynamic batch) plus
    siamkit-onnx.json (input spec, distance, pair head, calibration). Use it with
    `siamkit compare EXPORT a b --runtime onnx` or siamkit.export.runtime.OnnxVerifier."""
    if fmt != "onnx":
        fail(f"--format must be onnx, got {fmt!r}")
    if quantize not in (None, "int8", "int8-dynamic"):
        fail(f"--quantize must be int8 or int8-dynamic, got {quantize!r}")
    if calibration_data is not None and quantize != "int8":
        fail("--calibration-data goes with --quantize int8 (static quantization)")
    import warnings

    from ..export.writer import NO_CALIBRATION_WARNING, export_onnx

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = export_onnx(model, out, quantize=quantize, calibration=calibration_data)
    for w in caught:
        if str(w.message) == NO_CALIBRATION_WARNING:
            typer.echo(f"warning: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    typer.echo(f"exported {model} to {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))
