"""TextTwin on a tiny random BERT and on the from-scratch word twins: encode, save /
load offline (safetensors + JSON), training with the graded-score losses lowers the
loss, the best validation epoch is kept, binary pairs train with mnr / contrastive."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from siamkit.data.text import read_pair_csv
from siamkit.errors import DataError, ModelFileError
from siamkit.text import TextTwin, WordTokenizer, is_text_model, pretrained_twin, scratch_twin
from siamkit.training.text import TextTrainConfig, fit_text_pairs, text_pair_loss
from tests.text.conftest import PAIRS


def test_pretrained_twin_encodes_and_round_trips_offline(tiny_bert, tmp_path, monkeypatch):
    twin = pretrained_twin(str(tiny_bert), max_length=16)
    assert twin.network.embedding_dim == 32 and twin.network.encoder.pooling == "mean"
    texts = ["a man is playing guitar", "a dog runs", "the red car drives fast on the park"]
    e = twin.encode(texts, batch_size=2)
    assert e.shape == (3, 32) and torch.isfinite(e).all()
    # batching and length sorting do not change an embedding
    torch.testing.assert_close(e[1:2], twin.encode(["a dog runs"]), rtol=1e-5, atol=1e-6)
    twin.save(tmp_path / "m")
    assert is_text_model(tmp_path / "m") and not is_text_model(tmp_path)
    files = sorted(p.name for p in (tmp_path / "m").rglob("*") if p.is_file())
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["extra"]["text"] == {"tokenizer": "pretrained", "max_length": 16, "pretrained": str(tiny_bert)}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the original folder is not needed to load
    moved = tmp_path / "gone"
    tiny_bert.rename(moved)
    try:
        back = TextTwin.load(tmp_path / "m")
    finally:
        moved.rename(tiny_bert)
    torch.testing.assert_close(back.encode(texts), e, rtol=1e-5, atol=1e-6)
    sim = back.similarity(texts[:2], texts[1:])
    assert sim.shape == (2,) and np.all(np.abs(sim) <= 1 + 1e-6)
    with pytest.raises(DataError):
        back.similarity(texts, texts[:1])


@pytest.mark.parametrize("kind", ["pretrained", "rnn"])
def test_encode_in_chunks_sorted_by_token_count_keeps_input_order(tiny_bert, monkeypatch, kind):
    """Chunking, sorting by token count and cutting padding columns change no embedding:
    every text embeds as it does alone, and the rows come back in input order."""
    import siamkit.text.model as text_model

    texts = ["a dog", "the red car drives fast on the park table in the blue song", "a man is playing guitar",
             "a cat", "a child reads a book in the park", "dog", "the man plays", "a red car"]
    twin = (pretrained_twin(str(tiny_bert), max_length=12) if kind == "pretrained"
            else scratch_twin(texts, encoder="rnn", embedding_dim=8))
    alone = torch.cat([twin.encode([t]) for t in texts])
    monkeypatch.setattr(text_model, "ENCODE_CHUNK", 3)  # chunks of 3, 3 and 2 texts
    torch.testing.assert_close(twin.encode(texts, batch_size=2), alone, rtol=1e-5, atol=1e-5)
    lengths = (twin.tokenize(texts) != 0).sum(1)
    assert len(set(lengths.tolist())) > 3  # the texts do differ in token count
    # each batch is as wide as its longest text, and batches group texts by token count
    shapes, embed = [], twin.network.embed
    monkeypatch.setattr(twin.network, "embed", lambda ids: shapes.append(tuple(ids.shape)) or embed(ids))
    monkeypatch.setattr(text_model, "ENCODE_CHUNK", 4096)
    twin.encode(texts, batch_size=2)
    best = sorted(lengths.tolist(), reverse=True)
    assert shapes == [(2, best[i]) for i in range(0, len(texts), 2)]


def test_truncation_at_max_length(tiny_bert):
    twin = pretrained_twin(str(tiny_bert), max_length=5)
    assert twin.tokenize(["a man is playing guitar on the table in the park"]).shape[1] == 5


def test_loading_refuses_non_text_and_damaged_folders(tiny_bert, tmp_path):
    with pytest.raises(ModelFileError):
        TextTwin.load(tmp_path / "missing")
    twin = scratch_twin(["a b c"], encoder="rnn", embedding_dim=8)
    twin.save(tmp_path / "w")
    (tmp_path / "w" / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelFileError):
        TextTwin.load(tmp_path / "w")


@pytest.mark.parametrize("loss", ["cosent", "angle", "cosine"])
def test_fine_tuning_with_graded_losses_fits_the_training_pairs(tiny_bert, sts_csv, tmp_path, loss):
    pairs = read_pair_csv(sts_csv)
    twin = pretrained_twin(str(tiny_bert), max_length=16)
    config = TextTrainConfig(loss=loss, epochs=10, batch_size=8, lr=2e-3, warmup=0.1)
    history = fit_text_pairs(twin, pairs, config=config, val=pairs, out_dir=tmp_path, progress=False)
    assert len(history) == 10 and history[-1]["loss"] < history[0]["loss"]
    best = max(h["val_score"] for h in history)
    assert best > 0.5  # Spearman on the pairs it learnt
    back = TextTwin.load(tmp_path / "model")
    from siamkit.evaluation.text import text_pair_metrics

    assert text_pair_metrics(back.similarity(pairs.texts_a, pairs.texts_b), pairs)["spearman"] == pytest.approx(best)


@pytest.mark.parametrize("encoder", ["rnn", "transformer_seq"])
def test_scratch_twins_learn_and_save_their_vocabulary(sts_csv, tmp_path, encoder):
    pairs = read_pair_csv(sts_csv)
    twin = scratch_twin(pairs.texts_a + pairs.texts_b, encoder=encoder, embedding_dim=16, max_length=12)
    assert isinstance(twin.tokenizer, WordTokenizer) and twin.tokenizer.vocab_size > 10
    history = fit_text_pairs(twin, pairs, config=TextTrainConfig(epochs=8, batch_size=8, lr=3e-3, warmup=0.0),
                             progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    twin.save(tmp_path / "s")
    back = TextTwin.load(tmp_path / "s")
    assert back.tokenizer.vocab_ == twin.tokenizer.vocab_
    torch.testing.assert_close(back.encode(["a man is playing guitar"]), twin.encode(["a man is playing guitar"]))


def test_word_tokenizer():
    tok = WordTokenizer(max_vocab=6).fit(["b a, a", "a c"])
    assert tok.vocab_ == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "a": 3, ",": 4, "b": 5}
    ids = tok(["a zzz", ""], max_length=8)
    assert ids.tolist() == [[2, 3, 1], [2, 0, 0]]
    assert tok(["a a a a"], max_length=3).tolist() == [[2, 3, 3]]


def test_binary_losses_and_bad_combinations():
    e1, e2 = torch.randn(6, 8), torch.randn(6, 8)
    labels = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    for loss in ("mnr", "contrastive", "cosent"):
        out = text_pair_loss(e1, e2, labels, TextTrainConfig(loss=loss), binary=True)
        assert torch.isfinite(out) and out.item() > 0
    with pytest.raises(DataError, match="binary"):
        text_pair_loss(e1, e2, labels, TextTrainConfig(loss="contrastive"), binary=False)
    with pytest.raises(DataError, match="loss"):
        TextTrainConfig(loss="triplet")


def test_too_few_pairs(tiny_bert, sts_csv):
    pairs = read_pair_csv(sts_csv)
    twin = scratch_twin(pairs.texts_a, embedding_dim=8)
    with pytest.raises(DataError, match="fewer than one batch"):
        fit_text_pairs(twin, pairs.subset(np.arange(3)), config=TextTrainConfig(batch_size=8), progress=False)


def test_step_evaluation_keeps_the_best_weights_including_the_start(tiny_bert, sts_csv, tmp_path):
    """eval_every scores the validation pairs every N steps; eval_at_start makes the
    starting weights a candidate, so a run that only hurts returns them unchanged."""
    from siamkit.evaluation.text import text_pair_metrics

    pairs = read_pair_csv(sts_csv)  # 24 pairs: 3 steps of 8 per epoch
    twin = pretrained_twin(str(tiny_bert), max_length=16)
    start = {k: v.clone() for k, v in twin.network.state_dict().items()}
    start_score = text_pair_metrics(twin.similarity(pairs.texts_a, pairs.texts_b), pairs)["spearman"]
    # the validation targets reversed: learning the training pairs can only lower this score
    flipped = type(pairs)(pairs.texts_a, pairs.texts_b, 5.0 - pairs.targets, pairs.binary)
    config = TextTrainConfig(epochs=3, batch_size=8, lr=5e-3, warmup=0.0, eval_every=2, eval_at_start=True,
                             freeze_embeddings=True)
    history = fit_text_pairs(twin, pairs, config=config, val=flipped, out_dir=tmp_path, progress=False)
    evals = [e for h in history for e in h["evals"]]
    assert [e["step"] for e in evals] == [2, 3, 4, 6, 8, 9]  # every 2 steps and each epoch's end
    assert history[-1]["loss"] < history[0]["loss"]  # it did learn the training pairs
    saved = json.loads((tmp_path / "model" / "config.json").read_text())["extra"]["evals"]
    assert saved[0] == {"step": 0, "val_score": pytest.approx(-start_score)}
    final = text_pair_metrics(twin.similarity(flipped.texts_a, flipped.texts_b), flipped)["spearman"]
    assert final == pytest.approx(max(e["val_score"] for e in saved))  # the best candidate's weights
    if max(e["val_score"] for e in evals) <= -start_score:
        for k, v in twin.network.state_dict().items():  # the start was best: its weights come back
            torch.testing.assert_close(v, start[k])
    assert all(p.requires_grad for p in twin.network.parameters())  # frozen for the run only
    with pytest.raises(DataError):
        TextTrainConfig(eval_every=0)


def test_monitor_pairs_are_recorded_but_never_choose_the_weights(tiny_bert, sts_csv, tmp_path):
    """fit_text_pairs(monitor=...) scores extra pairs (a benchmark's test curve) at every
    evaluation; the weights kept are the same as without them."""
    pairs = read_pair_csv(sts_csv)
    flipped = type(pairs)(pairs.texts_a, pairs.texts_b, 5.0 - pairs.targets, pairs.binary)
    config = TextTrainConfig(epochs=2, batch_size=8, lr=5e-3, warmup=0.0, eval_every=2, eval_at_start=True)
    runs = []
    for monitor in (None, pairs):
        twin = pretrained_twin(str(tiny_bert), max_length=16)
        history = fit_text_pairs(twin, pairs, config=config, val=flipped, monitor=monitor, progress=False)
        runs.append((twin, [e for h in history for e in h["evals"]]))
    (plain, plain_evals), (watched, evals) = runs
    assert all("monitor_score" not in e for e in plain_evals)
    assert [e["val_score"] for e in evals] == pytest.approx([e["val_score"] for e in plain_evals])
    for e in evals:  # the monitor score is the pairs' own Spearman at that step (flipped: minus the validation score)
        assert e["monitor_score"] == pytest.approx(-e["val_score"])
    for k, v in watched.network.state_dict().items():
        torch.testing.assert_close(v, plain.network.state_dict()[k])


def test_wise_ft_chooses_the_mix_on_validation_pairs_and_saves_it(tiny_bert, sts_csv, tmp_path):
    """wise_ft: after training, mixes of the start and the fine-tune are scored on the
    validation pairs; the best one is the model kept and saved (1.0 = the fine-tune)."""
    from siamkit.evaluation.text import text_pair_metrics

    pairs = read_pair_csv(sts_csv)
    twin = pretrained_twin(str(tiny_bert), max_length=16)
    config = TextTrainConfig(epochs=2, batch_size=8, lr=5e-3, warmup=0.0, eval_at_start=True, wise_ft=True)
    fit_text_pairs(twin, pairs, config=config, val=pairs, monitor=pairs, out_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "model" / "config.json").read_text())["extra"]["evals"]
    mixes = [e for e in saved if "alpha" in e]
    assert [e["alpha"] for e in mixes] == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert mixes[-1]["val_score"] == pytest.approx(max(e["val_score"] for e in saved if "alpha" not in e))
    for e in mixes:  # the monitor (here the same pairs) is recorded for every mix
        assert e["monitor_score"] == pytest.approx(e["val_score"])
    best = max(e["val_score"] for e in mixes)
    final = text_pair_metrics(twin.similarity(pairs.texts_a, pairs.texts_b), pairs)["spearman"]
    assert final == pytest.approx(best)
    reloaded = TextTwin.load(tmp_path / "model")
    assert text_pair_metrics(reloaded.similarity(pairs.texts_a, pairs.texts_b), pairs)["spearman"] == pytest.approx(best)
