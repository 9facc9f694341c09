"""Training on several processes with torch.distributed (``torchrun``), one global batch.

``siamkit train`` (and :func:`siamkit.training.fit`) run unchanged under
``torchrun --nproc-per-node N``: :func:`init_from_env` reads torchrun's environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and joins the
process group (gloo on CPU, NCCL when the process has a GPU).

The design keeps a distributed run the same run as one process with the same config:

- **One global batch.** ``batch_size`` is the GLOBAL batch. Every rank draws the same
  global batch from the same seeded generator and keeps its share of the batch's CLASSES
  (class k of the batch, in order of first appearance, goes to rank ``k % world``), so no
  class is split across ranks and ranks never overlap (:func:`shard_batch`).
- **Mining and in-batch negatives see the global batch.** The local embeddings are
  gathered from every rank with the autograd-aware ``all_gather_single`` of
  ``torch.distributed._functional_collectives`` (``torch.distributed.nn.functional.all_gather``
  is deprecated in torch 2.13); its backward sums the incoming gradients over the ranks and
  hands each rank the rows it contributed. The labels of the gathered batch are not sent:
  every rank knows the global batch, so it builds the labels in the very order the gather
  concatenates (rank 0's rows, then rank 1's, ...; :func:`gathered_order`). Two views of
  each image and pair batches are gathered part by part (all first views, then all second
  views; all left images, then all right ones), never interleaved: the label misalignment
  of sentence-transformers' cached MNR across ranks (their PR #3453) cannot happen.
- **Gradients.** Every rank computes the same loss of the global batch; DDP averages the
  encoder's gradients over ranks. Because the gather's backward already summed the
  per-rank gradients, the average equals the one-process gradient of the global batch
  (tests/training/test_distributed.py checks loss and gradients for every loss and miner).
  Parameters used only by the loss (the pair head, normsoftmax proxies) get the same
  gradient on every rank, so they stay identical without communication.
- **Batch norm.** :func:`wrap` converts batch norm to SyncBatchNorm on GPUs (NCCL) and, on
  CPUs (gloo), where SyncBatchNorm does not run, to
  :class:`~siamkit.training.global_bn.GlobalBatchNorm`, which normalises with the global
  batch's statistics through the same autograd-aware gather: a batch-norm encoder's run is
  the one-process run too.
- **Files and output** are written by rank 0 only; checkpoints resume on every rank.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from ..errors import DataError
from ..inference import autocast_context
from ..tuples import Pairs, pairs_from_pair_batch
from .config import TrainConfig

__all__ = [
    "DistEnv", "Embedder", "barrier", "check_shares", "current", "gather", "gather_parts", "gathered_order", "global_batch",
    "init_from_env", "is_main", "shard_batch", "shard_pairs", "wrap",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the process group.

    Attributes:
        rank: 0 .. world_size - 1 (rank 0 writes files and prints).
        world_size: the number of processes.
        local_rank: the rank on this machine (the GPU index with NCCL).
        backend: ``gloo`` or ``nccl``.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0


def current() -> DistEnv | None:
    """The process group this process is in, or None when it runs alone (or in a group of 1)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), str(dist.get_backend()))


def barrier() -> None:
    """Wait for every rank (nothing when running alone)."""
    if current() is not None:
        dist.barrier()


def is_main() -> bool:
    """True unless this process is a rank other than 0 of a process group."""
    env = current()
    return env is None or env.is_main


def init_from_env() -> DistEnv | None:
    """Join the process group torchrun describes in the environment (once).

    Returns:
        The :class:`DistEnv`, or None when ``WORLD_SIZE`` is unset or 1 (one process).

    Raises:
        DataError: torchrun's variables are incomplete (e.g. WORLD_SIZE without RANK).
    """
    if current() is not None:
        return current()
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world < 2:
        return None
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise DataError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: start distributed runs with torchrun")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    env = current()
    logger.info("joined a process group: rank %d of %d (%s)", dist.get_rank(), world, backend)
    return env


def shard_batch(labels: torch.Tensor, idx: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """This rank's part of a global class batch: the batch's k-th class (in order of first
    appearance) goes to rank ``k % world``; every rank must get the same number of samples.

    Args:
        labels: the class of every training sample.
        idx: the global batch's sample indices (e.g. classes x m_per_class).
        env: the process group.

    Shapes:
        labels (N,), idx (B,) -> (B / world,).

    Returns:
        This rank's indices, in batch order.

    Raises:
        DataError: the batch's classes cannot be shared out evenly (make the number of
            classes per batch, batch_size // m_per_class, a multiple of the world size).
    """
    owner = _class_owner(labels[idx], env.world_size)
    sizes = torch.bincount(owner, minlength=env.world_size)
    if bool((sizes != sizes[0]).any()):
        raise DataError(
            f"a batch of {idx.numel()} samples does not share out evenly over {env.world_size} processes "
            f"(samples per rank {sizes.tolist()}): make batch_size // m_per_class a multiple of the number of processes"
        )
    return idx[owner == env.rank]


def _class_owner(batch_labels: torch.Tensor, world: int) -> torch.Tensor:
    """Rank of each batch sample: its class's order of first appearance, modulo ``world``."""
    _, inverse = torch.unique(batch_labels, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), batch_labels.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(batch_labels.numel()), reduce="amin")
    order = torch.argsort(torch.argsort(first))  # class -> its rank of first appearance
    return order[inverse] % world


