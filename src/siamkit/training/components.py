"""The pieces a training run is built from, each made from its options: the network, the
optimiser and its schedule, the miner, the augmentation, the batch sampler, the
precision. The fit loop and fine-tuning both build theirs here.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch

from ..data.augment import RandomAffine
from ..data.samplers import BalancedPairSampler, MPerClassSampler
from ..encoders import create_encoder
from ..errors import DataError
from ..miners import MINERS, BaseMiner, HardPairMiner
from ..network import InputSpec, SiameseNetwork
from .config import TrainConfig

__all__ = [
    "OPTIMIZERS",
    "build_network",
    "make_augment",
    "make_miner",
    "make_optimizer",
    "make_sampler",
    "make_scheduler",
    "resolve_precision",
]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def build_network(config: TrainConfig, sample_shape: Sequence[int]) -> SiameseNetwork:
    """Build the network a config describes.

    Args:
        config: the model options (encoder, embedding_dim, distance, normalize, loss).
        sample_shape: the shape of one input, without the batch dimension.

    Returns:
        A new, untrained network (its weights drawn from torch's global generator).

    Raises:
        DataError: an image encoder for inputs that are not (C, H, W).
    """
    kwargs = dict(config.encoder_kwargs)
    if config.encoder == "mlp":
        kwargs.setdefault("in_features", int(math.prod(sample_shape)))
        kwargs.setdefault("embedding_dim", config.embedding_dim or 64)
    else:
        if len(sample_shape) != 3:
            raise DataError(f"image encoders take (C, H, W) samples, got shape {tuple(sample_shape)}")
        kwargs.setdefault("in_channels", int(sample_shape[0]))
        kwargs.setdefault("embedding_dim", config.embedding_dim)
    if config.encoder == "hf_image":  # a pretrained backbone: loaded from its folder (encoders/vision.py)
        from ..encoders.vision import encoder_from_options

        encoder = encoder_from_options(kwargs)
    else:
        encoder = create_encoder(config.encoder, **kwargs)
    spec = InputSpec.for_sample(sample_shape)
    if config.preprocess or config.tta is not None:
        if not spec.is_image:
            raise DataError("preprocess and tta apply to images; these samples are not (C, H, W)")
        spec = spec.with_recipe(config.preprocess, config.tta)
    return SiameseNetwork(
        encoder,
        distance=config.distance,
        normalize=config.normalize,
        head="l1" if config.loss == "binary" else None,
        input_spec=spec,
        matryoshka_dims=config.matryoshka_dims,  # checked against the encoder's size here
    )


def resolve_precision(config: TrainConfig, *, images: bool = True) -> tuple[str, bool]:
    """The precision and memory format a run actually uses.

    Args:
        config: its ``precision`` and ``channels_last``.
        images: the inputs are images (channels_last applies to them only).

    Returns:
        (precision, channels_last): ``auto`` is bf16 autocast with channels_last where
        the CPU has native bfloat16 kernels, fp32 elsewhere.
    """
    if config.precision != "auto":
        return config.precision, bool(config.channels_last and images)
    try:
        fast_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        fast_bf16 = False
    return ("bf16", images) if fast_bf16 else ("fp32", bool(config.channels_last and images))


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter], *, optimizer: str, lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """The optimiser of a run.

    Args:
        parameters: what it updates.
        optimizer: a name of :data:`OPTIMIZERS` (adam or adamw).
        lr: the learning rate.
        weight_decay: the weight decay (L2 for adam, decoupled for adamw).

    Returns:
        The optimiser.

    Raises:
        ValueError: an unknown optimizer name.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[optimizer](parameters, lr=lr, weight_decay=weight_decay)


def make_scheduler(
    config: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule of a run.

    Args:
        config: its ``schedule``, ``epochs``, ``step_size`` and ``gamma``.
        opt: the optimiser it drives.
        steps_per_epoch: batches per epoch (cosine anneals over all steps of all epochs).

    Returns:
        The scheduler (cosine: stepped after every batch; step: after every epoch), or
        None for ``schedule="none"``.
    """
    if config.schedule == "cosine":  # stepped after every batch: reaches 0 at the last step
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=config.step_size, gamma=config.gamma)
    return None


def make_miner(config: TrainConfig, network: SiameseNetwork) -> BaseMiner | None:
    """The miner a config names, in the network's distance.

    Args:
        config: its ``miner`` and margins.
        network: whose distance the miner measures with.

    Returns:
        The miner, or None (pair batches, in-batch losses).
    """
    if config.miner is None:
        return None
    if config.miner == "hard_pairs":
        return HardPairMiner(pos_margin=config.pos_margin, neg_margin=config.margin, distance=network.distance)
    return MINERS[config.miner](distance=network.distance)


def make_augment(config: TrainConfig) -> RandomAffine:
    """The random affine transform of a config (rotation, shear, scale, translate, fill)."""
    return RandomAffine(
        degrees=config.rotation, shear=config.shear, scale=config.scale, translate=config.translate, fill=config.fill
    )


def make_sampler(config: TrainConfig, labels: torch.Tensor, groups: torch.Tensor | None = None) -> Any:
    """The batch sampler a config implies.

    Args:
        config: ``batching`` ("pairs": balanced random pairs; "classes": m per class),
            ``batch_size``, ``m_per_class``, ``classes_per_group``.
        labels: the class of every training sample.
        groups: a group per training sample (class batching only).

    Shapes:
        labels (N,), groups (N,).

    Returns:
        A :class:`~siamkit.data.samplers.BalancedPairSampler` or
        :class:`~siamkit.data.samplers.MPerClassSampler`.
    """
    if config.batching == "pairs":
        return BalancedPairSampler(labels, batch_size=config.batch_size // 2, pairs_per_epoch=max(1, labels.numel() // 2))
    return MPerClassSampler(
        labels,
        m=config.m_per_class,
        batch_size=config.batch_size,
        groups=groups,
        classes_per_group=config.classes_per_group,
    )
