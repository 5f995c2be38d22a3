"""The checks of an attack's inputs: images and labels, explicit targets, and the model's first
outputs (class indices in range; a warning for outputs that look like probabilities)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robustopt.threat import ThreatModel, check_images

__all__ = ["check_batch", "check_targets", "check_labels", "warn_if_probabilities", "first_logits_check"]

_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_warned_probabilities: set[int] = set()


def warn_if_probabilities(model: nn.Module, logits: torch.Tensor) -> None:
    """Warn once per model when its outputs are in [0, 1] and sum to 1 (probabilities, not logits)."""
    with torch.no_grad():
        looks_like = logits.numel() > 0 and bool(
            (logits >= 0).all() and (logits <= 1).all() and torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=1e-3)
        )
    if looks_like and id(model) not in _warned_probabilities:
        _warned_probabilities.add(id(model))
        warnings.warn(
            "the model's outputs are in [0, 1] and sum to 1: they look like probabilities, not logits. "
            "Remove the final softmax; gradients through a softmax vanish and attacks then look weaker "
            "than they are (a classic cause of false robustness).",
            UserWarning,
            stacklevel=3,
        )


def check_batch(x: torch.Tensor, y: torch.Tensor, threat: ThreatModel | None = None) -> None:
    """Validate a batch of images and labels before attacking or evaluating."""
    check_images(x, threat.bounds if threat is not None else (0.0, 1.0))
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}.")
    if y.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"y must hold integer class indices (e.g. torch.int64), got dtype {y.dtype}.")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels and inputs do not match: x has {x.shape[0]} examples (shape {tuple(x.shape)}), "
            f"y has shape {tuple(y.shape)}; pass one class index per example."
        )
    if y.device != x.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}; move both to the same device.")


def check_targets(targets: Any, y: torch.Tensor) -> torch.Tensor:
    """Explicit target classes as a long tensor on y's device; their range is checked on the first logits."""
    if not isinstance(targets, torch.Tensor) or targets.shape != y.shape:
        raise ValueError(f"targets must be a tensor of shape {tuple(y.shape)} (one class per example).")
    if targets.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"targets must hold integer class indices, got dtype {targets.dtype}.")
    return targets.to(device=y.device, dtype=torch.long)


def check_labels(logits: torch.Tensor, y: torch.Tensor, what: str = "labels") -> None:
    """Raise a clear error unless every class index in ``y`` is an output of the model."""
    classes = logits.shape[1]
    if y.numel() and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{what} must be in [0, {classes - 1}] for a model with {classes} outputs, got {y.min().item()}..{y.max().item()}.")


def first_logits_check(model: nn.Module, y: torch.Tensor, targets: torch.Tensor | None) -> Callable[[torch.Tensor], None]:
    """A check of labels, targets and outputs that runs on the first logits it sees, once."""
    done = False

    def check(logits: torch.Tensor) -> None:
        nonlocal done
        if not done:
            check_labels(logits, y)
            warn_if_probabilities(model, logits)
            if targets is not None:
                check_labels(logits, targets, "targets")
            done = True

    return check