def gathered_order(labels: torch.Tensor, idx: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The global batch's indices in the order :func:`gather` concatenates the ranks'
    rows: rank 0's share, then rank 1's, ... (computed locally, nothing is sent).

    Args:
        labels: the class of every training sample.
        idx: the global batch's sample indices.
        env: the process group.

    Shapes:
        labels (N,), idx (B,) -> (B,).

    Returns:
        The reordered indices.
    """
    owner = _class_owner(labels[idx], env.world_size)
    return torch.cat([idx[owner == r] for r in range(env.world_size)])


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, concatenated in rank order, with gradients flowing back to the
    rows this rank contributed (summed over the ranks that used them).

    Args:
        x: this rank's rows (the same shape on every rank).

    Shapes:
        (b, ...) -> (world * b, ...).

    Returns:
        The gathered tensor (``x`` itself when running alone).
    """
    if current() is None:
        return x
    from torch.distributed import _functional_collectives as fc  # the supported autograd-aware collective

    out = fc.all_gather_single(x.contiguous(), 0, dist.group.WORLD)
    wait = getattr(out, "wait", None)
    return wait() if callable(wait) else out


def wrap(module: nn.Module, env: DistEnv) -> nn.Module:
    """The module under DistributedDataParallel, its batch norm made global first
    (SyncBatchNorm on GPUs, :class:`~siamkit.training.global_bn.GlobalBatchNorm` on CPUs).

    Args:
        module: the module whose forward embeds a batch (its parameters are averaged).
        env: the process group.

    Returns:
        The DDP module.
    """
    from torch.nn.parallel import DistributedDataParallel

    if env.backend == "nccl":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module).cuda(env.local_rank)
        return DistributedDataParallel(module, device_ids=[env.local_rank])
    from .global_bn import convert_global_batchnorm

    return DistributedDataParallel(convert_global_batchnorm(module))


def shard_pairs(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], env: DistEnv) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous share of a global pair batch ``(i, j, same)``.

    Args:
        batch: the global pair batch.
        env: the process group.

    Shapes:
        i, j, same (P,) -> i_r, j_r (P / world,).

    Returns:
        ``(i_r, j_r)``: gathering rank by rank restores the global order.

    Raises:
        DataError: the pairs do not share out evenly.
    """
    i, j, _ = batch
    p = i.numel()
    if p % env.world_size:
        raise DataError(f"a batch of {p} pairs does not share out evenly over {env.world_size} processes: make batch_size // 2 a multiple of it")
    s = slice(env.rank * p // env.world_size, (env.rank + 1) * p // env.world_size)
    return i[s], j[s]


def gather_parts(e: torch.Tensor, parts: int) -> torch.Tensor:
    """Gather embeddings made of ``parts`` equal blocks (two views, or left / right
    images of pairs) block by block: all ranks' first blocks, then all second blocks.

    Args:
        e: this rank's embeddings, ``parts`` blocks one after the other.
        parts: the number of blocks.

    Shapes:
        (parts * b, D) -> (parts * world * b, D).

    Returns:
        The gathered embeddings, block-major (never rank-interleaved).
    """
    if parts == 1:
        return gather(e)
    return torch.cat([gather(c) for c in e.chunk(parts)])


class Embedder(nn.Module):
    """A network's ``embed`` as a module's forward (what DistributedDataParallel wraps).

    Args:
        network: the Siamese network (its parameters, the pair head's included, are the
            module's).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.embed(x)


def check_shares(config: TrainConfig, env: DistEnv) -> None:
    """Refuse, before the first step, a global batch that cannot be shared out evenly.

    Args:
        config: the run's options (batch_size, m_per_class, batching).
        env: the process group.

    Returns:
        None.

    Raises:
        DataError: the classes (or pairs) of a batch are not a multiple of the world size.
    """
    if config.batching == "pairs":
        units, what = config.batch_size // 2, "batch_size // 2 (pairs per batch)"
    else:
        units, what = config.batch_size // config.m_per_class, "batch_size // m_per_class (classes per batch)"
    if units % env.world_size:
        raise DataError(f"{what} = {units} is not a multiple of the {env.world_size} processes: every rank takes whole classes")


def global_batch(
    batch: Any,
    labels: torch.Tensor,
    env: DistEnv,
    inputs: Callable[[torch.Tensor], torch.Tensor],
    embedder: nn.Module,
    *,
    parts: int = 1,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor, Pairs | None, int]:
    """One distributed step's view of the global batch: this rank embeds its share, and
    gets every rank's embeddings (gradients flow to its own rows).

    Args:
        batch: the global batch: sample indices (class batches) or ``(i, j, same)`` pairs.
        labels: the class of every training sample.
        env: the process group.
        inputs: indices -> this rank's (augmented) inputs; with two views, both views
            one after the other.
        embedder: the DDP-wrapped :class:`Embedder`.
        parts: 2 when ``inputs`` returns two views of each sample, else 1.
        precision: fp32 or bf16 autocast for the forward pass.

    Shapes:
        labels (N,) -> embeddings (B or parts * B, D), labels (B,).

    Returns:
        ``(embeddings, their labels, the given pairs or None, the global batch size)``, in
        the order a one-process run on the same batch would see them up to a permutation
        of whole classes (pairs keep their exact order).
    """
    if isinstance(batch, tuple):
        i, j = shard_pairs(batch, env)
        local, parts = torch.cat([i, j]), 2
        idx = torch.cat([batch[0], batch[1]])
        given: Pairs | None = pairs_from_pair_batch(batch[2])
    else:
        local = shard_batch(labels, batch, env)
        idx, given = gathered_order(labels, batch, env), None
    with autocast_context(precision):
        e = embedder(inputs(local))
    return gather_parts(e.float(), parts), labels[idx], given, int(idx.numel())
