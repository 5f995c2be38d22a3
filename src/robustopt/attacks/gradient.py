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
one. Each iterate before it is scored from the forward pass of the gradient step
taken at it, so no pass is spent twice. Targeted attacks without explicit targets
add one clean forward pass (least-likely targets come from the clean logits; random
targets are drawn before the random start); untargeted ones run no clean pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Literal

import torch
from torch import nn

from robustopt import losses
from robustopt.attacks.base import (
    Attack,
    AttackResult,
    _warn_if_probabilities,
    check_batch,
    check_labels,
    eval_mode,
    predict,
    success_of,
)
from robustopt.threat import ThreatModel

__all__ = ["GradientAttack", "PGD", "FGSM"]

Targeting = Literal["least-likely", "random"] | None


@dataclass(frozen=True)
class GradientAttack(Attack):
    """Projected gradient ascent with restarts; the engine behind FGSM and PGD.

    Args:
        threat: threat model (``ro.Linf``, ``ro.L2``, ``ro.L1``) giving eps, bounds, step and projection.
        steps: gradient steps per restart (>= 1).
        step_size: absolute step size alpha in pixel space; if None, ``rel_step_size * eps``.
        rel_step_size: step size as a fraction of eps, used when ``step_size`` is None.
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

    def __post_init__(self) -> None:
        if not isinstance(self.threat, ThreatModel):
            raise TypeError(f"threat must be a threat model such as ro.Linf(0.3), got {self.threat!r}.")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}.")
        if not isinstance(self.restarts, int) or self.restarts < 1:
            raise ValueError(f"restarts must be an integer >= 1, got {self.restarts!r}.")
        for name in ("step_size", "rel_step_size"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}.")
        losses.get(self.loss)
        if self.kappa != 0.0 and self.loss != "cw":
            raise ValueError(f"kappa only applies to loss='cw', got loss={self.loss!r} with kappa={self.kappa}.")
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
        """The step size in pixel space."""
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
        return f"Targeted {base}" if self.targeted else base

    # --- the engine ---------------------------------------------------------------------
    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        targets: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        start: torch.Tensor | None = None,
        objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> AttackResult:
        """Attack ``model`` on the batch ``(x, y)``.

        Args:
            model: maps inputs in ``threat.bounds`` (N, ...) to logits (N, C).
            x: clean inputs, floating, inside the bounds.
            y: true labels (N,), integer.
            targets: explicit target classes (N,); makes the attack targeted.
            generator: source of randomness; default: a fresh one seeded with ``self.seed``.
            start: starting points (N, ...) of the first restart, projected onto the
                threat set; replaces the clean / random start (later restarts stay random).
            objective: ``(logits, idx) -> Tensor[len(idx)]`` to maximize instead of the
                configured ``loss``; ``idx`` are the batch positions of the rows of
                ``logits`` (e.g. TRADES' KL divergence to the clean prediction).

        Returns:
            AttackResult with x_adv inside the ball and the bounds, ``grad_evals`` = ``steps``
            per example and restart, ``forwards`` = one pass on the last iterate per example and
            restart (plus one clean pass per example for ``targeted`` without ``targets``).
        """
        check_batch(x, y, self.threat)
        y = y.long()
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        if start is not None and start.shape != x.shape:
            raise ValueError(f"start must have the shape of x, {tuple(x.shape)}, got {tuple(start.shape)}.")
        if targets is not None:
            targets = self._check_targets(targets, y)
        loss_fn = losses.get(self.loss)
        kwargs = {"kappa": self.kappa} if self.loss == "cw" else {}
        alpha, threat, n = self.alpha, self.threat, len(x)

        def value_of(logits, ys, ts, idx):
            return loss_fn(logits, ys, ts, **kwargs) if objective is None else objective(logits, idx)

        grad_evals = forwards = 0
        with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
            best_x = x.detach().clone()  # normal tensors even when called inside inference_mode
            best_loss = torch.full((n,), float("-inf"), device=x.device)
            best_success = torch.zeros(n, dtype=torch.bool, device=x.device)
            checked = False  # labels and outputs are checked on the first logits of the whole batch
            if targets is None and self.targeted is not None:
                with torch.no_grad():
                    clean_logits = predict(model, x)
                forwards += n
                check_labels(clean_logits, y)
                _warn_if_probabilities(model, clean_logits)
                targets, checked = self._draw_targets(clean_logits, y, generator), True

            for restart in range(self.restarts):
                idx = (~best_success).nonzero().squeeze(1)  # restart 0: the whole batch
                if len(idx) == 0:
                    break
                xs, ys = (x.detach(), y) if len(idx) == n else (x[idx].detach(), y[idx])
                ts = targets[idx] if targets is not None else None
                project = threat.projector(xs)
                if restart == 0 and start is not None:
                    x_adv = project(start.detach()[idx])
                elif self.random_start or restart > 0:
                    x_adv = threat.random_init(xs, generator)
                else:
                    x_adv = xs.clone()
                run = _RestartBest(xs) if self.keep == "best" else None  # this restart's best iterate per row

                for step in range(self.steps):
                    x_adv.requires_grad_(True)
                    logits = predict(model, x_adv)
                    if not checked:
                        check_labels(logits, y)
                        _warn_if_probabilities(model, logits)
                        if targets is not None:
                            check_labels(logits, targets, "targets")
                        checked = True
                    value = value_of(logits, ys, ts, idx)
                    if step > 0 and self.keep == "best":  # this pass scores the iterate x_adv
                        run.offer(x_adv, value, success_of(logits, ys, ts))
                    (grad,) = torch.autograd.grad(value.sum(), x_adv)
                    grad_evals += len(idx)
                    with torch.no_grad():
                        x_adv = project(torch.add(x_adv, threat.step(grad, x_adv), alpha=alpha))

                # the last iterate: scored by one forward pass without a graph (no_grad is as fast as
                # inference_mode here and leaves ordinary tensors, which objectives and models may need)
                with torch.no_grad():
                    logits = predict(model, x_adv)
                    value = value_of(logits, ys, ts, idx)
                forwards += len(idx)
                if self.keep == "best":
                    run.offer(x_adv, value, success_of(logits, ys, ts))
                    points = (run.points(), run.loss, run.success)
                else:  # "last": the final iterate replaces the stored one unconditionally
                    points = (x_adv, value.float(), success_of(logits, ys, ts))
                self._merge(best_x, best_loss, best_success, idx, points, always=self.keep == "last")

        return AttackResult(best_x, best_success, grad_evals=grad_evals, forwards=forwards)

    @staticmethod
    def _merge(best_x, best_loss, best_success, idx, run, always=False) -> None:
        """Write the points ``run = (x, loss, success)`` into the batch's best (rows ``idx``) where better."""
        run_x, run_loss, run_success = run
        with torch.no_grad():
            better = torch.ones_like(run_success) if always else _better(
                run_success, run_loss, best_success[idx], best_loss[idx])
            sel = idx[better]
            best_x[sel] = run_x.detach()[better]
            best_loss[sel] = run_loss[better]
            best_success[sel] = run_success[better]

    @staticmethod
    def _keep_best(best_x, best_loss, best_success, idx, x_adv, objective, logits, ys, ts, always=False) -> None:
        """Offer the points ``x_adv`` (rows ``idx`` of the batch) to the batch's best, in place (APGD uses it)."""
        with torch.no_grad():
            success = success_of(logits, ys, ts)
            GradientAttack._merge(best_x, best_loss, best_success, idx, (x_adv, objective.detach().float(), success),
                                  always)

    @staticmethod
    def _check_targets(targets, y) -> torch.Tensor:
        """Explicit targets as a long tensor on y's device; their range is checked on the first logits."""
        if not isinstance(targets, torch.Tensor) or targets.shape != y.shape:
            raise ValueError(f"targets must be a tensor of shape {tuple(y.shape)} (one class per example).")
        if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"targets must hold integer class indices, got dtype {targets.dtype}.")
        return targets.to(device=y.device, dtype=torch.long)

    def _draw_targets(self, clean_logits, y, generator) -> torch.Tensor | None:
        """Targets of ``targeted="least-likely"`` (lowest clean logit) or ``"random"`` (a wrong class)."""
        if self.targeted == "least-likely":
            return clean_logits.argmin(dim=1)
        if self.targeted == "random":
            classes = clean_logits.shape[1]
            offset = torch.randint(1, classes, y.shape, generator=generator, device=y.device)
            return (y + offset) % classes
        return None


