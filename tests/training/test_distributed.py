"""Training on several processes (torch.distributed, gloo on CPU): the global batch is
shared out by whole classes, gathered with gradients, and a 2-process run gives the same
loss and gradients as one process on the concatenated batch, for every loss and miner."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from siamkit import SiameseNetwork, create_encoder
from siamkit.errors import DataError
from siamkit.io import load_model
from siamkit.training import TrainConfig, fit
from siamkit.training.callbacks import Callback, TrainState
from siamkit.training.components import make_miner, make_sampler
from siamkit.training.distributed import DistEnv, check_shares, gather_parts, gathered_order, shard_batch, shard_pairs
from siamkit.training.objective import Objective
from siamkit.tuples import pairs_from_pair_batch, random_pairs

WORLD = 2
N_CLASSES, PER, DIM = 12, 6, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _labels() -> torch.Tensor:
    return torch.arange(N_CLASSES).repeat_interleave(PER)


# --------------------------------------------------------------------------- sharing out (no processes)


@pytest.mark.parametrize("world", [2, 3])
def test_shards_are_whole_classes_without_overlap(world: int) -> None:
    labels = _labels()
    sampler = make_sampler(TrainConfig(batch_size=24, m_per_class=4, val_fraction=0), labels)
    idx = next(iter(sampler.batches(torch.Generator().manual_seed(1))))
    envs = [DistEnv(r, world, r, "gloo") for r in range(world)]
    if (24 // 4) % world:
        pytest.skip("uneven")
    shards = [shard_batch(labels, idx, e) for e in envs]
    assert sorted(torch.cat(shards).tolist()) == sorted(idx.tolist())  # a partition of the batch
    class_sets = [set(labels[s].tolist()) for s in shards]
    for a in range(world):
        for b in range(a + 1, world):
            assert not class_sets[a] & class_sets[b]  # no class on two ranks
    order = gathered_order(labels, idx, envs[0])
    assert torch.equal(order, torch.cat(shards))  # the gather's concatenation, computed locally
    assert all(len(s) == len(shards[0]) for s in shards)


def test_uneven_shares_are_refused() -> None:
    labels = _labels()
    idx = torch.arange(0, 18)  # 3 classes of 6
    with pytest.raises(DataError, match="does not share out evenly"):
        shard_batch(labels, idx, DistEnv(0, 2, 0, "gloo"))
    with pytest.raises(DataError, match="multiple of the 4 processes"):
        check_shares(TrainConfig(batch_size=24, m_per_class=4, val_fraction=0), DistEnv(0, 4, 0, "gloo"))
    pairs = random_pairs(labels, 10, torch.Generator().manual_seed(0))
    with pytest.raises(DataError, match="pairs does not share out evenly"):
        shard_pairs((pairs.a, pairs.b, pairs.same), DistEnv(0, 3, 0, "gloo"))


# --------------------------------------------------------------------------- 2 processes vs 1

CASES = {
    "triplet-batch_hard": dict(loss="triplet", miner="batch_hard"),
    "triplet-semi_hard": dict(loss="triplet", miner="semi_hard", margin=0.5),
    "contrastive-all_pairs": dict(loss="contrastive", miner="all_pairs", margin=1.0),
    "contrastive-hard_pairs": dict(loss="contrastive", miner="hard_pairs", margin=1.0),
    "binary-all_pairs": dict(loss="binary", miner="all_pairs"),
    "mnr": dict(loss="mnr"),
    "normsoftmax": dict(loss="normsoftmax", margin=0.1),
    "views": dict(loss="views"),
    "triplet+instance": dict(loss="triplet", miner="batch_hard", instance_weight=0.5),
    "contrastive-pairs": dict(loss="contrastive", batching="pairs", margin=1.0),
}


def _setup(case: str) -> tuple[TrainConfig, SiameseNetwork, Objective, torch.Tensor | None]:
    cfg = TrainConfig(batch_size=24, m_per_class=4, val_fraction=0, normalize=False, **CASES[case])
    torch.manual_seed(0)
    net = SiameseNetwork(create_encoder("mlp", in_features=3, embedding_dim=DIM, batch_norm=False),
                         normalize=cfg.normalize, head="l1" if cfg.loss == "binary" else None).double()
    proxies = class_values = None
    if cfg.loss == "normsoftmax":
        class_values = torch.arange(N_CLASSES)
        proxies = torch.nn.Parameter(torch.randn(N_CLASSES, DIM, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    return cfg, net, Objective(cfg, net, make_miner(cfg, net), proxies=proxies, class_values=class_values), proxies


def _batch(cfg: TrainConfig, labels: torch.Tensor) -> object:
    return next(iter(make_sampler(cfg, labels).batches(torch.Generator().manual_seed(5))))


def _tables() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return (torch.randn(N_CLASSES * PER, DIM, generator=g, dtype=torch.float64),
            torch.randn(N_CLASSES * PER, DIM, generator=g, dtype=torch.float64))


def _objective_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo")
    env = DistEnv(rank, WORLD, rank, "gloo")
    labels = _labels()
    e1, e2 = _tables()
    results: dict[str, torch.Tensor] = {}
    for case in CASES:
        cfg, net, obj, proxies = _setup(case)
        batch = _batch(cfg, labels)
        if isinstance(batch, tuple):
            i, j = shard_pairs(batch, env)
            local = e1[torch.cat([i, j])].clone().requires_grad_(True)
            e, y, given = gather_parts(local, 2), labels[torch.cat([batch[0], batch[1]])], pairs_from_pair_batch(batch[2])
        else:
            idx = shard_batch(labels, batch, env)
            local = (torch.cat([e1[idx], e2[idx]]) if obj.two_views else e1[idx]).clone().requires_grad_(True)
            e = gather_parts(local, 2 if obj.two_views else 1)
            y, given = labels[gathered_order(labels, batch, env)], None
        loss = obj(e, y, given)
        loss.backward()
        results[f"{case}/loss"] = loss.detach().reshape(1)
        results[f"{case}/grad"] = local.grad
        for name, p in list(net.named_parameters()) + ([("proxies", proxies)] if proxies is not None else []):
            if p.grad is not None and not name.startswith("encoder"):
                results[f"{case}/param/{name}"] = p.grad
    save_file({k: v.contiguous() for k, v in results.items()}, os.path.join(out, f"rank{rank}.safetensors"))
    dist.barrier()  # no rank tears gloo down while another still talks to it (a SIGABRT seen once in CI)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_objectives(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("ddp_obj")
    mp.spawn(_objective_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [load_file(str(out / f"rank{r}.safetensors")) for r in range(WORLD)]


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one_on_the_concatenated_batch(case: str, two_process_objectives: list[dict[str, torch.Tensor]]) -> None:
    labels = _labels()
    e1, e2 = _tables()
    cfg, net, obj, proxies = _setup(case)
    batch = _batch(cfg, labels)
    if isinstance(batch, tuple):
        ref = torch.cat([e1[batch[0]], e1[batch[1]]]).clone().requires_grad_(True)
        loss = obj(ref, labels[torch.cat([batch[0], batch[1]])], pairs_from_pair_batch(batch[2]))
        p = batch[0].numel() // WORLD
        rows = [torch.cat([torch.arange(r * p, (r + 1) * p), batch[0].numel() + torch.arange(r * p, (r + 1) * p)]) for r in range(WORLD)]
    else:
        order = gathered_order(labels, batch, DistEnv(0, WORLD, 0, "gloo"))
        ref = (torch.cat([e1[order], e2[order]]) if obj.two_views else e1[order]).clone().requires_grad_(True)
        loss = obj(ref, labels[order])
        # the same loss on the batch in the sampler's own order: sharing out only permutes whole classes
        plain = torch.cat([e1[batch], e2[batch]]) if obj.two_views else e1[batch]
        assert torch.allclose(obj(plain, labels[batch]), loss.detach(), atol=1e-12)
        b = batch.numel() // WORLD
        parts = 2 if obj.two_views else 1
        rows = [torch.cat([k * batch.numel() + torch.arange(r * b, (r + 1) * b) for k in range(parts)]) for r in range(WORLD)]
    loss.backward()
    for r, got in enumerate(two_process_objectives):
        assert torch.allclose(got[f"{case}/loss"], loss.detach().reshape(1), atol=1e-12), case
        # the gather's backward sums the W identical losses' gradients; DDP's average divides by W
        assert torch.allclose(got[f"{case}/grad"] / WORLD, ref.grad[rows[r]], atol=1e-12), case
        for name, p in list(net.named_parameters()) + ([("proxies", proxies)] if proxies is not None else []):
            if p.grad is not None and not name.startswith("encoder"):
                assert torch.allclose(got[f"{case}/param/{name}"], p.grad, atol=1e-12), (case, name)
    assert ref.grad.abs().sum() > 0  # the case trains something


# --------------------------------------------------------------------------- fit() under 2 processes


def _fit_config(batch_norm: bool = False, **kw: object) -> TrainConfig:
    return TrainConfig(
        encoder="mlp", encoder_kwargs={"hidden": [16], "batch_norm": batch_norm}, embedding_dim=8, batch_size=16, m_per_class=4,
        epochs=2, steps_per_epoch=3, val_fraction=0, health=False, progress=False, precision="fp32", patience=None, **kw,
    )


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    y = torch.arange(8).repeat_interleave(6)
    return torch.randn(48, 5, generator=g) + y[:, None].float() * 0.3, y


class _StopAfterFirst(Callback):
    def on_epoch_end(self, record: dict, state: TrainState) -> None:
        state.stop = True


def _fit_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    x, y = _data()
    result = fit(x, y, _fit_config(), out_dir=os.path.join(out, "run"))
    save_file({k: v.contiguous() for k, v in result.network.state_dict().items()}, os.path.join(out, f"weights{rank}.safetensors"))
    # interrupted after epoch 1 (on every rank), then resumed under the same world size
    fit(x, y, _fit_config(), out_dir=os.path.join(out, "cut"), callbacks=[_StopAfterFirst()])
    resumed = fit(x, y, _fit_config(), out_dir=os.path.join(out, "cut"), resume=True)
    save_file({k: v.contiguous() for k, v in resumed.network.state_dict().items()}, os.path.join(out, f"resumed{rank}.safetensors"))
    with open(os.path.join(out, f"loss{rank}.txt"), "w") as f:
        f.write(" ".join(repr(r["train_loss"]) for r in result.history))


def test_fit_on_two_processes_equals_one_process(tmp_path: Path) -> None:
    mp.spawn(_fit_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    x, y = _data()
    one = fit(x, y, _fit_config())
    ref = one.network.state_dict()
    ws = [load_file(str(tmp_path / f"weights{r}.safetensors")) for r in range(WORLD)]
    resumed = [load_file(str(tmp_path / f"resumed{r}.safetensors")) for r in range(WORLD)]
    for k, v in ref.items():
        for w in ws + resumed:
            assert torch.allclose(w[k], v, atol=1e-5), k  # identical ranks, identical to one process, resume exact
    losses = [[float(t) for t in (tmp_path / f"loss{r}.txt").read_text().split()] for r in range(WORLD)]
    assert losses[0] == losses[1]
    assert losses[0] == pytest.approx([r["train_loss"] for r in one.history], abs=1e-5)
    run = tmp_path / "run"
    assert (run / "model" / "model.safetensors").is_file() and (run / "checkpoint").is_dir()  # written by rank 0


def _ensemble_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    x, y = _data()
    result = fit(x, y, _fit_config(ensemble=2, normalize=True), out_dir=os.path.join(out, "run"))
    save_file({k: v.contiguous() for k, v in result.network.state_dict().items()}, os.path.join(out, f"ens{rank}.safetensors"))
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


def test_ensemble_on_two_processes_equals_one_process(tmp_path: Path) -> None:
    mp.spawn(_ensemble_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    x, y = _data()
    ref = fit(x, y, _fit_config(ensemble=2, normalize=True)).network.state_dict()
    saved = load_model(tmp_path / "run" / "model").state_dict()  # written once, by rank 0
    for k, v in ref.items():
        for w in [load_file(str(tmp_path / f"ens{r}.safetensors")) for r in range(WORLD)] + [saved]:
            assert torch.allclose(w[k], v, atol=1e-5), k
    assert sorted(p.name for p in (tmp_path / "run" / "members").iterdir()) == ["0", "1"]


def _fit_bn_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    x, y = _data()
    result = fit(x, y, _fit_config(batch_norm=True, loss="mnr"))
    assert any(type(m).__name__ == "GlobalBatchNorm" for m in result.network.modules())  # gloo: the global batch's statistics
    save_file({k: v.contiguous() for k, v in result.network.state_dict().items()}, os.path.join(out, f"weights{rank}.safetensors"))
    with open(os.path.join(out, f"loss{rank}.txt"), "w") as f:
        f.write(" ".join(repr(r["train_loss"]) for r in result.history))


def test_fit_with_batch_norm_on_two_processes_equals_one_process(tmp_path: Path) -> None:
    """Batch norm on CPU processes normalises with the GLOBAL batch (GlobalBatchNorm): the
    trained weights, the running statistics and the loss curve are those of one process."""
    mp.spawn(_fit_bn_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    x, y = _data()
    one = fit(x, y, _fit_config(batch_norm=True, loss="mnr"))
    ref = one.network.state_dict()
    assert any("running_var" in k for k in ref)
    for r in range(WORLD):
        w = load_file(str(tmp_path / f"weights{r}.safetensors"))
        for k, v in ref.items():
            assert torch.allclose(w[k].to(v.dtype), v, atol=1e-5), k
    losses = [[float(t) for t in (tmp_path / f"loss{r}.txt").read_text().split()] for r in range(WORLD)]
    assert losses[0] == losses[1] == pytest.approx([r["train_loss"] for r in one.history], abs=1e-5)


def _conv_bn_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from siamkit.training.distributed import gather
    from siamkit.training.global_bn import convert_global_batchnorm

    dist.init_process_group("gloo")
    m = convert_global_batchnorm(_conv_net())
    x = _conv_input()[rank * 4 : (rank + 1) * 4].clone().requires_grad_(True)
    e = gather(m(x))
    ((e**2).sum() + e[0].sum()).backward()
    grads = {f"grad/{k}": p.grad for k, p in m.named_parameters()}
    save_file({"e": e.detach(), "x_grad": x.grad, **grads, **{f"buf/{k}": b.double() for k, b in m.named_buffers()}},
              os.path.join(out, f"conv{rank}.safetensors"))
    dist.barrier()  # no rank tears gloo down while another still talks to it (a SIGABRT seen once in CI)
    dist.destroy_process_group()


def _conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_encoder("conv4", in_channels=1, embedding_dim=16).double().train()


def _conv_input() -> torch.Tensor:
    return torch.randn(8, 1, 20, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_global_batchnorm_of_a_convnet_on_two_processes_is_the_one_process_step(tmp_path: Path) -> None:
    """conv4 (BatchNorm2d in every block) in float64: the gathered embeddings, the input
    gradients, the DDP-averaged weight gradients and the running statistics of 2 gloo
    processes equal one process on the whole batch."""
    mp.spawn(_conv_bn_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    got = [load_file(str(tmp_path / f"conv{r}.safetensors")) for r in range(WORLD)]
    m = _conv_net()
    x = _conv_input().requires_grad_(True)
    e = m(x)
    ((e**2).sum() + e[0].sum()).backward()
    for r, g in enumerate(got):
        torch.testing.assert_close(g["e"], e.detach(), atol=1e-12, rtol=0)
        torch.testing.assert_close(g["x_grad"] / WORLD, x.grad[r * 4 : (r + 1) * 4], atol=1e-12, rtol=0)
        for k, b in m.named_buffers():
            torch.testing.assert_close(g[f"buf/{k}"], b.double(), atol=1e-12, rtol=0)
    for k, p in m.named_parameters():  # DDP averages the ranks' gradients
        torch.testing.assert_close(sum(g[f"grad/{k}"] for g in got) / WORLD, p.grad, atol=1e-10, rtol=1e-10)


def test_global_batchnorm_alone_is_batch_norm() -> None:
    """Outside a process group GlobalBatchNorm is plain batch norm: outputs, gradients and
    running statistics (training and eval, 2d and 4d inputs, momentum None included)."""
    from siamkit.training.global_bn import GlobalBatchNorm, convert_global_batchnorm

    g = torch.Generator().manual_seed(0)
    for ref in (torch.nn.BatchNorm1d(5), torch.nn.BatchNorm2d(3, momentum=None), torch.nn.BatchNorm1d(4, affine=False)):
        shape = (8, ref.num_features) if isinstance(ref, torch.nn.BatchNorm1d) else (6, 3, 4, 4)
        seq = torch.nn.Sequential(torch.nn.Identity(), ref)
        import copy

        mine = convert_global_batchnorm(copy.deepcopy(seq))
        assert isinstance(mine[1], GlobalBatchNorm)
        for _ in range(3):
            x = torch.randn(*shape, generator=g, requires_grad=True)
            x2 = x.detach().clone().requires_grad_(True)
            a, b = seq(x), mine(x2)
            assert torch.allclose(a, b, atol=1e-6)
            (a * a).sum().backward()
            (b * b).sum().backward()
            assert torch.allclose(x.grad, x2.grad, atol=1e-5)
        assert torch.allclose(ref.running_mean, mine[1].running_mean) and torch.allclose(ref.running_var, mine[1].running_var)
        assert int(ref.num_batches_tracked) == int(mine[1].num_batches_tracked) == 3
        seq.eval(), mine.eval()
        x = torch.randn(*shape, generator=g)
        assert torch.allclose(seq(x), mine(x), atol=1e-6)
    shared = torch.nn.BatchNorm1d(2)
    assert convert_global_batchnorm(shared).weight is shared.weight  # the same parameters: an optimizer keeps working


@pytest.mark.slow
def test_cli_train_under_torchrun(tmp_path: Path) -> None:
    """`torchrun --nproc-per-node 2 -m siamkit.cli train ...`: one run, printed once, written once."""
    import subprocess
    import sys

    from tests.conftest import make_image_folder

    data = make_image_folder(tmp_path / "data", classes=8, per_class=6, size=12)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "siamkit.cli", "train",
           "--data", str(data), "--out", str(tmp_path / "run"), "--encoder", "mlp", "--epochs", "2", "--batch-size", "16",
           "--m-per-class", "4", "--val-fraction", "0.25", "--no-progress", "--no-health"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("done: 2 epochs") == 1, r.stdout
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    bad = subprocess.run(cmd[:-8] + ["--batch-size", "12", "--m-per-class", "4", "--epochs", "1", "--no-progress", "--no-health"]
                         + ["--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=600, env=env)
    assert bad.returncode != 0 and "multiple of the 2 processes" in bad.stdout + bad.stderr
