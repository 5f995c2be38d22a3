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
ball and box for ``L2`` (the L2 variant of the AutoAttack code base).

Under ``L1`` it is L1-APGD (Croce & Hein 2021, "Mind the box: l1-APGD for sparse adversarial
attacks on image classifiers", ICML), as AutoAttack runs it:

* the step ``x_{k+1} = P(x_k + eta * L1.top_k_step(grad, s))`` moves about the top ``s`` of the
  coordinates by |grad| (without momentum), ``P`` the exact projection onto the l1 ball
  intersected with the box; the start is a Gaussian point projected into the set;
* every ``max(floor(0.04 N), 1)`` steps the sparsity adapts: ``s`` becomes ``1 / 1.5`` of the share
  of coordinates the best point has changed; where that count fell below 95% of the last
  checkpoint's, ``eta`` returns to ``eps`` and the iterate to the best point, elsewhere ``eta``
  shrinks by 1.5, within ``[eps / 10, eps]`` (``s = 0.2`` and ``eta = eps`` to begin with);
* ``decreasing_eps`` (AutoAttack's ``use_largereps``, on in its L1 version) spends 30%, 30% and
  40% of the steps at ``3 eps``, ``2 eps`` and ``eps``, each part from the best point of the one
  before (projected into the smaller set, its sparsity its start's); only the last part's points,
  inside the threat set, count.

APGD-T (``targeted=True``) runs the attack once per target class, the
``n_target_classes`` classes with the highest clean logits other than the true
one (or with the highest ``target_scores`` given to ``run``), each time only on
the examples no earlier target broke. With the targeted DLR loss it is the APGD-T
of AutoAttack.

**Early exit** (``early_exit=True``, not part of AutoAttack): an example leaves the run
as soon as an iterate breaks it (there is nothing left to find for an evaluation), and at
a checkpoint ``w_j`` when its best margin ``m*`` (``losses.margin``: positive exactly when
broken) cannot reach zero at its pace: ``early_exit.stalled`` with the progress of ``m*`` since
the random start, over the ``w_j`` steps taken, projected over the steps left and times
``stall_factor``. APGD's progress slows down as its step size shrinks, so the average pace
since the start overestimates what is to come. The pace since the start is used, not the
pace of the last window alone: an example's margin can stall for a window, then jump once
the step is halved. The run's notes record per example why it stopped
(``early_exit.STOP_REASONS``) and its margins.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import torch

from robustopt import losses
from robustopt.attacks.base import Attack
from robustopt.attacks.early_exit import STOP_BROKEN, STOP_BUDGET, STOP_NOT_RUN, STOP_STALLED, stalled
from robustopt.attacks.passes import value_and_grad, value_at
from robustopt.attacks.registry import register_attack
from robustopt.attacks.search import Aim, Search, aims_at_top_classes
from robustopt.threat import ThreatModel

__all__ = ["APGD", "checkpoints"]

MOMENTUM = 0.75  # alpha of Algorithm 1
INITIAL_STEP = 2.0  # eta^(0) = 2 eps
CLEARLY = 1e-4  # early exit: a margin above this fraction of the largest logit is broken beyond rounding


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
        early_exit: stop an example once broken, or at a checkpoint when its margin cannot flip
            (module docstring); AutoAttack's APGD runs every step (False).
        stall_factor: with ``early_exit``, how many times the pace it has kept since its random
            start an example is granted before it counts as stalled (> 0; larger: fewer stops).
        stall_exit: with ``early_exit``, a stalled example leaves too (True); False: only once
            broken (a randomized model, whose margins under EOT are too noisy to extrapolate).
        eot: draws of a randomized model's randomness that each loss, gradient and score averages
            (Expectation over Transformation, Athalye et al. 2018; AutoAttack's ``rand`` version
            uses 20); 1 for a deterministic model.
        decreasing_eps: L1 only: the budget at 3 eps, 2 eps, then eps (module docstring;
            AutoAttack's ``use_largereps``). With ``early_exit`` examples leave in the last part.
        seed: seed of the random starts when no generator is given.
        label: display name in tables (default "APGD-CE", "APGD-DLR", "APGD-T", "APGD-T-CE", ...).

    Returns of ``run``: per example the best point over all runs (successful first, then
    highest loss); ``grad_evals`` = ``steps * eot`` per example and run (L1: one more per part
    of the schedule, for its start), ``forwards`` = one clean pass plus ``eot`` passes on the last
    iterate per example and run (with ``early_exit`` fewer:
    up to the step where the example left). With ``early_exit``, ``notes`` holds per example
    ``stop`` (an index into ``early_exit.STOP_REASONS``), ``margin`` (the best margin reached) and
    ``margin_start`` (at the random start of its last run).

    Call options: ``target_scores`` (N, C): APGD-T ranks the target classes by these scores
    instead of the clean logits (e.g. the logits at the point an untargeted attack reached).

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
    early_exit: bool = False
    stall_factor: float = 1.0
    stall_exit: bool = True
    eot: int = 1
    decreasing_eps: bool = False
    seed: int = 0
    label: str | None = None

    call_options: ClassVar[tuple[str, ...]] = ("target_scores",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_counts("steps", "restarts", "n_target_classes", "eot")
        self._check_seed()
        losses.get(self.loss)
        if not isinstance(self.targeted, bool):
            raise ValueError(
                f"targeted must be True or False, got {self.targeted!r}; "
                "for explicit target classes pass targets= when calling the attack."
            )
        if not (isinstance(self.rho, (int, float)) and 0.0 < self.rho <= 1.0):
            raise ValueError(f"rho must be a number in (0, 1], got {self.rho!r}.")
        self._check_flags("early_exit", "stall_exit", "decreasing_eps")
        self._check_positive("stall_factor")
        if self.decreasing_eps and self.threat.norm != "L1":
            raise ValueError(f"decreasing_eps is part of L1-APGD; the threat model is {self.threat}: leave it False.")

    def _check_call(self, x: torch.Tensor, options: dict) -> None:
        super()._check_call(x, options)
        if options.get("target_scores") is not None and not self.targeted:
            raise ValueError("target_scores ranks the target classes of APGD-T; this APGD is untargeted (targeted=False).")

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.targeted:
            base = "APGD-T" if self.loss == "dlr" else f"APGD-T-{self.loss.upper()}"
        else:
            base = f"APGD-{self.loss.upper()}"
        return f"{base} EOT-{self.eot}" if self.eot > 1 else base

    # --- the hooks of the driver ---------------------------------------------------------
    def _plan(self, clean, y, targets, generator) -> list[Aim]:
        if self.targeted and targets is None:
            return aims_at_top_classes(clean, y, self.n_target_classes)
        return super()._plan(clean, y, targets, generator)

    def _search(self, s: Search) -> None:
        """One run of Algorithm 1 from a uniform random point; every iterate is offered to ``s.best``.

        With ``early_exit`` the examples that are broken or stalled leave the run (see the class
        docstring); the others go on as without it (up to the rounding of smaller batches).
        """
        if self.threat.norm == "L1":
            return self._search_l1(s)
        threat, steps, x = self.threat, self.steps, s.x
        n = len(x)
        project = threat.projector(x)  # the same map as threat.project(., x), set up once for the run
        loss_fn = losses.get(self.loss)
        at = torch.arange(n, device=x.device)  # positions (in s) of the examples still searched
        y, target, aim = s.y, s.loss_target, s.success_target

        def evaluate(point: torch.Tensor, with_grad: bool):
            objective = lambda logits: loss_fn(logits, y, target)  # noqa: E731 - y, target change as examples leave
            if not with_grad:
                f, logits = value_at(s.model, point, objective, self.eot)
                return f, None, logits
            return value_and_grad(s.model, point, objective, self.eot)

        x_cur = threat.random_init(x, s.generator)
        f_cur, g_cur, logits = evaluate(x_cur, with_grad=True)
        s.cost.add(s.rows, grad_evals=self.eot)
        s.offer(x_cur, s.success(logits), f_cur)
        # per example: the iterate and its step size, the best point, and the checkpoint bookkeeping:
        # how many steps since the last checkpoint increased the loss, f_max, and whether eta was
        # halved at the last checkpoint; with early exit also the best margin, its value at the random
        # start and the largest logit seen.
        r = _Run(eta=torch.full((n,), INITIAL_STEP * threat.eps, dtype=x.dtype, device=x.device),
                 x_cur=x_cur, x_prev=x_cur, f_cur=f_cur, g_cur=g_cur,
                 x_max=x_cur.clone(), f_max=f_cur.clone(), g_max=g_cur.clone(),
                 increased=torch.zeros(n, dtype=torch.int64, device=x.device), f_max_at_check=f_cur.clone(),
                 halved_at_check=torch.zeros(n, dtype=torch.bool, device=x.device))
        if self.early_exit:
            r.margin = losses.margin(logits, y, aim)
            r.margin_start = r.margin.clone()
            r.scale = logits.abs().amax(dim=1)  # of the logits: what "clearly broken" is measured against
            ledger = _Ledger(s, r.margin)

        checks = [w for w in checkpoints(steps) if w <= steps - 2]  # later ones cannot matter
        last_check = 0
        for k in range(steps):  # computes x_{k+1}
            if self.early_exit:  # who leaves before this step: the broken, and (right after a checkpoint) the stalled
                left = ledger.leave(r, at, taken=k, remaining=steps - k, check=self.stall_exit and k - 1 in checks,
                                    stall_factor=self.stall_factor)
                if left is not None:
                    at, y, target, aim = left
                    if len(at) == 0:
                        break
                    project = threat.projector(x[at])
            sub = None if len(at) == n else at  # the examples of this step, as a subset of the search's
            x_cur, x_prev = r.x_cur, r.x_prev
            z = project(x_cur + _view(r.eta, x_cur) * threat.step(r.g_cur, x_cur))
            if k == 0:
                x_new = z
            else:
                x_new = project(x_cur + MOMENTUM * (z - x_cur) + (1 - MOMENTUM) * (x_cur - x_prev))
            last = k == steps - 1  # the last iterate is only scored, no gradient needed
            f_new, g_new, logits = evaluate(x_new, with_grad=not last)
            s.cost.add(s.rows[at], **{"forwards" if last else "grad_evals": self.eot})
            s.offer(x_new, s.success(logits, sub), f_new, sub)

            increased = f_new > r.f_cur
            better = f_new > r.f_max
            r.x_max[better], r.f_max[better] = x_new[better], f_new[better]
            if g_new is not None:
                r.g_max[better] = g_new[better]
            r.x_prev, r.x_cur, r.f_cur, r.g_cur = x_cur, x_new, f_new, g_new
            if self.early_exit:
                r.margin = torch.maximum(r.margin, losses.margin(logits, y, aim))
                r.scale = torch.maximum(r.scale, logits.abs().amax(dim=1))

            if k in checks:
                cond1 = r.increased < self.rho * (k - last_check)  # of the steps last_check..k-1
                cond2 = ~r.halved_at_check & (r.f_max <= r.f_max_at_check)
                halve = cond1 | cond2
                r.eta = torch.where(halve, r.eta / 2, r.eta)
                r.x_cur = torch.where(_view(halve, x_new), r.x_max, r.x_cur)
                r.g_cur = torch.where(_view(halve, x_new), r.g_max, r.g_cur)
                r.f_cur = torch.where(halve, r.f_max, r.f_cur)
                r.halved_at_check, r.f_max_at_check, last_check = halve, r.f_max.clone(), k
                r.increased = increased.long()  # step k opens the next window
            else:
                r.increased = r.increased + increased
        if self.early_exit:
            ledger.close(r, at)

    def _search_l1(self, s: Search) -> None:
        """One run of L1-APGD (module docstring); in the last part of the schedule every iterate is offered."""
        threat, x = self.threat, s.x
        n, d = len(x), x[0].numel()
        loss_fn = losses.get(self.loss)
        at = torch.arange(n, device=x.device)  # positions (in s) of the examples still searched
        y, target, aim = s.y, s.loss_target, s.success_target

        def evaluate(point: torch.Tensor, with_grad: bool):
            objective = lambda logits: loss_fn(logits, y, target)  # noqa: E731 - y, target change as examples leave
            s.cost.add(s.rows[at], **{"grad_evals" if with_grad else "forwards": self.eot})
            if not with_grad:
                return (*value_at(s.model, point, objective, self.eot), None)
            value, grad, logits = value_and_grad(s.model, point, objective, self.eot)
            return value, logits, grad

        parts = _l1_schedule(threat.eps, self.steps, self.decreasing_eps)
        point = x + torch.randn(x.shape, generator=s.generator, device=x.device, dtype=x.dtype)
        r = _Run(x=x)
        for j, (eps, steps) in enumerate(parts):
            final = j == len(parts) - 1
            project = dataclasses.replace(threat, eps=eps).projector(r.x)
            r.x_cur = project(point)
            f, logits, r.g_cur = evaluate(r.x_cur, with_grad=True)
            sub = None if len(at) == n else at
            if final:
                s.offer(r.x_cur, s.success(logits, sub), f, sub)
            if self.decreasing_eps:  # the start's own sparsity
                r.sparsity = (r.x_cur != r.x).flatten(1).sum(dim=1).to(x.dtype)
                r.share = r.sparsity / d / SPARSITY_SHRINK
            else:
                r.sparsity = torch.full((len(at),), float(d), dtype=x.dtype, device=x.device)
                r.share = torch.full_like(r.sparsity, INITIAL_SHARE)
            r.eta = torch.full_like(r.sparsity, eps)
            r.x_max, r.f_max, r.g_max = r.x_cur.clone(), f.clone(), r.g_cur.clone()
            if final and self.early_exit:
                r.margin = losses.margin(logits, y, aim)
                r.margin_start, r.scale = r.margin.clone(), logits.abs().amax(dim=1)
                ledger = _Ledger(s, r.margin)
                checks = [w for w in checkpoints(steps) if w <= steps - 2]
            window = max(int(SPARSITY_WINDOW * steps), 1)
            for k in range(steps):
                if final and self.early_exit:
                    left = ledger.leave(r, at, taken=k, remaining=steps - k, check=self.stall_exit and k - 1 in checks,
                                        stall_factor=self.stall_factor)
                    if left is not None:
                        at, y, target, aim = left
                        if len(at) == 0:
                            break
                        project = dataclasses.replace(threat, eps=eps).projector(r.x)
                sub = None if len(at) == n else at
                x_new = project(r.x_cur + _view(r.eta, r.x_cur) * threat.top_k_step(r.g_cur, r.share))
                last = final and k == steps - 1  # the last iterate is only scored
                f, logits, g_new = evaluate(x_new, with_grad=not last)
                if final:
                    s.offer(x_new, s.success(logits, sub), f, sub)
                    if self.early_exit:
                        r.margin = torch.maximum(r.margin, losses.margin(logits, y, aim))
                        r.scale = torch.maximum(r.scale, logits.abs().amax(dim=1))
                better = f > r.f_max
                r.x_max[better], r.f_max[better] = x_new[better], f[better]
                if g_new is not None:
                    r.g_max[better] = g_new[better]
                r.x_cur, r.g_cur = x_new, g_new
                if (k + 1) % window == 0 and not last:  # adapt the sparsity and the step size
                    sparsity = (r.x_max != r.x).flatten(1).sum(dim=1).to(x.dtype)
                    fell = sparsity < SPARSITY_DROP * r.sparsity
                    r.share, r.sparsity = sparsity / d / SPARSITY_SHRINK, sparsity
                    r.eta = torch.where(fell, eps, r.eta / STEP_SHRINK).clamp(eps / MIN_STEP_DIVISOR, eps)
                    r.x_cur = torch.where(_view(fell, r.x_cur), r.x_max, r.x_cur)
                    r.g_cur = torch.where(_view(fell, r.x_cur), r.g_max, r.g_cur)
            point = r.x_max  # the next part starts from this part's best point
        if self.early_exit:
            ledger.close(r, at)


# L1-APGD's constants (Croce & Hein 2021, as in AutoAttack's code)
INITIAL_SHARE = 0.2  # of the coordinates moved by the first steps
SPARSITY_WINDOW = 0.04  # of the steps between two adaptations of the sparsity
SPARSITY_SHRINK = 1.5  # the share moved: the best point's share of changed coordinates / 1.5
SPARSITY_DROP = 0.95  # the best point got sparser: back to eta = eps and the best point
STEP_SHRINK = 1.5  # otherwise eta / 1.5 ...
MIN_STEP_DIVISOR = 10.0  # ... down to eps / 10
DECREASING_EPS = ((3.0, 0.3), (2.0, 0.3), (1.0, 0.4))  # (eps factor, share of the steps): use_largereps


def _l1_schedule(eps: float, steps: int, decreasing: bool) -> list[tuple[float, int]]:
    """The parts of an L1-APGD run, ``(eps, steps)``; with ``decreasing`` AutoAttack's 3, 2, 1 eps."""
    if not decreasing:
        return [(eps, steps)]
    counts = [math.ceil(share * steps) for _, share in DECREASING_EPS[:-1]]
    over = sum(counts) - (steps - 1)  # the part at eps keeps at least one step
    for i in reversed(range(len(counts))):
        cut = min(max(over, 0), counts[i])
        counts[i], over = counts[i] - cut, over - cut
    counts.append(steps - sum(counts))
    return [(factor * eps, c) for (factor, _), c in zip(DECREASING_EPS, counts) if c > 0]


class _Run:
    """The per-example tensors of one APGD run, for the examples still searched; ``keep`` drops rows."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.__dict__.update(tensors)

    def keep(self, mask: torch.Tensor) -> None:
        for name, value in vars(self).items():
            setattr(self, name, value[mask])


class _Ledger:
    """Why each example of one early-exit run stopped, and its margins; written to ``s.cost.notes``."""

    def __init__(self, s: Search, margin: torch.Tensor) -> None:
        self.s = s
        self.stop = torch.full_like(margin, STOP_BUDGET, dtype=torch.int8)
        self.start, self.best = margin.clone(), margin.clone()

    def exits(self, r: _Run, at: torch.Tensor, *, taken: int, remaining: int, check: bool,
              stall_factor: float) -> torch.Tensor | None:
        """bool over the rows still searched: who leaves now (None: nobody), ``taken`` steps into the run."""
        # broken beyond rounding (a point just across the boundary can read differently in another batch;
        # one that is not clearly across goes on, and still counts as broken if it ends there)
        broken = r.margin > CLEARLY * r.scale
        done = broken.clone()
        if check:  # at the pace kept since the random start
            done |= stalled(r.margin, r.margin_start, remaining, taken, stall_factor)
        if not bool(done.any()):
            return None
        self.stop[at[done]] = torch.where(broken[done], STOP_BROKEN, STOP_STALLED).to(torch.int8)
        self.best[at[done]] = r.margin[done]
        return done

    def leave(self, r: _Run, at: torch.Tensor, *, taken: int, remaining: int, check: bool,
              stall_factor: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None:
        """Drop from ``r`` the rows that exit now (see :meth:`exits`); None when nobody leaves.

        Returns:
            ``(at, y, loss_target, success_target)`` of the examples still searched, as positions in
            the search and their labels and aims (``at`` may be empty: the run is over).
        """
        done = self.exits(r, at, taken=taken, remaining=remaining, check=check, stall_factor=stall_factor)
        if done is None:
            return None
        r.keep(~done)
        at = at[~done]
        s = self.s
        return (at, s.y[at], None if s.loss_target is None else s.loss_target[at],
                None if s.success_target is None else s.success_target[at])

    def close(self, r: _Run, at: torch.Tensor) -> None:
        """Record the notes of every example of the run (the last search of a row decides its ``stop``)."""
        self.best[at] = r.margin
        self.stop[at] = torch.where(r.margin > 0, STOP_BROKEN, STOP_BUDGET).to(torch.int8)
        s, notes = self.s, self.s.cost.notes
        best = self.best if "margin" not in notes else torch.fmax(self.best, notes["margin"][s.rows])
        s.cost.note("stop", s.rows, self.stop, fill=STOP_NOT_RUN)
        s.cost.note("margin", s.rows, best, fill=float("nan"))
        s.cost.note("margin_start", s.rows, self.start, fill=float("nan"))
