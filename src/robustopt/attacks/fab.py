"""FAB: the Fast Adaptive Boundary attack, a minimum-norm attack used inside a threat model.

Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
boundary attack" (ICML), Algorithm 1. FAB looks for the adversarial point closest to
the clean input ``x_orig`` (class ``c``) in an l_p norm, p in {inf, 2, 1}. At each
iterate ``x_i``:

* **linear approximation**: every decision hyperplane ``f_l - f_c = 0`` (l != c) is
  replaced by its linearization at ``x_i``, ``pi_l = {z : g_l + <w_l, z - x_i> = 0}`` with
  ``g_l = f_l(x_i) - f_c(x_i)`` and ``w_l`` the gradient of the logit difference (one row of
  the Jacobian of the logit differences). The chosen hyperplane is the closest one in the
  linear model, ``s = argmin_l |g_l| / ||w_l||_q`` (q the dual exponent of p);
* **projections**: ``delta = P_p(x_i; pi_s, C)`` and ``delta_orig = P_p(x_orig; pi_s, C)``,
  the smallest l_p moves from ``x_i`` and from ``x_orig`` onto the hyperplane that stay
  inside the box ``C`` (``threat.bounds``), computed exactly (``hyperplane_box_projection``);
* **biased step**: ``x_{i+1} = clip_C((1 - a)(x_i + eta delta) + a (x_orig + eta delta_orig))``
  with ``a = min(||delta|| / (||delta|| + ||delta_orig||), alpha_max)``: close to the
  boundary the step stays near x_i, far from it it is pulled toward ``x_orig``; ``eta > 1``
  overshoots the hyperplane a little;
* **backward step**: when ``x_{i+1}`` is adversarial it is kept if it is the closest one so
  far, and the iterate moves back toward the clean point,
  ``x_{i+1} <- x_orig + beta (x_{i+1} - x_orig)``.

The first run starts at ``x_orig``; every further restart starts at a random point at
distance ``min(u, eps) / 2`` from it (u: the smallest adversarial norm found so far, eps:
the threat's radius), clipped to the box.

FAB-T (``targeted=True``) is the version of AutoAttack (Croce & Hein 2020, "Reliable
evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks"):
one run per target class t among the ``n_target_classes`` classes with the highest clean
logits other than the true one, each with the single hyperplane ``f_t - f_c = 0`` (one
gradient instead of the whole Jacobian), each only on the examples that no earlier target
broke. As in AutoAttack, an example counts as broken when it is misclassified.

**Inside a threat model.** The attack returns, for each example, the smallest-norm
adversarial point it found if that point lies inside the threat's ball (and the box,
always true), and the clean input otherwise: a point that is farther than eps breaks
nothing. ``FABResult`` also carries the smallest adversarial point and its norm whatever
eps is, which is what a minimum-norm evaluation needs (use ``early_stop=False`` then).

Budget (``grad_evals``): one Jacobian of the logit differences at one point counts as one
image-gradient evaluation of that example. For FAB-T that is exactly one backward pass;
for untargeted FAB it takes ``classes - 1`` backward passes through one forward pass (the
full Jacobian), so its wall time per step is up to ``classes - 1`` times higher than APGD's.
``forwards``: the clean pass, one pass per example and step, which checks whether the new
iterate is adversarial, and ``final_search`` passes per example searched at the end.

Differences from the reference code (``FABAttack`` of AutoAttack): the projections are computed by sorting breakpoints with the canonical optimal
solution (where several points of the hyperplane are equally close in l_inf or l_1, the
reference may pick another one); an example stops once it has an adversarial point inside
the ball (``early_stop``, which does not change which examples are broken, only the cost
and the norm of the returned point); with explicit ``targets=`` the hyperplane is
``f_t - max_{j != t} f_j`` at the current iterate, so that the target class itself is
reached. One addition: after all runs, ``final_search`` bisection steps on the segment from
x to the best point move it back onto the boundary, which the overshoot ``eta`` leaves behind
(on a linear model the iterates settle 0.5% beyond it with ``eta = 1.05``); it costs forward
passes only, can only lower the norm (so break more examples at a given eps), and
``final_search=0`` gives the reference behaviour.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustopt.attacks.base import Attack, AttackResult
from robustopt.attacks.passes import predict
from robustopt.attacks.registry import register_attack
from robustopt.attacks.search import Aim, Best, Cost, Search, aims_at_top_classes, success_of
from robustopt.threat import ThreatModel

__all__ = ["FAB", "FABResult", "hyperplane_box_projection"]


@dataclass
class FABResult(AttackResult):
    """Outcome of FAB on a batch: an ``AttackResult`` plus the minimum-norm view.

    Attributes:
        x_min: per example the smallest-norm adversarial point found, whether or not it lies in
            the ball (the clean input where none was found); same shape/dtype/device as x.
        distance: (N,) its l_p distance to the clean input: 0 for examples that were already
            adversarial, ``inf`` where no adversarial point was found.
    """

    x_min: torch.Tensor | None = None
    distance: torch.Tensor | None = None


def _norm(v: torch.Tensor, p: float) -> torch.Tensor:
    return torch.linalg.vector_norm(v, ord=p, dim=1)


def _distance(best: Best) -> torch.Tensor:
    """(N,) the distance of each example's closest adversarial point; ``inf`` where none was found."""
    return torch.where(best.success, best.value, math.inf)


