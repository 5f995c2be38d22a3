"""Training methods: how each one crafts the batch the outer minimization trains on.

Adversarial training solves ``min_theta E_(x,y) max_{delta in S} L(theta, x + delta, y)``
(Madry et al. 2018, Sec. 2 and 4). The training loop (:mod:`robustopt.training.fit`)
owns the outer minimization; a *method* is a function that, given the model and a
clean batch, returns the inputs to take the gradient step on (the approximate inner
maximizer). Methods live in the registry :data:`METHODS`, so new ones ("free",
"trades") are added with :func:`register_method` without touching the loop.

Every method here crafts its examples with the library's attack engine, which runs
the model in **eval mode** and restores its mode afterwards (``attack_mode="eval"``).
For networks without batch norm or dropout, such as Madry et al.'s MNIST model A,
eval and train mode compute the same function, so this makes no difference there.

Example:
    >>> craft = get_method("pgd")
    >>> batch = craft(model, x, y, threat=ro.Linf(0.3), config=cfg, generator=g)
    >>> loss = F.cross_entropy(model(batch.x), y)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from robustopt.attacks import PGD, GradientAttack
from robustopt.threat import ThreatModel

if TYPE_CHECKING:  # only for annotations: fit.py imports this module
    from robustopt.training.fit import TrainConfig

__all__ = ["Crafted", "Method", "METHODS", "register_method", "get_method", "natural", "pgd", "fgsm_rs"]


@dataclass
class Crafted:
    """A training batch produced by a method.

    Attributes:
        x: inputs to train on, same shape/dtype/device as the clean batch, detached,
            inside ``threat.bounds`` (and inside the ball around the clean batch).
        grad_evals: input-gradient evaluations spent crafting it, summed over examples.
    """

    x: torch.Tensor
    grad_evals: int = 0


class Method(Protocol):
    """Signature of a training method (see the module docstring)."""

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        threat: ThreatModel,
        config: TrainConfig,
        generator: torch.Generator,
    ) -> Crafted: ...


METHODS: dict[str, Method] = {}


def register_method(name: str) -> Callable[[Method], Method]:
    """Decorator adding a method to :data:`METHODS` under ``name``.

    Raises:
        ValueError: If ``name`` is already registered.
    """

    def decorator(fn: Method) -> Method:
        if name in METHODS:
            raise ValueError(f"training method {name!r} is already registered")
        METHODS[name] = fn
        return fn

    return decorator


def get_method(name: str) -> Method:
    """The method registered as ``name``.

    Raises:
        ValueError: If no method has that name (the message lists the known ones).
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown training method {name!r}; choose one of {sorted(METHODS)}.") from None


@register_method("natural")
def natural(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: ThreatModel,
    config: TrainConfig,
    generator: torch.Generator,
) -> Crafted:
    """Standard (non-robust) training: train on the clean batch. No attack, eps is ignored."""
    return Crafted(x, 0)


@register_method("pgd")
def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: ThreatModel,
    config: TrainConfig,
    generator: torch.Generator,
) -> Crafted:
    """PGD adversarial training (Madry et al. 2018, Sec. 4).

    The inner maximization is ``config.attack_steps`` steps of projected gradient
    ascent on the cross-entropy, step ``config.attack_step_size`` (absolute, pixel
    space; None means ``2.5 * eps / steps``), from a uniform random point of the ball
    if ``config.attack_random_start``. The engine keeps, per example, the iterate
    with the highest loss (a misclassified one first). The attack runs the model in
    eval mode. At ``eps = 0`` (e.g. the start of an eps warm-up) it is natural training.
    """
    if threat.eps == 0:
        return Crafted(x, 0)
    attack = PGD(
        threat,
        steps=config.attack_steps,
        step_size=config.attack_step_size,
        random_start=config.attack_random_start,
    )
    result = attack.run(model, x, y, generator=generator)
    return Crafted(result.x_adv.detach(), result.grad_evals)


@register_method("fgsm-rs")
def fgsm_rs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: ThreatModel,
    config: TrainConfig,
    generator: torch.Generator,
) -> Crafted:
    """FGSM with random start (Wong, Rice & Kolter 2020, "Fast is better than free", Alg. 3).

    One gradient step of size ``1.25 * eps`` from a point drawn uniformly in the ball,
    projected back onto the ball and the box. ``attack_steps``, ``attack_step_size``
    and ``attack_random_start`` are not used. The attack runs the model in eval mode.
    """
    if threat.eps == 0:
        return Crafted(x, 0)
    attack = GradientAttack(threat, steps=1, step_size=1.25 * threat.eps, random_start=True, label="FGSM-RS")
    result = attack.run(model, x, y, generator=generator)
    return Crafted(result.x_adv.detach(), result.grad_evals)
