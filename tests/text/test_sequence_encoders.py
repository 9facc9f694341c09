"""rnn and transformer_seq encoders: shapes, the padding invariance, masks, bad input,
and the float-sequence files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamkit.data.sequences import pad_sequences, read_sequence_file
from siamkit.encoders import create_encoder, list_encoders
from siamkit.errors import DataError
from siamkit.io import load_model, save_model
from siamkit.network import SiameseNetwork

TOKEN_CONFIGS = [
    ("rnn", dict(cell="gru", pooling="mean")),
    ("rnn", dict(cell="lstm", pooling="max")),
    ("rnn", dict(cell="gru", pooling="last")),
    ("rnn", dict(cell="lstm", pooling="last", bidirectional=False, layers=2)),
    ("transformer_seq", dict(positions="learned", pooling="mean")),
    ("transformer_seq", dict(positions="sinusoidal", pooling="cls")),
]


def _small(name: str, **kw):
    if name == "rnn":
        return create_encoder("rnn", input_dim=8, hidden=6, embedding_dim=5, **kw)
    return create_encoder("transformer_seq", width=8, heads=2, layers=2, ff=16, max_len=32, embedding_dim=5, **kw)


def test_registered():
    assert {"rnn", "transformer_seq", "hf_text"} <= set(list_encoders())


@pytest.mark.parametrize("name,kw", TOKEN_CONFIGS)
def test_more_padding_gives_the_same_embedding(name, kw):
    torch.manual_seed(0)
    enc = _small(name, vocab_size=20, **kw).eval()
    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 8, 9]])
    more = torch.cat([ids, torch.zeros(2, 5, dtype=torch.int64)], dim=1)
    with torch.no_grad():
        a, b = enc(ids), enc(more)
        alone = enc(torch.tensor([[3, 4, 5]]))
    assert a.shape == (2, 5) and enc.embedding_dim == 5
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a[:1], alone, rtol=1e-5, atol=1e-6)
    # the content matters: a different first token changes the embedding
    with torch.no_grad():
        other = enc(torch.tensor([[11, 4, 5, 0], [6, 7, 8, 9]]))
    assert not torch.allclose(other[0], a[0], atol=1e-4)
    torch.testing.assert_close(other[1], a[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,kw", TOKEN_CONFIGS[:1] + TOKEN_CONFIGS[4:5])
def test_float_sequences_with_nan_padding_and_explicit_mask(name, kw):
    torch.manual_seed(0)
    enc = _small(name, in_features=3, **kw).eval()
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(4, 3)), rng.normal(size=(7, 3))]
    batch = pad_sequences(seqs)
    assert batch.shape == (2, 7, 3) and torch.isnan(batch[0, 4:]).all()
    with torch.no_grad():
        e = enc(batch)
        alone = enc(torch.as_tensor(seqs[0], dtype=torch.float32)[None])
        mask = torch.arange(7)[None] < torch.tensor([[4], [7]])
        explicit = enc(torch.nan_to_num(batch, nan=0.0), mask=mask)
    assert torch.isfinite(e).all()
    torch.testing.assert_close(e[:1], alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(e, explicit, rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_weights_and_a_network_round_trips(tmp_path):
    torch.manual_seed(0)
    net = SiameseNetwork(_small("transformer_seq", vocab_size=20), distance="cosine", normalize=True)
    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 8, 9]])
    net.embed(ids).sum().backward()
    assert net.encoder.inp.weight.grad.abs().sum() > 0
    save_model(net.eval(), tmp_path / "m")
    back = load_model(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(back.embed(ids), net.embed(ids))


def test_bad_input_and_arguments():
    enc = _small("rnn", vocab_size=10)
    with pytest.raises(DataError, match="token ids"):
        enc(torch.rand(2, 4))
    with pytest.raises(ValueError, match="exactly one"):
        create_encoder("rnn", vocab_size=10, in_features=3)
    with pytest.raises(ValueError, match="pooling"):
        create_encoder("rnn", vocab_size=10, pooling="median")
    tr = _small("transformer_seq", in_features=3)
    with pytest.raises(DataError, match="float sequences"):
        tr(torch.rand(2, 4, 2))
    with pytest.raises(DataError, match="max_len"):
        _small("transformer_seq", vocab_size=10)(torch.ones(1, 40, dtype=torch.int64))


def test_an_all_padding_row_stays_finite():
    enc = _small("transformer_seq", vocab_size=10).eval()
    with torch.no_grad():
        out = enc(torch.tensor([[0, 0, 0], [1, 2, 0]]))
    assert torch.isfinite(out).all()


def test_sequence_files(tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n1,2\n3,4\n5,6\n")
    np.save(tmp_path / "b.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    assert read_sequence_file(tmp_path / "a.csv").tolist() == [[1, 2], [3, 4], [5, 6]]
    assert read_sequence_file(tmp_path / "b.npy").shape == (3, 2)
    (tmp_path / "bad.csv").write_text("1,2\n3,nan\n")
    with pytest.raises(DataError, match="NaN"):
        read_sequence_file(tmp_path / "bad.csv")
    (tmp_path / "t.csv").write_text("1,2\n3,a\n")
    with pytest.raises(DataError):
        read_sequence_file(tmp_path / "t.csv")
    with pytest.raises(DataError, match="one feature count"):
        pad_sequences([np.zeros((2, 2)), np.zeros((2, 3))])


@pytest.mark.parametrize("name", ["rnn", "transformer_seq"])
def test_the_bag_residual_adds_the_mean_token_embedding(name):
    torch.manual_seed(0)
    plain = _small(name, vocab_size=20).eval()
    torch.manual_seed(0)
    bagged = _small(name, vocab_size=20, bag=True).eval()
    bagged.load_state_dict(plain.state_dict(), strict=False)  # the same weights, + bag_proj
    ids = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 2]])
    with torch.no_grad():
        diff = bagged(ids) - plain(ids)
        # the obvious computation: the mean of the real tokens' embeddings, mapped to the pooled size
        rows = [bagged.inp.weight[r[r != 0]].mean(dim=0) for r in ids]
        expect = torch.stack([bagged.bag_proj(v) for v in rows])
        if not isinstance(bagged.proj, torch.nn.Identity):  # the projection is linear: subtract its bias once
            expect = expect @ bagged.proj.weight.T
    torch.testing.assert_close(diff, expect, rtol=1e-4, atol=1e-5)


def test_token_dropout_only_while_training():
    torch.manual_seed(0)
    enc = _small("rnn", vocab_size=50, token_dropout=0.5)
    ids = torch.randint(3, 50, (4, 12))
    enc.eval()
    with torch.no_grad():
        torch.testing.assert_close(enc(ids), enc(ids))
    captured = []
    enc.inp.register_forward_hook(lambda mod, args, out: captured.append(args[0].clone()))
    enc.train()
    enc(ids)
    seen = captured[-1]
    assert torch.equal(seen[:, 0], ids[:, 0])  # never the first token
    dropped = seen != ids
    assert dropped.any() and torch.all(seen[dropped] == 1)  # dropped words become the unknown id
    assert 0.3 < dropped[:, 1:].float().mean() < 0.7
    with pytest.raises(ValueError, match="token ids"):
        _small("rnn", in_features=3, bag=True)
    with pytest.raises(ValueError, match="token_dropout"):
        _small("transformer_seq", vocab_size=10, token_dropout=1.0)


def test_idf_embedding_init_matches_scikit_learn():
    from sklearn.feature_extraction.text import TfidfVectorizer

    from siamkit.text import scratch_twin
    from siamkit.text.scratch import token_idf
    from siamkit.text.tokenizer import WordTokenizer

    texts = ["a cat sat", "a dog sat down", "the cat, the dog!", "a a a"]
    tok = WordTokenizer().fit(texts)
    idf = token_idf(tok, texts)
    vec = TfidfVectorizer(analyzer=WordTokenizer.words).fit(texts)
    for word, i in vec.vocabulary_.items():
        assert idf[tok.vocab_[word]] == pytest.approx(vec.idf_[i])
    assert idf[0] == 0 and idf[1] == idf[2] == pytest.approx(min(vec.idf_))
    twin = scratch_twin(texts, encoder="rnn", embedding_dim=8, input_dim=256, embedding_init="idf")
    norms = twin.network.encoder.inp.weight.detach().norm(dim=1).numpy()
    assert norms[0] == 0
    ratio = norms[3:] / idf[3:]  # row norm ~ sqrt(width) * idf / mean idf
    assert ratio.std() / ratio.mean() < 0.15
    with pytest.raises(ValueError, match="embedding_init"):
        scratch_twin(texts, embedding_init="lsa")