def _better(success, loss, best_success, best_loss) -> torch.Tensor:
    """bool (N,): a successful point beats an unsuccessful one; otherwise the higher loss wins."""
    return torch.where(success != best_success, success, loss > best_loss)


class _RestartBest:
    """The best point so far of one restart, per row; ties keep the earlier point.

    Kept lazily: a row whose best is the latest offered point is copied only when a later point
    fails to beat it (before that point is dropped). PGD's loss mostly rises, so a step usually
    copies no input at all.
    """

    def __init__(self, start: torch.Tensor) -> None:
        n, device = len(start), start.device
        self.x = start.clone()  # rows whose best is an older point (at first: ``start``, never offered)
        self.loss = torch.full((n,), float("-inf"), device=device)
        self.success = torch.zeros(n, dtype=torch.bool, device=device)
        self.latest: torch.Tensor | None = None
        self.is_latest = torch.zeros(n, dtype=torch.bool, device=device)

    @torch.no_grad()
    def offer(self, x_new: torch.Tensor, value: torch.Tensor, success: torch.Tensor) -> None:
        loss = value.detach().float()
        better = _better(success, loss, self.success, self.loss)
        stays = self.is_latest > better  # rows whose best is the latest point, which this one does not beat
        if self.latest is not None and bool(stays.any()):
            rows = stays.nonzero().squeeze(1)
            self.x.index_copy_(0, rows, self.latest.index_select(0, rows))
        self.loss = torch.where(better, loss, self.loss)
        self.success = self.success | success  # a better point is never less successful
        self.latest, self.is_latest = x_new.detach(), better

    def points(self) -> torch.Tensor:
        if self.latest is None:
            return self.x
        return torch.where(self.is_latest.view(-1, *([1] * (self.x.dim() - 1))), self.latest, self.x)


@dataclass(frozen=True)
class PGD(GradientAttack):
    """Projected Gradient Descent (Madry et al. 2018): ``steps`` steps from a random start.

    The default step size is ``2.5 * eps / steps`` (the paper's recommendation);
    the paper's MNIST attacks use ``step_size=0.01`` with eps=0.3.
    """


@dataclass(frozen=True)
class FGSM(GradientAttack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of size eps from the clean input.

    Under L2/L1 threat models it is the one-step steepest ascent of that norm (FGM).
    """

    _: KW_ONLY
    steps: int = 1
    rel_step_size: float | None = 1.0
    random_start: bool = False
