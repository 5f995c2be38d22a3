"""Black-box transfer attacks: craft on a source model, evaluate on the target."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustopt.attacks.base import ATTACKS, Attack, AttackResult
from robustopt.attacks.checks import check_batch
from robustopt.attacks.passes import eval_mode, predict
from robustopt.attacks.registry import register_attack
from robustopt.attacks.search import success_of
from robustopt.threat import ThreatModel

__all__ = ["Transfer"]


@register_attack("transfer")
@dataclass(frozen=True)
class Transfer(Attack):
    """Adversarial examples crafted white-box on ``source_model``, then shown to the target.

    This is the paper's black-box setting (Madry et al. 2018, Tables 1-2: sources
    A', B and A_nat). The target model is only queried once, to score success. The source
    model is not part of the configuration: it is left out of the repr, of equality and of
    ``describe()`` (``Attack.from_dict(d, source_model=m)`` takes it back).

    Args:
        source_model: the model the inner ``attack`` differentiates.
        attack: any attack, e.g. ``PGD(Linf(0.3), steps=40)``.
        source_name: how the source is named in tables, e.g. "A'", "B", "A_nat".
        label: display name (default: the inner attack's name).

    Example:
        >>> x_adv = Transfer(model_b, FGSM(Linf(0.3)), source_name="B")(model_a, x, y)
    """

    source_model: nn.Module = field(repr=False, compare=False)
    attack: Attack
    source_name: str = "source"
    label: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source_model, nn.Module):
            raise TypeError(f"source_model must be a torch.nn.Module, got {type(self.source_model).__name__}.")
        if not isinstance(self.attack, Attack):
            raise TypeError(f"attack must be a robustopt attack such as PGD(...), got {self.attack!r}.")

    @classmethod
    def create(cls, threat: ThreatModel, *, source_model: nn.Module | None = None, attack: Any = "pgd",
               source_name: str = "source", label: str | None = None, **options: Any) -> Transfer:
        """A transfer attack on ``threat``: what ``ro.attacks.create("transfer", threat, ...)`` calls.

        Args:
            threat: the threat model of the inner attack.
            source_model: the model to craft on (required).
            attack: the inner attack: a registry key (configured by ``options`` on ``threat``), an
                attack, or its ``describe()`` dict.
            source_name / label: as in the class.
            **options: configuration of the inner attack given by its key, e.g. ``steps=40``.

        Raises:
            TypeError: ``threat`` is not a threat model, or ``source_model`` is missing.
            ValueError: an inner attack given as a value on another threat model, or ``options``
                beside it.
        """
        if not isinstance(threat, ThreatModel):
            raise TypeError(f"threat must be a threat model such as ro.Linf(0.3), got {threat!r}.")
        if source_model is None:
            raise TypeError("a transfer attack needs source_model=<the nn.Module to craft on>.")
        if isinstance(attack, str):
            inner = ATTACKS.get(attack).create(threat, **options)
        else:
            if options:
                raise ValueError(f"options {sorted(options)} configure an inner attack given by its key; "
                                 "pass attack='pgd' (a key) with them, or configure the attack value itself.")
            inner = Attack.from_dict(attack) if isinstance(attack, Mapping) else attack
            if isinstance(inner, Attack) and inner.threat != threat:
                raise ValueError(f"the inner attack's threat model {inner.threat} is not {threat}.")
        return cls(source_model, inner, source_name=source_name, label=label)

    @property
    def threat(self):  # type: ignore[override]
        return self.attack.threat

    @property
    def seed(self) -> int:  # type: ignore[override]
        """The inner attack's seed."""
        return self.attack.seed

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
