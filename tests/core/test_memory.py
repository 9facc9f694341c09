"""siamkit.memory (the cross-batch memory) against a slow loop reference: the ring
buffer, the mined losses' values and gradients, and edge cases."""

from __future__ import annotations

import pytest
import torch

from siamkit.errors import DataError, SiamkitError
from siamkit.losses import contrastive_loss, triplet_loss
from siamkit.memory import CrossBatchMemory, memory_loss, memory_triplets
from siamkit.miners import AllPairsMiner, BatchHardMiner, HardPairMiner, SemiHardMiner
from siamkit.training import TrainConfig
from siamkit.training.components import make_miner
from siamkit.training.objective import Objective
from siamkit import SiameseNetwork, create_encoder
from tests.reference import naive_memory

CASES = {  # miner -> (miner object, loss, margin)
    "batch_hard": (BatchHardMiner(), "triplet", 0.5),
    "semi_hard": (SemiHardMiner(), "triplet", 0.5),
    "all_pairs": (AllPairsMiner(), "contrastive", 2.0),
    "hard_pairs": (HardPairMiner(pos_margin=0.5, neg_margin=2.0), "contrastive", 2.0),
}


def _batch(seed: int, n: int, classes: list[int], dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes).repeat(n // len(classes) + 1)[:n]
    return torch.randn(n, 4, generator=g, dtype=torch.float64).to(dtype), y


def _filled(size: int, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> CrossBatchMemory:
    mem = CrossBatchMemory(size=size)
    for e, y in batches:
        mem.enqueue(e, y)
    return mem


# --------------------------------------------------------------------------- the ring buffer


@pytest.mark.parametrize("size,sizes", [(10, [4, 4, 4, 4]), (7, [3, 5, 2, 6]), (5, [12]), (5, [2, 9, 1]), (6, [6, 6])])
def test_the_ring_buffer_holds_the_last_rows_like_a_fifo_queue(size: int, sizes: list[int]) -> None:
    mem, ref, start = CrossBatchMemory(size=size), naive_memory.NaiveQueue(size), 0
    for k, n in enumerate(sizes):
        e = torch.randn(n, 3, generator=torch.Generator().manual_seed(k))
        y = torch.arange(start, start + n)  # unique labels: a row's label names it
        start += n
        mem.enqueue(e, y)
        ref.enqueue(e, y)
        got_e, got_y = mem.contents()
        assert got_e is not None and got_y is not None
        assert mem.filled_ == len(ref.rows) == got_y.numel()
        order = torch.argsort(got_y)
        assert got_y[order].tolist() == sorted(r[1] for r in ref.rows)
        want = torch.tensor([r[0] for r in sorted(ref.rows, key=lambda r: r[1])])
        assert torch.equal(got_e[order], want)
    assert mem.embeddings_ is not None and mem.embeddings_.shape == (size, 3)  # preallocated once, never grown


def test_enqueue_stores_detached_copies() -> None:
    e = torch.randn(4, 3, requires_grad=True)
    mem = CrossBatchMemory(size=8).enqueue(e, torch.arange(4))
    stored, _ = mem.contents()
    assert stored is not None and not stored.requires_grad
    with torch.no_grad():
        e.add_(1.0)
    assert not torch.equal(stored, e.detach())  # a copy, not a view of the batch


def test_empty_memory_and_reset() -> None:
    mem = CrossBatchMemory(size=4, start_after=2)
    assert mem.contents() == (None, None) and not mem.active
    mem.step()
    mem.step()
    assert mem.active
    mem.enqueue(torch.randn(3, 2), torch.arange(3)).reset()
    assert mem.filled_ == 0 and not mem.active and mem.contents()[0].shape == (0, 2)


@pytest.mark.parametrize("size", [0, -3, 1.5, True, "16"])
def test_bad_sizes_are_refused_with_a_clear_message(size: object) -> None:
    with pytest.raises(SiamkitError, match="memory size must be an integer >= 1"):
        CrossBatchMemory(size=size)  # type: ignore[arg-type]
    with pytest.raises(SiamkitError, match="memory start_after must be an integer >= 0"):
        CrossBatchMemory(size=4, start_after=-1)


def test_bad_batches_are_refused() -> None:
    mem = CrossBatchMemory(size=8).enqueue(torch.randn(4, 3), torch.arange(4))
    with pytest.raises(DataError, match="holds 3-d embeddings, got a batch of 5-d"):
        mem.enqueue(torch.randn(4, 5), torch.arange(4))
    with pytest.raises(DataError, match=r"takes \(B, D\) embeddings"):
        mem.enqueue(torch.randn(4), torch.arange(4))
    with pytest.raises(DataError, match="labels"):
        mem.enqueue(torch.randn(4, 3), torch.arange(3))
    with pytest.raises(DataError, match="labels"):
        mem.enqueue(torch.randn(4, 3), torch.randn(4))
    with pytest.raises(DataError, match="holds 3-d embeddings, the batch 5-d"):
        memory_loss(torch.randn(4, 5), torch.arange(4), mem, BatchHardMiner())
    with pytest.raises(SiamkitError, match="triplet or contrastive loss, not 'binary'"):
        memory_loss(torch.randn(4, 3), torch.arange(4), mem, AllPairsMiner(), loss="binary")
    with pytest.raises(SiamkitError, match="needs batch_hard or semi_hard"):
        memory_loss(torch.randn(4, 3), torch.arange(4), mem, AllPairsMiner(), loss="triplet")
    with pytest.raises(SiamkitError, match="needs all_pairs or hard_pairs"):
        memory_loss(torch.randn(4, 3), torch.arange(4), mem, SemiHardMiner(), loss="contrastive")


# --------------------------------------------------------------------------- the loss against the loop reference


@pytest.mark.parametrize("chunk", [7, 1 << 24])
@pytest.mark.parametrize("case", list(CASES))
def test_values_and_gradients_match_the_loop_reference(case: str, chunk: int) -> None:
    miner, loss, margin = CASES[case]
    # the memory wrapped around twice; it holds classes the batch lacks (7, 8) and lacks one of the batch's (3)
    mem = _filled(10, [_batch(1, 6, [0, 1, 7]), _batch(2, 8, [2, 8, 0, 1]), _batch(3, 5, [7, 2])])
    e, y = _batch(4, 9, [0, 1, 2, 3])
    e.requires_grad_(True)
    got = memory_loss(e, y, mem, miner, loss=loss, margin=margin, pos_margin=0.5 if case == "hard_pairs" else 0.0,
                      chunk_elements=chunk)
    (g_got,) = torch.autograd.grad(got, e)
    mem_e, mem_y = mem.contents()
    e2 = e.detach().clone().requires_grad_(True)
    ref = naive_memory.loss(torch.cat([e2, mem_e]), torch.cat([y, mem_y]), 9, case, margin=margin,
                            pos_margin=0.5 if case == "hard_pairs" else 0.0)
    (g_ref,) = torch.autograd.grad(ref, e2)
    assert got.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    assert torch.allclose(g_got, g_ref, atol=1e-10)
    assert g_got.abs().sum() > 0


@pytest.mark.parametrize("case", ["batch_hard", "semi_hard"])
def test_triplets_match_the_loop_reference_float32(case: str) -> None:
    mem = _filled(12, [_batch(5, 16, [0, 1, 2, 5], torch.float32)])
    e, y = _batch(6, 8, [0, 1, 3, 4], torch.float32)
    mem_e, mem_y = mem.contents()
    t = memory_triplets(CASES[case][0], torch.cat([e, mem_e]), torch.cat([y, mem_y]), 8, chunk_elements=30)
    got = set(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()))
    ref = naive_memory.triplets(torch.cat([e, mem_e]).double(), torch.cat([y, mem_y]), 8, case)
    assert got == set(ref) and len(ref) > 0
    assert all(a < 8 for a, _, _ in got)  # only the batch's rows are anchors


@pytest.mark.parametrize("case", list(CASES))
def test_an_empty_memory_gives_the_plain_batch_loss(case: str) -> None:
    miner, loss, margin = CASES[case]
    e, y = _batch(7, 12, [0, 1, 2])
    t = miner.mine(e, y)
    plain = (triplet_loss(e, t, margin=margin) if loss == "triplet"
             else contrastive_loss(e, t, pos_margin=0.5 if case == "hard_pairs" else 0.0, neg_margin=margin))
    pm = 0.5 if case == "hard_pairs" else 0.0
    for mem in (None, CrossBatchMemory(size=5), CrossBatchMemory(size=5).enqueue(e[:0], y[:0])):
        got = memory_loss(e, y, mem, miner, loss=loss, margin=margin, pos_margin=pm)
        assert got.item() == pytest.approx(plain.item(), rel=1e-12)


def test_memory_smaller_than_the_batch() -> None:
    e, y = _batch(8, 12, [0, 1, 2])
    mem = _filled(3, [_batch(9, 20, [0, 1, 4])])
    assert mem.filled_ == 3
    e.requires_grad_(True)
    got = memory_loss(e, y, mem, SemiHardMiner(), loss="triplet", margin=0.5)
    mem_e, mem_y = mem.contents()
    ref = naive_memory.loss(torch.cat([e, mem_e]), torch.cat([y, mem_y]), 12, "semi_hard", margin=0.5)
    assert got.item() == pytest.approx(ref.item(), rel=1e-10)


def test_nothing_to_mine_still_back_propagates() -> None:
    e = torch.randn(4, 3, requires_grad=True)
    y = torch.zeros(4, dtype=torch.long)  # one class, memory of the same class: no negative anywhere
    mem = CrossBatchMemory(size=4).enqueue(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    for miner, loss in ((BatchHardMiner(), "triplet"), (HardPairMiner(pos_margin=100.0), "contrastive")):
        out = memory_loss(e, y, mem, miner, loss=loss)
        out.backward()
        assert out.item() == 0.0 and e.grad is not None


# --------------------------------------------------------------------------- the training objective


def _objective(**kw: object) -> Objective:
    cfg = TrainConfig(batch_size=12, m_per_class=3, val_fraction=0, normalize=False, **kw)
    net = SiameseNetwork(create_encoder("mlp", in_features=3, embedding_dim=4, batch_norm=False), normalize=False).double()
    return Objective(cfg, net, make_miner(cfg, net))


def test_the_objective_warms_up_then_fills_and_uses_the_memory() -> None:
    obj = _objective(loss="triplet", miner="batch_hard", cross_batch_memory=20, memory_warmup=2)
    plain = _objective(loss="triplet", miner="batch_hard")
    assert obj.memory is not None and obj.memory.size == 20
    batches = [_batch(20 + k, 12, [k, k + 1, k + 2, k + 3]) for k in range(4)]
    for k, (e, y) in enumerate(batches):
        got, ref = obj(e, y), plain(e, y)
        if k <= 2:  # the warm-up (steps 0, 1) and the first step with the memory (still empty)
            assert got.item() == pytest.approx(ref.item(), rel=1e-12)
        else:
            mem_e, mem_y = batches[2]
            want = naive_memory.loss(torch.cat([e, mem_e]), torch.cat([y, mem_y]), 12, "batch_hard", margin=0.2)
            assert got.item() == pytest.approx(want.item(), rel=1e-10)
        assert obj.memory.filled_ == min(20, max(0, k - 1) * 12)


@pytest.mark.parametrize("kw,msg", [
    (dict(loss="mnr", cross_batch_memory=8), "class batches and the triplet or contrastive loss, not 'mnr'"),
    (dict(loss="binary", cross_batch_memory=8), "not 'binary'"),
    (dict(loss="contrastive", batching="pairs", cross_batch_memory=8), "on pairs batches"),
    (dict(cross_batch_memory=-1), "must be >= 0"),
    (dict(cross_batch_memory=8, memory_warmup=-1), "must be >= 0"),
    (dict(cross_batch_memory=8, embedding_dim=32, matryoshka_dims=(16, 32)), "matryoshka_dims"),
])
def test_bad_memory_options_are_refused(kw: dict, msg: str) -> None:
    with pytest.raises(SiamkitError, match=msg):
        TrainConfig(**kw)


def test_a_recipe_file_sets_the_memory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from siamkit.errors import RecipeError
    from siamkit.training.recipes import load_recipe

    text = ('[recipe]\nname = "xbm"\ndescription = "d"\ntask = "classes"\n[input]\nimage_size = [12, 12]\nchannels = 1\n'
            '[train]\nloss = "triplet"\ncross_batch_memory = 16384\nmemory_warmup = 100\n')
    (tmp_path / "xbm.toml").write_text(text)
    r = load_recipe(tmp_path / "xbm.toml")
    assert (r.train.cross_batch_memory, r.train.memory_warmup) == (16384, 100)
    (tmp_path / "bad.toml").write_text(text.replace('loss = "triplet"', 'loss = "mnr"'))
    with pytest.raises(RecipeError, match="triplet or contrastive"):
        load_recipe(tmp_path / "bad.toml")
