"""Low-precision inputs: an attack on float16 or bfloat16 inputs works in float32, and its points
are rounded back into the ball in the input's dtype."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch
from torch import nn

from robustopt.attacks.passes import predict
from robustopt.attacks.search import Best, Cost, success_of

__all__ = ["LOW_PRECISION", "Float32Inputs", "options_in_float32", "round_into_ball", "cast_result"]

R = TypeVar("R")

LOW_PRECISION = (torch.float16, torch.bfloat16)


class Float32Inputs(nn.Module):
    """``model`` seen from an attack that works in float32: inputs cast to ``dtype``, logits to float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> Any:
        out = self.model(x.to(self.dtype))
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out


def options_in_float32(options: dict[str, Any]) -> dict[str, Any]:
    """The call options with floating tensors (e.g. ``start``) in float32."""
    return {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in options.items()}


@torch.no_grad()
def round_into_ball(best: Best, x: torch.Tensor, dtype: torch.dtype, model: nn.Module, y: torch.Tensor,
                     target: torch.Tensor | None, cost: Cost) -> None:
    """Make the best points exact in ``dtype``, each coordinate rounded toward the clean ``x``.

    Rounding toward ``x`` never moves a coordinate farther from it, so a point inside the ball and
    the box (which holds ``x``) stays inside in ``dtype``; rounding to nearest does not. A point that
    moved off the one the model scored is scored again (one forward pass, counted).
    """
    points = best.x
    nearest = points.to(dtype)
    away = (nearest.float() - x).abs() > (points - x).abs()
    rounded = torch.where(away, torch.nextafter(nearest, x.to(dtype)), nearest).float()
    success = best.success.clone()
    rows = away.flatten(1).any(dim=1).nonzero().squeeze(1)
    if len(rows):
        logits = predict(model, rounded[rows])
        success[rows] = success_of(logits, y[rows], None if target is None else target[rows])
        cost.add(rows, forwards=1)
    best.put(torch.arange(len(x), device=x.device), rounded, success, best.value.clone())


def cast_result(result: R, x: torch.Tensor, dtype: torch.dtype | None) -> R:
    """``result`` (a dataclass, e.g. ``AttackResult``) with its points (tensors shaped like ``x``) in ``dtype``.

    ``dtype`` None: ``result`` as it is.
    """
    if dtype is not None:
        for f in dataclasses.fields(result):
            value = getattr(result, f.name)
            if isinstance(value, torch.Tensor) and value.shape == x.shape and value.dtype == x.dtype:
                setattr(result, f.name, value.to(dtype))
    return result