def hyperplane_box_projection(
    t: torch.Tensor, w: torch.Tensor, r: torch.Tensor, bounds: tuple[float, float], p: float
) -> torch.Tensor:
    """Smallest l_p move from ``t`` onto the hyperplane ``<w, delta> = r`` that stays in the box.

    Solves, per row, ``min ||delta||_p`` s.t. ``<w, delta> = r`` and ``lo <= t + delta <= hi``
    exactly, for p in {inf, 2, 1}. With ``r >= 0`` (flip w otherwise) only moves along
    ``sign(w_i)`` help, coordinate i can move at most ``cap_i`` that way (the distance to the
    box), and the problem is over magnitudes ``0 <= m_i <= cap_i`` with ``sum |w_i| m_i = r``:

    * p = inf: ``m_i = min(lam, cap_i)`` (KKT), p = 2: ``m_i = min(lam |w_i|, cap_i)``; the
      achieved ``sum |w_i| m_i`` is piecewise linear and increasing in lam, with breakpoints
      ``cap_i`` (resp. ``cap_i / |w_i|``): sort them, find the segment that contains r from the
      cumulative sums, solve the linear equation there;
    * p = 1: a fractional knapsack: fill the coordinates by decreasing ``|w_i|``, the last one
      partially (a sparse move).

    Where the box does not reach the hyperplane the result is the box point closest to it
    (every useful coordinate moved to the box). Coordinates with ``w_i = 0`` never move.

    Args:
        t: points (n, d) inside the box.
        w: normals (n, d).
        r: (n,) required ``<w, delta>``.
        bounds: (lo, hi) of the box.
        p: ``math.inf``, 2 or 1.

    Returns:
        delta (n, d), same dtype and device as ``t``.
    """
    lo, hi = bounds
    flip = torch.where(r < 0, -1.0, 1.0).to(t.dtype)
    w, r = w * flip[:, None], (r * flip).clamp_min(0)
    aw = w.abs()
    cap = torch.where(w > 0, hi - t, t - lo).clamp_min(0) * (aw > 0)
    gain = aw * cap  # how much each coordinate can contribute to <w, delta> at most
    total = gain.sum(dim=1)
    feasible = total >= r
    if p == 1:
        order = aw.argsort(dim=1, descending=True, stable=True)
        gain_s, aw_s, cap_s = gain.gather(1, order), aw.gather(1, order), cap.gather(1, order)
        before = gain_s.cumsum(dim=1) - gain_s  # contribution of the coordinates filled earlier
        k = (before + gain_s < r[:, None]).sum(dim=1, keepdim=True).clamp_max(t.shape[1] - 1)
        m_s = torch.where(torch.arange(t.shape[1], device=t.device)[None] < k, cap_s, torch.zeros_like(cap_s))
        aw_k = aw_s.gather(1, k)
        rest = (r[:, None] - before.gather(1, k)) / aw_k.clamp_min(torch.finfo(t.dtype).tiny)
        rest = torch.where(aw_k > 0, rest.clamp_min(0), torch.zeros_like(rest))
        m_s = m_s.scatter(1, k, torch.minimum(rest, cap_s.gather(1, k)))
        m = torch.empty_like(m_s).scatter_(1, order, m_s)
    else:
        a = (aw > 0).to(t.dtype) if p == math.inf else aw
        slope = aw * a  # d<w, delta>/d lam of a coordinate that is not saturated
        breaks = torch.where(a > 0, cap / a.clamp_min(torch.finfo(t.dtype).tiny), torch.full_like(cap, math.inf))
        b_s, order = breaks.sort(dim=1, stable=True)
        saturated = gain.gather(1, order).cumsum(dim=1)  # sum of gain over breakpoints <= b_s[k]
        suffix = slope.gather(1, order).flip(1).cumsum(dim=1).flip(1)  # sum of slope over j >= k
        free = torch.cat([suffix[:, 1:], torch.zeros_like(suffix[:, :1])], dim=1)  # ... over j > k
        at_breaks = saturated + b_s.nan_to_num(posinf=0.0) * free  # sum |w_i| m_i at lam = b_s[k]
        reached = torch.where(torch.isfinite(b_s), at_breaks, torch.full_like(b_s, math.inf))
        k = (reached < r[:, None]).sum(dim=1, keepdim=True)  # lam lies in [b_s[k-1], b_s[k]]
        km1 = (k - 1).clamp_min(0)
        sat_prev = torch.where(k > 0, saturated.gather(1, km1), torch.zeros_like(r[:, None]))
        free_prev = torch.where(k > 0, free.gather(1, km1), suffix[:, :1])
        lam = (r[:, None] - sat_prev) / free_prev.clamp_min(torch.finfo(t.dtype).tiny)
        m = torch.where(a > 0, torch.minimum(lam * a, cap), torch.zeros_like(cap))  # no 0 * inf
    m = torch.where(feasible[:, None], m, cap)
    return torch.sign(w) * m


