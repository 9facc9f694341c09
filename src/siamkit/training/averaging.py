"""Weight interpolation between a starting model and its fine-tuned self (WiSE-FT).

Wortsman et al. 2022 ("Robust fine-tuning of zero-shot models", CVPR) found that the
weights ``(1 - alpha) * start + alpha * tuned`` of a pretrained model and its fine-tune
often beat both on the fine-tuning task's own test data and under distribution shift:
fine-tuning on a small set moves the weights further than the task needs. The mix is
chosen here on validation pairs (never on test), over a fixed grid that includes
``alpha = 1`` (the fine-tuned model as it is): on a tie the fine-tuned model is kept.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from ..errors import DataError

__all__ = ["WISE_ALPHAS", "choose_interpolation", "interpolate_state"]

WISE_ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""The mixes tried by :func:`choose_interpolation` by default (1.0 = the fine-tuned model)."""


def interpolate_state(
    start: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * tuned`` for every floating-point tensor.

    Args:
        start: the starting (pretrained) state dict.
        tuned: the fine-tuned state dict, same keys and shapes.
        alpha: the weight of ``tuned`` in [0, 1] (0 = ``start``, 1 = ``tuned``, both exact).

    Returns:
        The mixed state dict. Integer / boolean buffers (counters, masks, position ids)
        are taken from ``tuned``.

    Raises:
        DataError: ``alpha`` outside [0, 1], or the two states have other keys or shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"alpha must be in [0, 1], got {alpha}")
    if set(start) != set(tuned):
        diff = sorted(set(start) ^ set(tuned))
        raise DataError(f"the two models have other weights: {diff[:5]}{' ...' if len(diff) > 5 else ''}")
    out: dict[str, torch.Tensor] = {}
    for key, t in tuned.items():
        s = start[key]
        if s.shape != t.shape:
            raise DataError(f"weight {key!r} has shape {tuple(s.shape)} in one model and {tuple(t.shape)} in the other")
        if t.is_floating_point():
            out[key] = torch.lerp(s.to(t.dtype), t, alpha)  # exact at 0 and 1 (torch's two-sided formula)
        else:
            out[key] = t.clone()
    return out


def choose_interpolation(
    model: torch.nn.Module,
    start: Mapping[str, torch.Tensor],
    score: Callable[[], float],
    alphas: Sequence[float] = WISE_ALPHAS,
) -> tuple[float, list[dict[str, float]]]:
    """Load the best-scoring mix of ``start`` and ``model``'s current (fine-tuned) weights.

    Args:
        model: holds the fine-tuned weights; it ends with the chosen mix loaded.
        start: the starting (pretrained) weights, e.g. a copy of ``state_dict()`` taken
            before fine-tuning.
        score: scores the model as loaded now on validation data, higher = better.
        alphas: the mixes to try (each in [0, 1]; 1.0 is added when missing).

    Returns:
        (the chosen alpha, one record {alpha, val_score} per mix tried).
    """
    grid = sorted({float(a) for a in alphas} | {1.0})
    tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    records: list[dict[str, float]] = []
    best: tuple[float, float] | None = None  # (score, alpha)
    for alpha in reversed(grid):  # 1.0 first: on a tie the fine-tuned model stays
        model.load_state_dict(interpolate_state(start, tuned, alpha))
        value = float(score())
        records.append({"alpha": alpha, "val_score": value})
        if best is None or value > best[0]:
            best = (value, alpha)
    assert best is not None
    model.load_state_dict(interpolate_state(start, tuned, best[1]))
    return best[1], sorted(records, key=lambda r: r["alpha"])
