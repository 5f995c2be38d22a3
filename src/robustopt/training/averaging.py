"""Weight averaging: an exponential moving average (EMA) of a model's weights during training.

Averaging the weights along the training trajectory (Polyak averaging; for adversarial training,
Gowal et al. 2020, "Uncovering the limits of adversarial training against norm-bounded adversarial
examples", Sec. 4.4) gives a model that is often more robust than the last iterate, at the cost of
one in-place update of a copy per optimizer step. :func:`robustopt.training.fit` keeps one when
``TrainConfig.ema_decay > 0`` and treats it as *the* model: validation, the guard, early stopping
and the saved weights are the average's; the weights being trained are resume state.

Example:
    >>> average = WeightAverage(model, decay=0.999)
    >>> for batch in batches:
    ...     train_step(model, batch)
    ...     average.update(model)
    >>> evaluate(average.model)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """Exponential moving average of every floating-point tensor of a model's state dict.

    After update ``n`` (counted from 1) the average is ``a <- d_n * a + (1 - d_n) * w`` with
    ``d_n = min(decay, n / (n + 9))``: the warm-up of TensorFlow's ``ExponentialMovingAverage``
    (``num_updates``), so that the first steps, far from the final weights, fade quickly in
    short runs. Batch-norm running statistics are floating-point buffers and are averaged too;
    integer buffers (``num_batches_tracked``) are copied.

    Attributes:
        model: the averaged model, a copy of the trained one in eval mode, without gradients.
        decay: the decay ``d`` in (0, 1).
        updates: the number of updates so far.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        """Start the average at the current weights of ``model``.

        Raises:
            ValueError: ``decay`` is not in (0, 1).
        """
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), e.g. 0.999, got {decay}.")
        self.decay = float(decay)
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the current weights of ``model`` (the model it was made from)."""
        self.updates += 1
        d = min(self.decay, self.updates / (self.updates + 9))
        current = model.state_dict()
        for name, averaged in self.model.state_dict().items():
            weights = current[name].detach()
            if averaged.is_floating_point():
                averaged.lerp_(weights.to(averaged.dtype), 1 - d)
            else:
                averaged.copy_(weights)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights (copied) and the update count, for a restore point."""
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return {"weights": weights, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        self.model.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
