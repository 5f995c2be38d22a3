"""One engine for first-order attacks: FGSM and PGD are configurations of it.

Projected gradient ascent on a per-example loss inside a threat model
(Madry et al. 2018, Eq. 2): ``x <- Proj_S(x + alpha * step(grad L(x)))``,
from the clean input or a uniform random start, with restarts. For every
example the engine keeps the best iterate over all steps and restarts: a
successful one (misclassified, or hitting the target) beats an unsuccessful
one; otherwise the higher loss wins. Restarts only run on examples that are
not yet broken.

Cost per restart and example: ``steps`` forward+backward passes (gradients with
respect to the input only; no parameter gradient is computed or written) and one
forward pass without a graph on the last iterate, which is scored like every other
one; with ``eot=N`` each of them is N passes (Expectation over Transformation: the
loss, its gradient and the logits that score an iterate are means over N draws of
a randomized model's randomness, ``passes.value_and_grad``). Each iterate before it is scored from the forward pass of the gradient step
taken at it, so no pass is spent twice. Targeted attacks without explicit targets
add one clean forward pass (least-likely targets come from the clean logits; random
targets are drawn before the random start); untargeted ones run no clean pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Literal

import torch

from robustopt import losses
from robustopt.attacks.base import Attack
from robustopt.attacks.passes import value_and_grad, value_at
from robustopt.attacks.registry import register_attack
from robustopt.attacks.search import Aim, Search
from robustopt.threat import ThreatModel

__all__ = ["GradientAttack", "PGD", "FGSM"]

Targeting = Literal["least-likely", "random"] | None


@dataclass(frozen=True)
class GradientAttack(Attack):
    """Projected gradient ascent with restarts; the engine behind FGSM and PGD.

    Args:
        threat: threat model (``ro.Linf``, ``ro.L2``, ``ro.L1``) giving eps, bounds, step and projection.
        steps: gradient steps per restart (>= 1).
        step_size: the step size alpha in pixel space. The one step-size knob: ``rel_step_size``
            is the same knob relative to eps, for attacks built before eps is known (suites,
            sweeps); ``step_size`` wins when both are set. Neither: ``2.5 * eps / steps``.
        rel_step_size: the step size as a fraction of eps, used when ``step_size`` is None.
        restarts: number of runs; each after the first starts at a new random point.
        random_start: start from a uniform point in the ball instead of the clean input.
        loss: objective to ascend: "ce", "cw" (margin capped at ``kappa``) or "dlr".
        kappa: confidence of the CW margin (the paper's CW+ uses 50); only for loss="cw".
        targeted: None (untargeted), "least-likely" (class with the lowest clean logit) or
            "random" (a uniformly drawn wrong class). Explicit targets: pass ``targets=`` to ``run``.
        seed: seed of the random start and random targets when no generator is given.
        label: display name in tables (default: derived from the configuration).
        keep: "best" (per example, the best iterate over all steps and restarts, see the
            module docstring) or "last" (the final iterate, as TRADES' inner maximization).
            Both cost the same passes: the last iterate needs a forward pass for its success flag.
        eot: draws of a randomized model's randomness that each loss, gradient and score averages
            (Expectation over Transformation, Athalye et al. 2018); 1 for a deterministic model.

    Call options (keywords of ``run``, besides ``targets`` and ``generator``):
        start: starting points (N, ...) of the first restart, projected onto the threat set;
            replaces the clean / random start (later restarts stay random).
        objective: ``(logits, idx) -> Tensor[len(idx)]`` to maximize instead of the configured
            ``loss``; ``idx`` are the batch positions of the rows of ``logits`` (e.g. TRADES' KL
            divergence to the clean prediction).

    Returns of ``run``: ``grad_evals`` = ``steps * eot`` per example and restart, ``forwards`` =
    ``eot`` passes on the last iterate per example and restart (plus one clean pass per example
    for ``targeted`` without ``targets``).

    Example:
        >>> atk = PGD(Linf(0.3), steps=40, step_size=0.01)
        >>> x_adv = atk(model, x, y)
    """

    threat: ThreatModel
    _: KW_ONLY
    steps: int = 10
    step_size: float | None = None
    rel_step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    loss: str = "ce"
    kappa: float = 0.0
    targeted: Targeting = None
    seed: int = 0
    label: str | None = None
    keep: Literal["best", "last"] = "best"
    eot: int = 1

    call_options: ClassVar[tuple[str, ...]] = ("start", "objective")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_counts("steps", "restarts", "eot")
        self._check_seed()
        for name in ("step_size", "rel_step_size"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}.")
        loss = losses.LOSSES.get(self.loss)  # an unknown name: ValueError with the known ones
        if self.kappa != 0.0 and not loss.takes_kappa:
            with_kappa = [name for name, loss in losses.LOSSES.items() if loss.takes_kappa]
            raise ValueError(f"kappa only applies to a loss that takes one ({', '.join(with_kappa)}), got "
                             f"loss={self.loss!r} with kappa={self.kappa}.")
        if self.kappa < 0:
            raise ValueError(f"kappa must be >= 0, got {self.kappa}.")
        if self.targeted not in (None, "least-likely", "random"):
            raise ValueError(
                f"targeted must be None, 'least-likely' or 'random', got {self.targeted!r}; "
                "for explicit targets pass targets= when calling the attack."
            )
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {self.keep!r}.")

    # --- description ------------------------------------------------------------------
    @property
    def alpha(self) -> float:
        """The step size in pixel space: ``step_size``, else ``rel_step_size * eps``, else ``2.5 * eps / steps``."""
        if self.step_size is not None:
            return float(self.step_size)
        rel = self.rel_step_size if self.rel_step_size is not None else 2.5 / self.steps
        return rel * self.threat.eps

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.loss == "cw":
            base = "CW+" if self.kappa > 0 else "CW"
        else:
            base = "FGSM" if self.steps == 1 and not self.random_start else "PGD"
            if self.loss == "dlr":
                base += "-DLR"
        base = f"Targeted {base}" if self.targeted else base
        return f"{base} EOT-{self.eot}" if self.eot > 1 else base

    # --- the hooks of the driver ---------------------------------------------------------
    def _check_call(self, x: torch.Tensor, options: dict[str, Any]) -> None:
        super()._check_call(x, options)
        start = options.get("start")
        if start is not None and start.shape != x.shape:
            raise ValueError(f"start must have the shape of x, {tuple(x.shape)}, got {tuple(start.shape)}.")

    def _needs_clean_pass(self, targets: torch.Tensor | None) -> bool:
        # only drawn targets need the clean logits; otherwise labels are checked on the first step's
        return targets is None and self.targeted is not None

    def _plan(self, clean, y, targets, generator) -> list[Aim]:
        if clean is None:
            return super()._plan(clean, y, targets, generator)
        if self.targeted == "least-likely":  # the lowest clean logit
            drawn = clean.argmin(dim=1)
        else:  # "random": a uniformly drawn wrong class
            classes = clean.shape[1]
            drawn = (y + torch.randint(1, classes, y.shape, generator=generator, device=y.device)) % classes
        return [Aim(drawn, drawn)]

    def _search(self, s: Search) -> None:
        """One restart of projected gradient ascent; with keep="best" every iterate is offered."""
        threat, alpha, keep_best = self.threat, self.alpha, self.keep == "best"
        project = threat.projector(s.x)
        start = s.options.get("start")
        if s.restart == 0 and start is not None:
            x_adv = project(start.detach()[s.rows])
        elif self.random_start or s.restart > 0:
            x_adv = threat.random_init(s.x, s.generator)
        else:
            x_adv = s.x.clone()
        objective = self._objective(s)

        def value_of(logits: torch.Tensor) -> torch.Tensor:  # labels and outputs are checked on the first logits
            s.check(logits)
            return objective(logits)

        for step in range(self.steps):
            value, grad, logits = value_and_grad(s.model, x_adv, value_of, self.eot)
            if step > 0 and keep_best:  # this pass scores the iterate x_adv
                s.offer(x_adv, s.success(logits), value)
            s.cost.add(s.rows, grad_evals=self.eot)
            x_adv = project(torch.add(x_adv, threat.step(grad, x_adv), alpha=alpha))

        # the last iterate: scored by a forward pass without a graph (no_grad is as fast as
        # inference_mode here and leaves ordinary tensors, which objectives and models may need)
        value, logits = value_at(s.model, x_adv, value_of, self.eot)
        s.cost.add(s.rows, forwards=self.eot)
        if keep_best:
            s.offer(x_adv, s.success(logits), value)
        else:  # "last": the final iterate replaces the stored one unconditionally
            s.best.put(s.rows, x_adv, s.success(logits), value)

    def _objective(self, s: Search) -> Callable[[torch.Tensor], torch.Tensor]:
        """``logits -> Tensor[n]`` to ascend: the ``objective`` option, else the configured loss."""
        objective = s.options.get("objective")
        if objective is not None:
            return lambda logits: objective(logits, s.rows)
        loss = losses.LOSSES.get(self.loss)
        kwargs = {"kappa": self.kappa} if loss.takes_kappa else {}
        return lambda logits: loss.fn(logits, s.y, s.loss_target, **kwargs)


@register_attack("pgd")
@dataclass(frozen=True)
class PGD(GradientAttack):
    """Projected Gradient Descent (Madry et al. 2018): ``steps`` steps from a random start.

    The default step size is ``2.5 * eps / steps`` (the paper's recommendation);
    the paper's MNIST attacks use ``step_size=0.01`` with eps=0.3.
    """


@register_attack("fgsm")
@dataclass(frozen=True)
class FGSM(GradientAttack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of size eps from the clean input.

    Under L2/L1 threat models it is the one-step steepest ascent of that norm (FGM).
    """

    _: KW_ONLY
    steps: int = 1
    rel_step_size: float | None = 1.0
    random_start: bool = False
