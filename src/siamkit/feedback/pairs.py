"""Feedback records -> labelled pairs of images (the hard examples of fine-tuning).

- a ``verify`` report is the pair itself with its true label;
- an ``identity_verify`` report pairs the probe with every stored sample of the claimed
  identity (genuine or impostor as reported);
- an ``identify`` report pairs the probe with the true identity's samples (genuine) and
  with the wrongly predicted identity's samples (impostor).

The last two need the gallery to read the stored samples; without it they are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..data.decode import decode_image_bytes
from ..errors import SiamkitError
from ..network import InputSpec

__all__ = ["FeedbackPairs", "feedback_pairs"]

_Pair = tuple[torch.Tensor, torch.Tensor, bool]


@dataclass
class FeedbackPairs:
    """Pairs built from feedback.

    Attributes:
        a, b: the two images of each pair, uint8 in the model's input shape.
        same: True for a genuine pair.
        source: the feedback id each pair came from.
        used_ids: the feedback ids that gave at least one pair.
        skipped: feedback id -> why it gave no pair.

    Shapes:
        a (P, C, H, W), b (P, C, H, W), same (P,) bool, source (P,) long.
    """

    a: torch.Tensor
    b: torch.Tensor
    same: torch.Tensor
    source: torch.Tensor
    used_ids: list[int]
    skipped: dict[int, str]

    def __len__(self) -> int:
        return int(self.same.shape[0])


def _gallery_samples(gallery: Any, identity: str, spec: InputSpec) -> list[torch.Tensor]:
    """The stored inputs of one identity's samples, in the model's input shape."""
    ids = {s.id for s in gallery.get(identity).samples}
    out = []
    for batch in gallery.store.iter_stored_samples(256):
        for sid, s in batch:
            if sid not in ids or s is None:
                continue
            if s.format.startswith("file:"):
                out.append(decode_image_bytes(s.data, spec))
            else:
                arr = torch.from_numpy(s.array().copy())
                if arr.dtype != torch.uint8 or tuple(arr.shape) != (spec.channels, spec.height, spec.width):
                    continue
                out.append(arr)
    return out


def _add_gallery_pairs(r: Any, probe: torch.Tensor, spec: InputSpec, gallery: Any, got: list[_Pair]) -> None:
    """Append the (image, image, same) pairs of one gallery-backed report to ``got``."""
    if r.kind == "identity_verify":
        got += [(probe, s, bool(r.truth["same"])) for s in _gallery_samples(gallery, r.identity, spec)]
        return
    true_id = r.truth.get("identity")
    wrong = r.predicted.get("identity")
    if true_id and true_id != "unknown" and true_id in gallery:
        got += [(probe, s, True) for s in _gallery_samples(gallery, true_id, spec)]
    if wrong and wrong != true_id and wrong != "unknown" and wrong in gallery:
        got += [(probe, s, False) for s in _gallery_samples(gallery, wrong, spec)]


def feedback_pairs(records: list[Any], network: Any, *, gallery: Any = None) -> FeedbackPairs:
    """Turn feedback records into labelled pairs (see the module doc).

    Args:
        records: :class:`~siamkit.feedback.FeedbackRecord` rows.
        network: the model whose input spec the images are decoded to (an image model).
        gallery: an open :class:`~siamkit.gallery.Gallery` for identify /
            identity_verify reports (None: those are skipped).

    Returns:
        The pairs, with the ids used and the reasons others were skipped.

    Raises:
        DataError: the network does not take images.
    """
    spec = network.input_spec.require_image()
    pairs: list[_Pair] = []
    src: list[int] = []
    used: list[int] = []
    skipped: dict[int, str] = {}
    for r in records:
        got: list[_Pair] = []
        try:
            probe = decode_image_bytes(r.image_a, spec)
            if r.kind == "verify":
                got.append((probe, decode_image_bytes(r.image_b, spec), bool(r.truth["same"])))
            elif gallery is None:
                skipped[r.id] = f"{r.kind} feedback needs the gallery (--gallery) to read the enrolled samples"
                continue
            else:
                _add_gallery_pairs(r, probe, spec, gallery, got)
            if got:
                used.append(r.id)
            else:
                skipped[r.id] = "no pair could be built (identities no longer enrolled?)"
        except SiamkitError as e:  # the pairs built before the error are kept; the report is not marked used
            skipped[r.id] = str(e)
        pairs += got
        src += [r.id] * len(got)
    if not pairs:
        empty = torch.zeros((0, spec.channels, spec.height, spec.width), dtype=torch.uint8)
        return FeedbackPairs(empty, empty.clone(), torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.long), used, skipped)
    return FeedbackPairs(
        torch.stack([p[0] for p in pairs]),
        torch.stack([p[1] for p in pairs]),
        torch.tensor([p[2] for p in pairs]),
        torch.tensor(src, dtype=torch.long),
        used,
        skipped,
    )
