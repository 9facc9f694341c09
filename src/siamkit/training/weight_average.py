"""An exponential moving average of the weights while training (``TrainConfig.ema``).

The average of the last ~``1 / (1 - decay)`` steps' weights usually lies in a flatter
region of the loss than the last step's weights, and often generalises better (Polyak
and Juditsky 1992; Izmailov et al. 2018, "Averaging weights leads to wider optima and
better generalization"; timm's ``ModelEmaV2``): some of an ensemble's gain at one
network's cost. The average is torch's own
:class:`torch.optim.swa_utils.AveragedModel`, buffers included, so batch-norm
statistics follow the averaged weights with no extra pass to re-estimate them. Its
update is an EMA with TensorFlow's warm-up (``tf.train.ExponentialMovingAverage`` with
``num_updates``): the decay of update n (n = 1, 2, ...) is ``min(decay, (1 + n) / (10 + n))``, so
that on a short run the average is not dominated by the random initial weights
(without it, 0.98 ** 15 = 74% of the average after a 15-step epoch would still be the
initialisation).

How the fit loop uses it: the average is updated after every optimiser step; at the
end of every epoch :func:`averaged_weights` swaps it into the network for validation
and the callbacks (the best epoch, the saved model, the health probe and your own
callbacks all see the average: it is the model you get), then swaps the training
weights back. The checkpoint stores both (:mod:`siamkit.training.checkpoint`), so a
resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
from torch.optim.swa_utils import AveragedModel

__all__ = ["WeightAverage", "averaged_weights", "warmed_decay"]


def warmed_decay(decay: float, n: int) -> float:
    """The decay of the n-th update after the first (which copies the network).

    Args:
        decay: the configured decay.
        n: updates averaged so far (>= 1).

    Returns:
        ``min(decay, (1 + n) / (10 + n))``.
    """
    return min(decay, (1.0 + n) / (10.0 + n))


class WeightAverage:
    """The running exponential average of a network's weights and buffers.

    Args:
        network: the network being trained (deep-copied: the copy holds the average).
        decay: the weight of the old average at every update, in (0, 1), after the
            warm-up (:func:`warmed_decay`); the first update copies the network.
    """

    def __init__(self, network: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.model = AveragedModel(network, multi_avg_fn=self._ema, use_buffers=True)

    @torch.no_grad()
    def _ema(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        """AveragedModel's ``multi_avg_fn``: one EMA step over tensors of one device and dtype."""
        d = warmed_decay(self.decay, int(n))
        for a, c in zip(averaged, current):
            if a.is_floating_point():
                a.lerp_(c, 1.0 - d)  # a <- d * a + (1 - d) * c, as torch's get_ema_multi_avg_fn
            else:  # integer buffers (batch norm's step counter): kept from the network
                a.copy_(c)

    @property
    def updates(self) -> int:
        """How many steps have been averaged in."""
        return int(self.model.n_averaged.item())

    def update(self, network: torch.nn.Module) -> None:
        """Average in the network's weights after an optimiser step.

        Args:
            network: the network being trained (same architecture).

        Returns:
            None.
        """
        self.model.update_parameters(network)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The average's weights, buffers and update count (a copy, for the checkpoint)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned.

        Args:
            state: the saved average.

        Returns:
            None.
        """
        self.model.load_state_dict(dict(state))

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged network's own state dict (the keys of the network)."""
        return self.model.module.state_dict()


@contextmanager
def averaged_weights(state: Any) -> Iterator[None]:
    """Within the block, ``state.network`` holds the averaged weights and
    ``state.training_weights`` the training weights; after it, the training weights again.

    Args:
        state: the run (:class:`~siamkit.training.callbacks.TrainState`); without an
            average (``state.averaged`` None, or nothing averaged yet) the block runs
            on the network as it is.

    Returns:
        A context manager.
    """
    avg = state.averaged
    if avg is None or avg.updates == 0:
        yield
        return
    training = {k: v.detach().clone() for k, v in state.network.state_dict().items()}
    state.network.load_state_dict(avg.weights())
    state.training_weights = training
    try:
        yield
    finally:
        state.network.load_state_dict(training)
        state.training_weights = None
