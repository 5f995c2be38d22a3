"""How an attack calls the model: in eval mode, with checked outputs, and the input gradient
of an objective (averaged over the model's randomness with EOT); whether a model is random;
in batches of bounded size.

Example:
    >>> with eval_mode(model), torch.no_grad():
    ...     logits = predict(model, x)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Iterator

import torch
from torch import nn

__all__ = ["eval_mode", "predict", "value_and_grad", "value_at", "output_change", "is_randomized", "RANDOM_TOLERANCE",
           "RANDOM_DRAWS", "success_share", "InBatches", "batches"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode and restore the mode of every submodule afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


class InBatches(nn.Module):
    """``model`` run on at most ``batch_size`` inputs at a time, each batch's logits checked (``predict``) and
    concatenated.

    Bounds the memory of forward-only passes on a call larger than a batch. A gradient pass
    through it still keeps every batch's graph: callers that need bounded gradient passes run
    them batch by batch themselves (:func:`batches`).
    """

    def __init__(self, model: nn.Module, batch_size: int) -> None:
        super().__init__()
        self.model, self.batch_size = model, batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) <= self.batch_size:
            return self.model(x)
        return torch.cat([predict(self.model, x[part]) for part in batches(len(x), self.batch_size)])  # checked


def batches(n: int, batch_size: int | None) -> list[slice]:
    """Consecutive slices of at most ``batch_size`` covering ``range(n)`` (one slice when None)."""
    size = n if batch_size is None else batch_size
    return [slice(i, i + size) for i in range(0, n, max(size, 1))] or [slice(0, 0)]


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` on ``x`` with shape checks and clear errors. Does not touch grad mode."""
    try:
        logits = model(x)
    except RuntimeError as err:
        raise ValueError(
            f"the model failed on inputs of shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}: {err}. "
            "Check that the model and the data are on the same device and the input shape is what it expects."
        ) from err
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (N, classes) = ({x.shape[0]}, C), got {shape}.")
    return logits


def value_and_grad(
    model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], eot: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The objective and its input gradient at ``x``, averaged over ``eot`` draws of the model's randomness.

    Expectation over Transformation (Athalye et al. 2018, "Obfuscated Gradients Give a False Sense
    of Security"): a randomized model is attacked through the mean of ``eot`` forward+backward
    passes; with ``eot=1`` it is one pass. Only the input gradient is computed.

    Args:
        model: maps ``x`` to logits (N, C).
        x: the points (N, ...); not modified.
        objective: ``logits -> Tensor[N]`` to differentiate (summed over the batch).
        eot: draws to average, >= 1; each costs one forward+backward pass.

    Returns:
        ``(value, grad, logits)``: the mean objective (N,), the mean gradient (shape of ``x``) and
        the mean logits (N, C), all detached.
    """
    value = grad = logits = None
    with torch.enable_grad():
        for _ in range(eot):
            point = x.detach().requires_grad_(True)
            z = predict(model, point)
            v = objective(z)
            (g,) = torch.autograd.grad(v.sum(), point)
            v, z = v.detach(), z.detach()
            value, grad, logits = (v, g, z) if value is None else (value + v, grad + g, logits + z)
    if eot > 1:
        value, grad, logits = value / eot, grad / eot, logits / eot
    return value, grad, logits


def value_at(
    model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], eot: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(value, logits)`` of :func:`value_and_grad` without the gradient: ``eot`` forward passes, no graph."""
    value = logits = None
    with torch.no_grad():
        for _ in range(eot):
            z = predict(model, x)
            v = objective(z)
            value, logits = (v, z) if value is None else (value + v, logits + z)
    return (value / eot, logits / eot) if eot > 1 else (value, logits)


RANDOM_DRAWS = 10  # forward passes that judge each point of a randomized model
RANDOM_TOLERANCE = 1e-4  # relative change between two passes that non-deterministic kernels stay under


def output_change(a: torch.Tensor, b: torch.Tensor) -> tuple[float, bool]:
    """The largest change between two forward passes' logits on the same inputs, and whether the model is random.

    Finite entries only; random means a change above ``RANDOM_TOLERANCE`` times the largest logit
    (at least 1), beyond what non-deterministic GPU kernels produce.
    """
    if not a.numel():
        return 0.0, False
    finite = torch.isfinite(a) & torch.isfinite(b)
    diff = float((a - b).abs().masked_fill(~finite, 0).max())
    scale = float(a.abs().masked_fill(~finite, 0).max().clamp_min(1.0))
    return diff, diff > RANDOM_TOLERANCE * scale


def is_randomized(model: nn.Module, x: torch.Tensor, probe: int = 32) -> bool:
    """Whether two forward passes of ``model`` (in eval mode) on the first ``probe`` inputs of ``x`` differ.

    Example:
        >>> is_randomized(model, x)   # True for a model with input noise, dropout in eval mode, ...
    """
    with eval_mode(model), torch.no_grad():
        a, b = predict(model, x[:probe]), predict(model, x[:probe])
    return output_change(a, b)[1]


def success_share(model: nn.Module, x: torch.Tensor, success: Callable[[torch.Tensor], torch.Tensor],
                  draws: int = RANDOM_DRAWS) -> torch.Tensor:
    """float (N,): the share of ``draws`` forward passes on ``x`` where ``success(logits)`` holds.

    How a point is judged on a randomized model (one draw of its randomness proves little:
    ``evaluate`` counts it broken above one half); with ``draws=1`` one pass, 0 or 1.
    """
    with torch.no_grad():
        hits = sum(success(predict(model, x)).long() for _ in range(draws))
    return hits.float() / draws
