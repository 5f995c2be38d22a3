"""Black-box transfer attacks: craft on a source model, evaluate on the target."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustopt.attacks.base import Attack, AttackResult, check_batch, eval_mode, predict, success_of

__all__ = ["Transfer"]


@dataclass(frozen=True)
class Transfer(Attack):
    """Adversarial examples crafted white-box on ``source_model``, then shown to the target.

    This is the paper's black-box setting (Madry et al. 2018, Tables 1-2: sources
    A', B and A_nat). The target model is only queried once, to score success.

    Args:
        source_model: the model the inner ``attack`` differentiates.
        attack: any attack, e.g. ``PGD(Linf(0.3), steps=40)``.
        source_name: how the source is named in tables, e.g. "A'", "B", "A_nat".
        label: display name (default: the inner attack's name).

    Example:
        >>> x_adv = Transfer(model_b, FGSM(Linf(0.3)), source_name="B")(model_a, x, y)
    """

    source_model: nn.Module
    attack: Attack
    source_name: str = "source"
    label: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source_model, nn.Module):
            raise TypeError(f"source_model must be a torch.nn.Module, got {type(self.source_model).__name__}.")
        if not isinstance(self.attack, Attack):
            raise TypeError(f"attack must be a robustopt attack such as PGD(...), got {self.attack!r}.")

    @property
    def threat(self):  # type: ignore[override]
        return self.attack.threat

    @property
    def name(self) -> str:
        return self.label or self.attack.name

    @property
    def steps(self) -> int | None:
        return self.attack.steps

    @property
    def restarts(self) -> int | None:
        return self.attack.restarts

    @property
    def source(self) -> str:
        return self.source_name

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> AttackResult:
        """Craft on the source (``kwargs`` go to the inner attack), score success on ``model``."""
        check_batch(x, y, self.threat)
        crafted = self.attack.run(self.source_model, x, y, **kwargs)
        with eval_mode(model), torch.no_grad():
            success = success_of(predict(model, crafted.x_adv), y.long(), kwargs.get("targets"))
        return AttackResult(crafted.x_adv, success, grad_evals=crafted.grad_evals, forwards=crafted.forwards + len(x))
