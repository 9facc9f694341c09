"""Fixtures of the text tests: a tiny randomly initialised BERT saved to a temporary
folder (2 layers, hidden 32, a 40-word vocabulary) and a tiny text-pair CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

WORDS = ("a man woman is playing guitar piano dog cat runs eats food the on in park "
         "sits table red blue car drives fast slow child reads book sings song").split()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    transformers = pytest.importorskip("transformers", reason="the text extra (transformers) is not installed")
    import torch

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    transformers.BertModel(config).save_pretrained(folder)
    transformers.BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


PAIRS = [
    ("a man is playing guitar", "a man is playing piano", 3.5),
    ("a dog runs in the park", "a cat runs in the park", 3.0),
    ("a woman eats food", "a woman eats food on the table", 4.0),
    ("the car drives fast", "the red car drives fast", 4.5),
    ("a child reads a book", "a man sings a song", 0.5),
    ("a cat sits on the table", "a dog runs in the park", 0.2),
    ("a woman sings a song", "a woman sings", 4.2),
    ("the blue car drives slow", "a child reads", 0.0),
]


@pytest.fixture
def sts_csv(tmp_path) -> Path:
    path = tmp_path / "pairs.csv"
    lines = ["text_a,text_b,score"] + [f"{a},{b},{s}" for a, b, s in PAIRS * 3]
    path.write_text("\n".join(lines) + "\n")
    return path
