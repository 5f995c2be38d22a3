"""Auto-PGD (APGD): projected gradient ascent with momentum and an adaptive step size.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks" (ICML), Algorithm 1. For every example:

* ``z = P(x_k + eta * step(grad f(x_k)))`` and, after the first step,
  ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))`` with momentum ``a = 0.75``;
* the step size starts at ``eta = 2 eps`` and is halved at the checkpoints
  ``w_j = ceil(p_j N)`` (``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``) when fewer than a fraction
  ``rho`` of the steps since the last checkpoint increased the loss (condition 1),
  or when neither the step size nor the best loss changed since the last
  checkpoint (condition 2); a halving restarts the iterate from the best point.

``step`` and ``P`` come from the threat model: sign steps and the exact box
projection for ``Linf``, normalized-gradient steps and the exact projection onto
ball and box for ``L2`` (the L2 variant of the AutoAttack code base). Under
``L1`` this is the plain adaptation with the threat model's sparse step, not the
L1-APGD of Croce & Hein 2021 ("Mind the box"), which adapts the sparsity.

APGD-T (``targeted=True``) runs the attack once per target class, the
``n_target_classes`` classes with the highest clean logits other than the true
one, each time only on the examples no earlier target broke. With the targeted
DLR loss it is the APGD-T of AutoAttack.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import torch

from robustopt import losses
from robustopt.attacks.base import Aim, Attack, Search, aims_at_top_classes, predict
from robustopt.attacks.registry import register_attack
from robustopt.threat import ThreatModel

__all__ = ["APGD", "checkpoints"]

MOMENTUM = 0.75  # alpha of Algorithm 1
INITIAL_STEP = 2.0  # eta^(0) = 2 eps


def checkpoints(steps: int) -> list[int]:
    """Iterations ``w_j = ceil(p_j * steps)``, j >= 1, at which APGD may halve its step size.

    ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, kept while
    ``p_j <= 1``. The p_j are computed in hundredths, so no rounding error moves a
    checkpoint; coinciding checkpoints of short runs are merged.

    Example:
        >>> checkpoints(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
    """
    out: list[int] = []
    prev, cur = 0, 22
    while cur <= 100:
        w = -(-cur * steps // 100)  # ceil(cur / 100 * steps) in integers
        if w >= 1 and (not out or w > out[-1]):
            out.append(w)
        prev, cur = cur, cur + max(cur - prev - 3, 6)
    return out


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


@register_attack("apgd")
@dataclass(frozen=True)
class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020): a budget of ``steps`` gradient evaluations, no step size to tune.

    Args:
        threat: threat model (``ro.Linf``, ``ro.L2``; ``ro.L1`` as a plain adaptation).
        steps: iterations per run N (>= 1); each costs one forward+backward pass.
        restarts: runs per target, each from a new uniform random point of the ball, on the
            examples not yet broken.
        loss: objective to ascend: "ce", "dlr" or "cw" (the CW margin with kappa=0).
        targeted: run APGD-T: one targeted attack per class among the ``n_target_classes``
            highest clean logits other than the true class (at most classes - 1 are used).
            An example counts as broken when it is misclassified. To aim at given classes
            instead, pass ``targets=`` to ``run`` (then success means predicted as the target).
        n_target_classes: number of target classes of APGD-T (AutoAttack uses 9).
        rho: condition 1 halves the step size when fewer than ``rho`` of the steps since the
            last checkpoint increased the loss, in (0, 1].
        seed: seed of the random starts when no generator is given.
        label: display name in tables (default "APGD-CE", "APGD-DLR", "APGD-T", "APGD-T-CE", ...).

    Returns of ``run``: per example the best point over all runs (successful first, then
    highest loss); ``grad_evals`` = ``steps`` per example and run, ``forwards`` = one clean
    pass plus one pass on the last iterate per example and run.

    Example:
        >>> x_adv = APGD(Linf(8 / 255), loss="dlr", targeted=True)(model, x, y)
    """

    threat: ThreatModel
    _: KW_ONLY
    steps: int = 100
    restarts: int = 1
    loss: str = "ce"
    targeted: bool = False
    n_target_classes: int = 9
    rho: float = 0.75
    seed: int = 0
    label: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_counts("steps", "restarts", "n_target_classes")
        self._check_seed()
        losses.get(self.loss)
        if not isinstance(self.targeted, bool):
            raise ValueError(
                f"targeted must be True or False, got {self.targeted!r}; "
                "for explicit target classes pass targets= when calling the attack."
            )
        if not (isinstance(self.rho, (int, float)) and 0.0 < self.rho <= 1.0):
            raise ValueError(f"rho must be a number in (0, 1], got {self.rho!r}.")

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.targeted:
            return "APGD-T" if self.loss == "dlr" else f"APGD-T-{self.loss.upper()}"
        return f"APGD-{self.loss.upper()}"

    # --- the hooks of the driver ---------------------------------------------------------
    def _plan(self, clean, y, targets, generator) -> list[Aim]:
        if self.targeted and targets is None:
            return aims_at_top_classes(clean, y, self.n_target_classes)
        return super()._plan(clean, y, targets, generator)

    def _search(self, s: Search) -> None:
        """One run of Algorithm 1 from a uniform random point; every iterate is offered to ``s.best``."""
        threat, steps, x = self.threat, self.steps, s.x
        n = len(x)
        project = threat.projector(x)  # the same map as threat.project(., x), set up once for the run
        loss_fn = losses.get(self.loss)

        def evaluate(point: torch.Tensor, with_grad: bool):
            if not with_grad:
                logits = predict(s.model, point)
                return loss_fn(logits, s.y, s.loss_target), None, logits
            with torch.enable_grad():
                point = point.detach().requires_grad_(True)
                logits = predict(s.model, point)
                f = loss_fn(logits, s.y, s.loss_target)
                (grad,) = torch.autograd.grad(f.sum(), point)
            return f.detach(), grad, logits.detach()

        eta = torch.full((n,), INITIAL_STEP * threat.eps, dtype=x.dtype, device=x.device)
        x_cur = threat.random_init(x, s.generator)
        f_cur, g_cur, logits = evaluate(x_cur, with_grad=True)
        s.cost.grad_evals += n
        s.offer(x_cur, s.success(logits), f_cur)
        x_prev = x_cur
        x_max, f_max, g_max = x_cur.clone(), f_cur.clone(), g_cur.clone()

        # checkpoint bookkeeping (per example): did step i increase the loss, f_max and
        # whether eta was halved at the last checkpoint.
        checks = [w for w in checkpoints(steps) if w <= steps - 2]  # later ones cannot matter
        increased: list[torch.Tensor] = []
        last_check = 0
        f_max_at_check = f_max.clone()
        halved_at_check = torch.zeros(n, dtype=torch.bool, device=x.device)

        for k in range(steps):  # computes x_{k+1}
            z = project(x_cur + _view(eta, x) * threat.step(g_cur, x_cur))
            if k == 0:
                x_new = z
            else:
                x_new = project(x_cur + MOMENTUM * (z - x_cur) + (1 - MOMENTUM) * (x_cur - x_prev))
            last = k == steps - 1  # the last iterate is only scored, no gradient needed
            f_new, g_new, logits = evaluate(x_new, with_grad=not last)
            if last:
                s.cost.forwards += n
            else:
                s.cost.grad_evals += n
            s.offer(x_new, s.success(logits), f_new)

            increased.append(f_new > f_cur)
            better = f_new > f_max
            x_max[better], f_max[better] = x_new[better], f_new[better]
            if g_new is not None:
                g_max[better] = g_new[better]
            x_prev, x_cur, f_cur, g_cur = x_cur, x_new, f_new, g_new

            if k in checks:
                window = k - last_check
                successes = torch.stack(increased[last_check:k]).sum(dim=0)
                cond1 = successes < self.rho * window
                cond2 = ~halved_at_check & (f_max <= f_max_at_check)
                halve = cond1 | cond2
                eta = torch.where(halve, eta / 2, eta)
                x_cur = torch.where(_view(halve, x), x_max, x_cur)
                g_cur = torch.where(_view(halve, x), g_max, g_cur)
                f_cur = torch.where(halve, f_max, f_cur)
                halved_at_check, f_max_at_check, last_check = halve, f_max.clone(), k
