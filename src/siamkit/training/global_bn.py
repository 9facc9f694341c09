"""Batch norm over the global batch on CPU processes (gloo): what ``SyncBatchNorm`` does on GPUs.

PyTorch's :class:`torch.nn.SyncBatchNorm` runs only on accelerators, so under ``torchrun``
on CPUs each rank would normalise with its own share's statistics and a batch-norm encoder's
run would drift from the one-process run. :class:`GlobalBatchNorm` computes the statistics
of the GLOBAL batch instead, with two autograd-aware gathers per layer
(:func:`siamkit.training.distributed.gather`): first every rank's per-channel sums and row
count (the mean), then every rank's sums of squared deviations from that mean (the biased
variance, two-pass like the one-process kernel, so no ``E[x^2] - E[x]^2`` cancellation).
The running statistics are updated with the global mean and the unbiased global variance,
identically on every rank.

Gradients: every rank computes the same loss of the global batch, the gathers' backward
sums the per-rank gradients of the statistics, and DDP's average divides by the world size,
so the parameters' gradients equal the one-process gradients on the concatenated batch (the
same argument as for the gathered embeddings; tests/training/test_distributed.py checks the
trained weights and the loss curve).

Outside a process group, in eval mode, or with one process, it is plain batch norm.
:func:`convert_global_batchnorm` swaps every batch-norm layer of a module for one, sharing
the same parameters and buffers (an optimizer built before keeps working).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GlobalBatchNorm", "convert_global_batchnorm"]


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch of every rank.

    A batch-norm layer like the 1d / 2d / 3d ones (not a :class:`torch.nn.SyncBatchNorm`:
    DistributedDataParallel refuses those on CPU modules).

    Shapes:
        (B, C) or (B, C, ...) -> the same.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected a (B, C, ...) input, got shape {tuple(input.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - nn.Module.forward
        from .distributed import current, gather

        env = current()
        if not self.training or env is None or env.world_size < 2:
            return super().forward(x)  # plain batch norm
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        rows = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype)
        first = gather(torch.cat([x.sum(dims), rows]).unsqueeze(0)).sum(0)
        n = first[-1].detach()
        mean = first[:-1] / n
        xc = x - mean.view(shape)
        var = gather((xc * xc).sum(dims).unsqueeze(0)).sum(0) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            factor = self._factor()
            with torch.no_grad():
                unbiased = var * (n / (n - 1)) if n > 1 else var
                self.running_mean.mul_(1 - factor).add_(factor * mean)
                self.running_var.mul_(1 - factor).add_(factor * unbiased)
        y = xc * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    def _factor(self) -> float:
        """Count the batch and return the running-average factor, as batch norm does."""
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                return 1.0 / float(self.num_batches_tracked)
        return 0.0 if self.momentum is None else float(self.momentum)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Every batch-norm layer of ``module`` (1d, 2d, 3d) swapped for a
    :class:`GlobalBatchNorm` with the same parameters and buffers (the same tensors).

    Args:
        module: the module (changed in place below the top level).

    Returns:
        The module, or its replacement when ``module`` itself is a batch-norm layer.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        new = convert_global_batchnorm(child)
        if new is not child:
            module.add_module(name, new)
    return module
