"""The built-in training methods: "natural", "pgd", "fgsm-rs", "n-fgsm", "trades" and "free".

Each is registered in :data:`robustopt.training.METHODS` when this module is imported (which
:mod:`robustopt.training` does); the contract they follow is :mod:`robustopt.training.methods`.
The first four craft a batch and train on its cross-entropy (:func:`crafting_method`); TRADES
and Free yield their updates themselves.

Example:
    >>> batch = pgd(MethodContext(model, threat=ro.Linf(0.3), config=cfg, generator=g), x, y)
    >>> batch.x.shape == x.shape
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from robustopt import losses
from robustopt.attacks import PGD, GradientAttack
from robustopt.attacks.passes import eval_mode, predict
from robustopt.threat import ThreatModel
from robustopt.training.methods import (Crafted, MethodContext, Update, crafting_method, kl_per_example,
                                        register_method)

__all__ = ["natural", "pgd", "fgsm_rs", "n_fgsm", "trades", "free"]


# --- the attack-then-cross-entropy methods: each a craft function, registered as crafting_method(craft) ---


def natural(ctx: MethodContext, x: torch.Tensor, y: torch.Tensor) -> Crafted:
    """Standard (non-robust) training: train on the clean batch. No attack, eps is ignored."""
    return Crafted(x, 0)


register_method("natural", grad_evals=lambda config: 1)(crafting_method(natural))


def pgd(ctx: MethodContext, x: torch.Tensor, y: torch.Tensor) -> Crafted:
    """PGD adversarial training (Madry et al. 2018, Sec. 4): the crafted batch.

    The inner maximization is ``config.attack_steps`` steps of projected gradient
    ascent on the cross-entropy, step ``config.attack_step_size`` (absolute, pixel
    space; None means ``2.5 * eps / steps``), from a uniform random point of the ball
    if ``config.attack_random_start``. The engine keeps, per example, the iterate
    with the highest loss (a misclassified one first). The attack runs the model in
    eval mode. At ``eps = 0`` (e.g. the start of an eps warm-up) it is natural training.
    """
    config = ctx.config
    return _craft(ctx.model, x, y, ctx.threat, ctx.generator, lambda: PGD(
        ctx.threat, steps=config.attack_steps, step_size=config.attack_step_size,
        random_start=config.attack_random_start))


register_method("pgd", grad_evals=lambda config: config.attack_steps + 1)(crafting_method(pgd))


def fgsm_rs(ctx: MethodContext, x: torch.Tensor, y: torch.Tensor) -> Crafted:
    """FGSM with random start (Wong, Rice & Kolter 2020, "Fast is better than free", Alg. 3): the crafted batch.

    One gradient step of size ``1.25 * eps`` from a point drawn uniformly in the ball,
    projected back onto the ball and the box. ``attack_steps``, ``attack_step_size``
    and ``attack_random_start`` are not used. The attack runs the model in eval mode.
    """
    threat = ctx.threat
    if threat.eps == 0:
        return Crafted(x, 0)
    return _single_step(ctx.model, x, y, threat.random_init(x, ctx.generator), threat, 1.25 * threat.eps)


register_method("fgsm-rs", grad_evals=lambda config: 2)(crafting_method(fgsm_rs))


def n_fgsm(ctx: MethodContext, x: torch.Tensor, y: torch.Tensor) -> Crafted:
    """N-FGSM (de Jorge et al. 2022, "Make some noise"): noise of 2 eps, a step of eps, no clipping to the ball.

    From a point drawn uniformly in the ball of radius ``2 * eps``, one gradient step of
    size ``eps`` (l_inf: ``eps * sign(grad)``), clipped to the box only: the training point
    may lie up to ``3 * eps`` from x. The wider noise and the missing projection are what
    keep single-step training from catastrophic overfitting at large eps without extra
    cost. ``attack_steps``, ``attack_step_size`` and ``attack_random_start`` are not used.
    The attack runs the model in eval mode.
    """
    threat = ctx.threat
    if threat.eps == 0:
        return Crafted(x, 0)
    start = dataclasses.replace(threat, eps=2 * threat.eps).random_init(x, ctx.generator)
    wide = dataclasses.replace(threat, eps=3 * threat.eps)  # in this ball the projection is the box clip alone
    return _single_step(ctx.model, x, y, wide.project(start, x), wide, threat.eps)


register_method("n-fgsm", grad_evals=lambda config: 2)(crafting_method(n_fgsm))


def _craft(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, generator: torch.Generator,
           attack: Callable[[], GradientAttack]) -> Crafted:
    """The training batch of an attack-then-CE method: ``x`` itself at eps 0, else the points of ``attack()``.

    Args:
        attack: builds the attack (only at eps > 0: some step sizes are multiples of eps).
    """
    if threat.eps == 0:
        return Crafted(x, 0)
    result = attack().run(model, x, y, generator=generator)
    return Crafted(result.x_adv.detach(), result.grad_evals)


def _single_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, threat: ThreatModel,
                 step_size: float) -> Crafted:
    """One steepest-ascent step on the cross-entropy from ``start`` (a point of the threat set around ``x``).

    The points of a one-step ``GradientAttack`` with ``keep="last"`` started at ``start``, bit
    for bit, in eval mode, without the engine's forward pass that scores the last iterate: a
    training method needs the points, not their success flags. Costs one forward and backward
    pass per example.
    """
    with eval_mode(model), torch.enable_grad():
        x0 = start.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(losses.ce(predict(model, x0), y).sum(), x0)
    with torch.no_grad():
        x_adv = threat.project(torch.add(x0, threat.step(grad, x0), alpha=step_size), x)
    return Crafted(x_adv, len(x))


@register_method("trades", grad_evals=lambda config: config.attack_steps + 2)
def trades(ctx: MethodContext, x: torch.Tensor, y: torch.Tensor) -> Iterator[Update]:
    """TRADES (Zhang et al. 2019, "Theoretically principled trade-off between robustness and accuracy").

    Loss: ``CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv))``, the KL averaged
    over the batch ("batchmean"), both forward passes in train mode and differentiated
    (``beta = config.beta``). x_adv approximately maximizes the KL term: the attack engine
    takes ``config.attack_steps`` steps of ``config.attack_step_size`` (None: 2.5 * eps /
    steps) on the per-example KL to the clean prediction, from ``x + 0.001 * N(0, 1)``
    (projected onto the threat set) and keeps the last iterate, as the official code does;
    it runs the model in eval mode. ``attack_random_start`` is not used.

    Training accuracy is measured on x_adv. Cost per example: ``attack_steps`` input
    gradients plus 2 for the update (its backward runs through both forward passes).
    """
    model, threat, config, generator = ctx.model, ctx.threat, ctx.config, ctx.generator
    x_adv, attack_evals = x, 0
    if threat.eps > 0 and len(y):
        with eval_mode(model), torch.no_grad():
            clean_logits = predict(model, x)
        attack = GradientAttack(threat, steps=config.attack_steps, step_size=config.attack_step_size,
                                keep="last", label="TRADES-KL")
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        result = attack.run(model, x, y, generator=generator, start=x + 0.001 * noise,
                            objective=lambda logits, idx: kl_per_example(clean_logits[idx], logits))
        x_adv, attack_evals = result.x_adv.detach(), result.grad_evals
    ctx.forward.train()
    logits, logits_adv = ctx.forward(x), ctx.forward(x_adv)
    if not len(y):  # an empty shard of a distributed batch: zero loss, every parameter reached
        yield Update(logits.sum() + logits_adv.sum(), logits_adv, 0, x=x_adv)
        return
    loss = (F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            + config.beta * kl_per_example(logits, logits_adv).mean())
    yield Update(loss, logits_adv, attack_evals + 2 * len(y), x=x_adv)


@register_method("free", updates_per_batch=lambda config: config.replay, grad_evals=lambda config: config.replay)
def free(ctx: MethodContext, x: torch.Tensor, y: torch.Tensor) -> Iterator[Update]:
    """Free adversarial training (Shafahi et al. 2019, "Adversarial training for free!", Alg. 1).

    The minibatch is replayed ``m = config.replay`` times. Each replay is one weight
    update on ``CE(f(x + delta), y)`` in train mode; the backward pass of that update
    also gives the input gradient ``g`` (at the weights before the step), with which the
    perturbation takes one step of size eps: ``delta <- Proj_S(x)(x + delta + eps *
    step(g)) - x`` (for l_inf: ``eps * sign(g)``, then clipping to the ball and the box).
    delta starts at 0 and persists across replays and minibatches, in ``state["delta"]``
    (kept for the whole run and saved with the checkpoint; a smaller batch uses its first
    rows, a larger one is padded with zeros). The attack_* fields are not used.

    Cost: one forward/backward per example and replay (``m`` gradient evaluations per
    example and minibatch), so one epoch of Free costs ``m`` natural epochs: the paper's
    budget of E natural epochs is ``epochs = E / m``. An update whose input gradient is
    not finite (a float16 overflow step that the AMP scaler skips) leaves delta as it is.
    """
    threat, state = ctx.threat, ctx.state
    stored = state.get("delta")
    if stored is None or stored.shape[1:] != x.shape[1:]:
        stored = x.new_zeros((0, *x.shape[1:]))
    stored = stored.to(x)
    if len(stored) < len(x):
        stored = torch.cat([stored, x.new_zeros((len(x) - len(stored), *x.shape[1:]))])
    delta = stored[: len(x)].clone()
    for _ in range(ctx.config.replay):
        x_in = threat.project(x + delta, x).detach().requires_grad_(True)
        ctx.forward.train()
        logits = ctx.forward(x_in)
        loss = F.cross_entropy(logits, y, label_smoothing=ctx.config.label_smoothing) if len(y) else logits.sum()
        yield Update(loss, logits, len(y), x=x_in)
        grad = x_in.grad  # filled by the loop's backward of this update
        if grad is not None and bool(torch.isfinite(grad).all()):
            with torch.no_grad():
                delta = threat.project(x_in + threat.eps * threat.step(grad, x_in), x) - x
    stored[: len(x)] = delta
    state["delta"] = stored
