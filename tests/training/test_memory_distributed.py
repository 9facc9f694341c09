"""The cross-batch memory under torch.distributed (2 gloo processes): every rank
enqueues the gathered global batch, so the ranks hold the identical memory, and every
step's loss and gradients equal one process on the concatenated batch (the divergence of
pytorch-metric-learning's per-rank memory, their issue #639, cannot happen)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from siamkit import SiameseNetwork, create_encoder
from siamkit.training import TrainConfig
from siamkit.training.components import make_miner, make_sampler
from siamkit.training.distributed import DistEnv, gather, gathered_order, shard_batch
from siamkit.training.objective import Objective

WORLD, N_CLASSES, PER, DIM, STEPS = 2, 12, 6, 8, 4
CASES = {
    "triplet-batch_hard": dict(loss="triplet", miner="batch_hard"),
    "triplet-semi_hard": dict(loss="triplet", miner="semi_hard", margin=0.5),
    "contrastive-all_pairs": dict(loss="contrastive", miner="all_pairs", margin=1.0),
    "contrastive-hard_pairs": dict(loss="contrastive", miner="hard_pairs", margin=1.0),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _setup(case: str) -> tuple[TrainConfig, Objective, list[torch.Tensor]]:
    # a memory of 40 rows: 24-sample batches wrap it around; one warm-up step
    cfg = TrainConfig(batch_size=24, m_per_class=4, val_fraction=0, normalize=False, cross_batch_memory=40,
                      memory_warmup=1, **CASES[case])
    net = SiameseNetwork(create_encoder("mlp", in_features=3, embedding_dim=DIM, batch_norm=False), normalize=False).double()
    labels = torch.arange(N_CLASSES).repeat_interleave(PER)
    sampler, g, batches = make_sampler(cfg, labels), torch.Generator().manual_seed(5), []
    while len(batches) < STEPS:  # epochs of 3 batches, one after the other
        batches += list(sampler.batches(g))
    return cfg, Objective(cfg, net, make_miner(cfg, net)), batches[:STEPS]


def _table(step: int) -> torch.Tensor:
    return torch.randn(N_CLASSES * PER, DIM, generator=torch.Generator().manual_seed(100 + step), dtype=torch.float64)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo")
    env = DistEnv(rank, WORLD, rank, "gloo")
    labels = torch.arange(N_CLASSES).repeat_interleave(PER)
    results: dict[str, torch.Tensor] = {}
    for case in CASES:
        _, obj, batches = _setup(case)
        for step, batch in enumerate(batches):
            local = _table(step)[shard_batch(labels, batch, env)].clone().requires_grad_(True)
            loss = obj(gather(local), labels[gathered_order(labels, batch, env)])
            loss.backward()
            results[f"{case}/{step}/loss"] = loss.detach().reshape(1)
            results[f"{case}/{step}/grad"] = local.grad
        assert obj.memory is not None
        results[f"{case}/memory"], results[f"{case}/memory_labels"] = obj.memory.contents()  # type: ignore[assignment]
    save_file({k: v.contiguous() for k, v in results.items()}, os.path.join(out, f"rank{rank}.safetensors"))
    dist.barrier()  # no rank tears gloo down while another still talks to it (a SIGABRT seen once in CI)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("ddp_memory")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [load_file(str(out / f"rank{r}.safetensors")) for r in range(WORLD)]


@pytest.mark.parametrize("case", list(CASES))
def test_ranks_hold_the_same_memory_and_match_one_process(case: str, ranks: list[dict[str, torch.Tensor]]) -> None:
    labels = torch.arange(N_CLASSES).repeat_interleave(PER)
    _, obj, batches = _setup(case)
    env0 = DistEnv(0, WORLD, 0, "gloo")
    for step, batch in enumerate(batches):
        order = gathered_order(labels, batch, env0)  # one process on the concatenated batch
        ref = _table(step)[order].clone().requires_grad_(True)
        loss = obj(ref, labels[order])
        loss.backward()
        b = batch.numel() // WORLD
        for r, got in enumerate(ranks):
            assert torch.allclose(got[f"{case}/{step}/loss"], loss.detach().reshape(1), atol=1e-12), (case, step)
            # the gather's backward sums the W identical losses' gradients; DDP's average divides by W
            assert torch.allclose(got[f"{case}/{step}/grad"] / WORLD, ref.grad[r * b : (r + 1) * b], atol=1e-12), (case, step)
    assert obj.memory is not None and obj.memory.filled_ == 40  # wrapped around
    mem_e, mem_y = obj.memory.contents()
    for got in ranks:
        assert torch.equal(got[f"{case}/memory"], ranks[0][f"{case}/memory"])  # identical on every rank, bit for bit
        assert torch.equal(got[f"{case}/memory_labels"], ranks[0][f"{case}/memory_labels"])
        assert torch.equal(got[f"{case}/memory"], mem_e) and torch.equal(got[f"{case}/memory_labels"], mem_y)
    # the memory changed the loss: with the same batches and no memory the last step differs
    cfg_plain = TrainConfig(batch_size=24, m_per_class=4, val_fraction=0, normalize=False, **CASES[case])
    plain = Objective(cfg_plain, obj.network, make_miner(cfg_plain, obj.network))
    order = gathered_order(labels, batches[-1], env0)
    assert abs(plain(_table(STEPS - 1)[order], labels[order]).item() - ranks[0][f"{case}/{STEPS - 1}/loss"].item()) > 1e-6
