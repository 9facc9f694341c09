"""Model summary: each layer's output shape and parameter count, and the totals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

__all__ = ["LayerInfo", "ModelSummary", "summarize"]


@dataclass
class LayerInfo:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    trainable: int


@dataclass
class ModelSummary:
    layers: list[LayerInfo]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    total_params: int
    trainable_params: int

    def to_text(self) -> str:
        """A torchsummary-like table."""
        w = max([len(f"{l.name} ({l.kind})") for l in self.layers] + [20])
        lines = [f"{'Layer (type)':<{w}}  {'Output shape':<22}  {'Params':>12}", "=" * (w + 38)]
        for l in self.layers:
            shape = str(list(l.output_shape))
            lines.append(f"{l.name + ' (' + l.kind + ')':<{w}}  {shape:<22}  {l.params:>12,}")
        lines += [
            "=" * (w + 38),
            f"Input shape: {list(self.input_shape)}   Output shape: {list(self.output_shape)}",
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.total_params - self.trainable_params:,}",
            f"Parameter size: {self.total_params * 4 / 2**20:.2f} MB (float32)",
        ]
        return "\n".join(lines)


def summarize(module: nn.Module, input_shape: Sequence[int], *, batch_size: int = 2) -> ModelSummary:
    """Run one forward pass on zeros of ``(batch_size, *input_shape)`` and record every
    leaf layer's output shape (batch dimension shown as -1) and own parameters.

    For a :class:`~siamkit.network.SiameseNetwork` the shared encoder is summarised
    (that is what both twins run).

    Args:
        module: an encoder, or a :class:`~siamkit.network.SiameseNetwork`.
        input_shape: one sample's shape, without the batch dimension.
        batch_size: rows of the zero batch; the module runs in eval mode without
            gradients, and its train/eval mode is restored.

    Returns:
        The :class:`ModelSummary`: one :class:`LayerInfo` per leaf-layer call (plus the
        pair head, if any), the input and output shapes, and the parameter totals of
        the whole ``module``.

    Example:
        >>> from siamkit import create_encoder
        >>> s = summarize(create_encoder("conv4", in_channels=1), (1, 28, 28))
        >>> s.output_shape
        (-1, 64)
    """
    from .network import SiameseNetwork

    target = module.encoder if isinstance(module, SiameseNetwork) else module
    records: list[LayerInfo] = []
    hooks = []

    def make_hook(name: str):  # type: ignore[no-untyped-def]
        def hook(mod: nn.Module, inp: object, out: object) -> None:
            t = out[0] if isinstance(out, (tuple, list)) else out
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else ()
            shape = (-1, *shape[1:]) if shape else shape
            params = sum(p.numel() for p in mod.parameters(recurse=False))
            trainable = sum(p.numel() for p in mod.parameters(recurse=False) if p.requires_grad)
            records.append(LayerInfo(name, type(mod).__name__, shape, params, trainable))

        return hook

    for name, sub in target.named_modules():
        if len(list(sub.children())) == 0:
            hooks.append(sub.register_forward_hook(make_hook(name)))
    was_training = target.training
    target.eval()
    try:
        with torch.no_grad():
            out = target(torch.zeros(batch_size, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        target.train(was_training)
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    if isinstance(module, SiameseNetwork) and module.pair_head is not None:
        head = module.pair_head
        records.append(LayerInfo("pair_head", type(head).__name__, (-1, 1), sum(p.numel() for p in head.parameters()), sum(p.numel() for p in head.parameters())))
    return ModelSummary(records, tuple(input_shape), (-1, *out.shape[1:]), total, trainable)
