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
    quantize: Optional[str] = typer.Option(None, "--quantize", help="Also write an int8 graph (onnxruntime dynamic quantization)."),
) -> None:
    """Write the encoder as ONNX (final, normalised embeddings; dynamic batch) plus
    siamkit-onnx.json (input spec, distance, pair head, calibration). Use it with
    `siamkit compare EXPORT a b --runtime onnx` or siamkit.export.runtime.OnnxVerifier."""
    if fmt != "onnx":
        fail(f"--format must be onnx, got {fmt!r}")
    if quantize not in (None, "int8"):
        fail(f"--quantize must be int8, got {quantize!r}")
    from ..export.writer import export_onnx

    folder = export_onnx(model, out, quantize=quantize)
    typer.echo(f"exported {model} to {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))
