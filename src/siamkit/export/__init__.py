"""Export a trained model for deployment without torch: ONNX graph + manifest.

- :func:`siamkit.export.writer.export_onnx` (needs torch): model folder -> export folder.
- :class:`siamkit.export.runtime.OnnxVerifier` (numpy + onnxruntime only): export folder
  -> embeddings, distances and calibrated decisions.

This package's ``__init__`` imports nothing, so ``import siamkit.export.runtime`` stays
torch-free.
"""

from __future__ import annotations

__all__: list[str] = []
