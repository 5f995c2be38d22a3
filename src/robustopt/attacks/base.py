"""What every attack shares: the result type, input checks, and model hygiene."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from robustopt.threat import ThreatModel, check_images

__all__ = ["Attack", "AttackResult", "eval_mode", "check_batch", "predict", "success_of"]


@dataclass
class AttackResult:
    """Outcome of one attack on a batch.

    Attributes:
        x_adv: adversarial inputs, same shape/dtype/device as the clean ones.
        success: bool (N,): misclassified (untargeted) or classified as the target.
        grad_evals: forward+backward passes through the attacked model, summed over examples.
        forwards: forward-only passes (queries), summed over examples.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    grad_evals: int = 0
    forwards: int = 0


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


_warned_probabilities: set[int] = set()


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


def _warn_if_probabilities(model: nn.Module, logits: torch.Tensor) -> None:
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
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"y must hold integer class indices (e.g. torch.int64), got dtype {y.dtype}.")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels and inputs do not match: x has {x.shape[0]} examples (shape {tuple(x.shape)}), "
            f"y has shape {tuple(y.shape)}; pass one class index per example."
        )
    if y.device != x.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}; move both to the same device.")


def check_labels(logits: torch.Tensor, y: torch.Tensor, what: str = "labels") -> None:
    classes = logits.shape[1]
    if y.numel() and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{what} must be in [0, {classes - 1}] for a model with {classes} outputs, got {y.min().item()}..{y.max().item()}.")


def success_of(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """bool (N,): misclassified (untargeted) or predicted as ``target`` (targeted)."""
    pred = logits.argmax(dim=1)
    return pred != y if target is None else pred == target


class Attack:
    """Base of all attacks: frozen configuration values, called as ``attack(model, x, y)``.

    Subclasses are frozen dataclasses with a ``threat`` field and implement ``run``.
    Calling an attack mutates neither the attack nor the model (its train/eval
    mode is restored, no parameter gradient is written).
    """

    threat: ThreatModel
    label: str | None

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> AttackResult:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Adversarial examples for ``(x, y)`` against ``model``; see ``run`` for the options."""
        return self.run(model, x, y, **kwargs).x_adv

    # --- how a table row and a JSON file show the attack --------------------------
    @property
    def name(self) -> str:
        return self.label or type(self).__name__

    @property
    def steps(self) -> int | None:
        return getattr(self, "_steps", None)

    @property
    def restarts(self) -> int | None:
        return None

    @property
    def source(self) -> str:
        return "A"

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: type, display name and every configuration field."""
        out: dict[str, Any] = {"type": type(self).__name__, "name": self.name}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, ThreatModel):
                value = {"norm": value.norm, "eps": value.eps, "bounds": list(value.bounds)}
            elif isinstance(value, Attack):
                value = value.describe()
            elif isinstance(value, nn.Module):
                continue
            elif isinstance(value, torch.Tensor):
                value = value.tolist()
            out[f.name] = value
        return out
