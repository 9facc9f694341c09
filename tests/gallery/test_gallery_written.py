"""An enrolment whose identity another process removes right after the commit still
answers with the record of what it wrote (it was acknowledged), not "not enrolled"."""

from __future__ import annotations

from typing import Any

import torch

from siamkit import SiameseNetwork, create_encoder
from siamkit.gallery import Gallery
from siamkit.gallery.written import record_after_write


def test_record_of_a_write_removed_in_between(where: Any) -> None:
    torch.manual_seed(0)
    net = SiameseNetwork(create_encoder("mlp", in_features=4, embedding_dim=4, hidden=[]), input_spec={"shape": [4]}).eval()
    with Gallery.open(where(), net) as a, Gallery.open(where(), net) as b:
        r = a.enroll("x", torch.randn(2, 4), metadata={"m": 1})
        ids = [s.id for s in r.samples]
        kept = [s for batch in a.store.iter_stored_samples() for _, s in batch]
        assert record_after_write(a, "x", ids, kept) == a.get("x")  # still there: the stored record
        b.remove("x")
        gone = record_after_write(a, "x", ids, kept)
        assert gone.identity == "x" and gone.n_samples == 2 and [s.id for s in gone.samples] == ids
        assert [s.format for s in gone.samples] == ["float32", "float32"] and all(s.has_input for s in gone.samples)