@register_attack("fab")
@dataclass(frozen=True)
class FAB(Attack):
    """FAB (Croce & Hein 2020): the smallest adversarial perturbation, counted inside the threat's ball.

    Args:
        threat: ``ro.Linf``, ``ro.L2`` or ``ro.L1``: the norm that FAB minimizes, eps (an example
            is broken only by a point within eps) and the box.
        steps: iterations per run (>= 1); each costs one Jacobian and one forward pass.
        restarts: runs per target; the first from the clean input, the others from a random
            point at distance ``min(u, eps) / 2`` (u: the best adversarial norm so far).
        targeted: run FAB-T: one run per class among the ``n_target_classes`` highest clean
            logits other than the true one, on the hyperplane of that class only; an example
            counts as broken when it is misclassified. To aim at given classes instead, pass
            ``targets=`` to ``run`` (then success means predicted as the target).
        n_target_classes: targets of FAB-T (AutoAttack uses 9; at most classes - 1 are used).
        alpha_max: largest weight of the step from the clean input, in [0, 1].
        eta: overshoot of the projections onto the hyperplane (>= 1).
        beta: backward step: an adversarial iterate moves to ``x + beta (x_adv - x)``, in (0, 1].
        early_stop: stop an example once it has an adversarial point inside the ball (does not
            change which examples are broken; set False to keep minimizing the norm).
        final_search: bisection steps on the segment from x to the best adversarial point, after
            all runs (forward passes only; 0: none, as in the reference code).
        seed: seed of the random restarts when no generator is given.
        label: display name in tables (default "FAB" or "FAB-T").

    Call options: ``target_scores`` (N, C): FAB-T ranks the target classes by these scores
    instead of the clean logits.

    Returns of ``run``: a ``FABResult``: ``x_adv`` is per example the smallest adversarial point
    found if it is within eps, else x; ``success`` says which; ``grad_evals`` one per example and
    step actually run (a Jacobian, see the module docstring), ``forwards`` one clean pass, one per
    example and step, and those of the final search; ``x_min`` / ``distance`` the minimum-norm view.

    Example:
        >>> x_adv = FAB(Linf(8 / 255), targeted=True)(model, x, y)
    """

    threat: ThreatModel
    _: KW_ONLY
    steps: int = 100
    restarts: int = 1
    targeted: bool = False
    n_target_classes: int = 9
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    early_stop: bool = True
    final_search: int = 10
    seed: int = 0
    label: str | None = None

    norms: ClassVar[tuple[str, ...]] = ("Linf", "L2", "L1")
    call_options: ClassVar[tuple[str, ...]] = ("target_scores",)  # FAB-T ranks its targets by them (base.run)
    minimize: ClassVar[bool] = True  # Best keeps the closest adversarial point
    clean_success_counts: ClassVar[bool] = True  # an adversarial clean input is its own minimum

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_counts("steps", "restarts", "n_target_classes")
        self._check_seed()
        if not isinstance(self.targeted, bool):
            raise ValueError(
                f"targeted must be True or False, got {self.targeted!r}; "
                "for explicit target classes pass targets= when calling the attack."
            )
        checks = {
            "alpha_max": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
            "eta": (lambda v: 1.0 <= v < math.inf, "a finite number >= 1"),
            "beta": (lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),
        }
        for name, (ok, what) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise ValueError(f"{name} must be {what}, got {value!r}.")
        self._check_counts("final_search", minimum=0)
        if not isinstance(self.early_stop, bool):
            raise ValueError(f"early_stop must be True or False, got {self.early_stop!r}.")

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return "FAB-T" if self.targeted else "FAB"

    # --- the hooks of the driver ---------------------------------------------------------
    def _check_call(self, x: torch.Tensor, options: dict) -> None:
        super()._check_call(x, options)
        if options.get("target_scores") is not None and not self.targeted:
            raise ValueError("target_scores ranks the target classes of FAB-T; this FAB is untargeted (targeted=False).")

    def _plan(self, clean, y, targets, generator) -> list[Aim]:
        if clean.shape[1] < 2:
            raise ValueError("FAB needs a model with at least 2 classes.")
        if self.targeted and targets is None:
            return aims_at_top_classes(clean, y, self.n_target_classes)
        return super()._plan(clean, y, targets, generator)

    def _result(self, x: torch.Tensor, best: Best, cost: Cost) -> FABResult:
        broken = best.broken
        x_adv = torch.where(broken.view(-1, *([1] * (x.dim() - 1))), best.x, x)
        return FABResult(x_adv, broken, grad_evals=cost.grad_evals, forwards=cost.forwards,
                         grad_evals_per_example=cost.grad_per_example, forwards_per_example=cost.forwards_per_example,
                         notes=cost.notes, x_min=best.x, distance=_distance(best))

    def _finish(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, aim: Aim, best: Best, cost: Cost) -> None:
        """Bisect the segment from ``x`` to the best point for a closer adversarial point.

        The iterates of FAB end slightly beyond the boundary (``eta`` overshoots it); this moves
        the best point back to it, up to ``2 ** -final_search`` of its length. Every point kept
        was checked to be adversarial. With ``early_stop`` only the examples whose best point is
        outside the ball are searched (for the others it would only shrink the norm).
        """
        floor = self.threat.eps if self.early_stop else 0.0
        dist = _distance(best)
        idx = (torch.isfinite(dist) & (dist > floor)).nonzero().squeeze(1)
        if self.final_search == 0 or len(idx) == 0:
            return
        x0, direction = x[idx], best.x[idx] - x[idx]
        ys = y[idx]
        ts = None if aim.success_target is None else aim.success_target[idx]
        view = (-1,) + (1,) * (x.dim() - 1)
        low = torch.zeros(len(idx), dtype=x.dtype, device=x.device)  # not adversarial (x itself)
        high = torch.ones_like(low)  # adversarial (the best point)
        found = best.x[idx].clone()
        for _ in range(self.final_search):
            mid = (low + high) / 2
            point = x0 + mid.view(view) * direction
            adv = success_of(predict(model, point), ys, ts)
            found[adv] = point[adv]
            high = torch.where(adv, mid, high)
            low = torch.where(adv, low, mid)
        found_adv = torch.ones(len(idx), dtype=torch.bool, device=x.device)  # every point in found is adversarial
        best.offer(idx, found, found_adv, self.threat.distance(x0, found))
        cost.add(idx, forwards=self.final_search)

    def _search(self, s: Search) -> None:
        """One run of Algorithm 1: from the clean input, or (restarts) from a random point near it.

        Adversarial iterates are offered to ``s.best``, which keeps the closest one.
        """
        threat, eps = self.threat, self.threat.eps
        lo, hi = threat.bounds
        p = threat.p
        x0, n = s.x, len(s.x)
        view = (-1,) + (1,) * (x0.dim() - 1)
        if s.restart > 0:
            radius = _distance(s.best)[s.rows].clamp_max(eps) / 2
            x_cur = (x0 + radius.view(view) * threat.sphere(x0, s.generator)).clamp(lo, hi)
        else:
            x_cur = x0.clone()
        flat0 = x0.flatten(1)
        everyone = torch.arange(n, device=x0.device)
        for _ in range(self.steps):
            act = (~s.best.broken[s.rows]).nonzero().squeeze(1) if self.early_stop else everyone
            if len(act) == 0:
                break
            xa, ya = x_cur[act], s.y[act]
            ta = None if s.loss_target is None else s.loss_target[act]
            g, w = self._hyperplane(s.model, xa, ya, ta, explicit=s.success_target is not None)
            s.cost.add(s.rows[act], grad_evals=1)
            fa, f0 = xa.flatten(1), flat0[act]
            # the linearization at x_a: g + <w, z - x_a> = 0; from x_a and from x_orig
            r = torch.cat([-g, -g - ((f0 - fa) * w).sum(dim=1)])
            delta = hyperplane_box_projection(torch.cat([fa, f0]), torch.cat([w, w]), r, (lo, hi), p)
            d_cur, d_orig = delta[: len(act)], delta[len(act):]
            n_cur, n_orig = _norm(d_cur, p), _norm(d_orig, p)
            denom = n_cur + n_orig
            alpha = torch.where(denom > 0, n_cur / denom.clamp_min(torch.finfo(denom.dtype).tiny), 0.0)
            alpha = alpha.clamp(0.0, self.alpha_max)[:, None]
            x_new = ((1 - alpha) * (fa + self.eta * d_cur) + alpha * (f0 + self.eta * d_orig)).clamp(lo, hi)
            x_new = x_new.view_as(xa)
            logits = predict(s.model, x_new)
            s.cost.add(s.rows[act], forwards=1)
            adv = s.success(logits, act)
            x0a = x0[act]
            s.offer(x_new, adv, threat.distance(x0a, x_new), act)
            x_cur[act] = torch.where(adv.view(view), x0a + self.beta * (x_new - x0a), x_new)

    def _hyperplane(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, explicit: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The linearized decision hyperplane at ``x``: ``g`` (n,) and ``w`` (n, d) with ``g + <w, z - x> = 0``.

        Untargeted: of every ``f_l - f_y`` (l != y) the one whose linearized hyperplane is
        closest in the threat's norm, ``|g_l| / ||w_l||_q``. Targeted: ``f_t - f_y`` (FAB-T), or
        ``f_t - max_{j != t} f_j`` for explicit targets.
        """
        q = self.threat.dual_p
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            logits = predict(model, xr)
            n, classes = logits.shape
            rows = torch.arange(n, device=x.device)
            if target is not None:
                if explicit:
                    rival = logits.detach().masked_fill(F.one_hot(target, classes).bool(), float("-inf")).argmax(dim=1)
                else:
                    rival = y
                diff = logits[rows, target] - logits[rows, rival]
                (grad,) = torch.autograd.grad(diff.sum(), xr)
                return diff.detach().to(x.dtype), grad.flatten(1)
            # every other class, in index order: column k is k, or k + 1 from y on
            cols = torch.arange(classes - 1, device=x.device)[None, :]
            others = cols + (cols >= y[:, None]).long()
            z_y = logits[rows, y]
            best = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
            g_best = torch.zeros(n, dtype=logits.dtype, device=x.device)
            w_best = torch.zeros(n, x[0].numel(), dtype=x.dtype, device=x.device)
            for k in range(classes - 1):
                diff = logits[rows, others[:, k]] - z_y
                (grad,) = torch.autograd.grad(diff.sum(), xr, retain_graph=k < classes - 2)
                grad = grad.flatten(1)
                d = diff.detach().abs().to(x.dtype) / _norm(grad, q).clamp_min(1e-12)
                closer = d < best
                best = torch.where(closer, d, best)
                g_best = torch.where(closer, diff.detach(), g_best)
                w_best = torch.where(closer[:, None], grad, w_best)
        return g_best.to(x.dtype), w_best
