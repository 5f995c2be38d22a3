"""The checks on the model itself, with cheap probes on a sample of the data: randomized outputs,
probabilities instead of logits, zero, non-finite or shattered input gradients, and a model that one
gradient step cannot break but ten can (catastrophic overfitting)."""

from __future__ import annotations

import torch

from robustopt import losses
from robustopt.attacks.gradient import FGSM, PGD
from robustopt.attacks.passes import output_change
from robustopt.evaluation.audit.context import AuditContext
from robustopt.evaluation.audit.findings import Finding, Level
from robustopt.evaluation.audit.registry import register_check
from robustopt.threat import Linf

__all__ = ["GRAD_TOL", "SHATTERED_WIN_RATE", "SINGLE_STEP_GAP"]


# An example's gradient "vanishes" when a step across the whole pixel range along the
# best direction would change the loss by less than this, to first order:
# ||grad||_1 * (high - low) <= GRAD_TOL, for both the CE and the logit-margin loss.
GRAD_TOL = 1e-8
# ``shattered-gradient`` fires when a step along the gradient beats the best of 4 random steps
# of the same size for fewer than this fraction of the probe examples. A useful gradient wins
# nearly always; a meaningless one about 1 time in 5 (as often as each of the 4 random steps).
SHATTERED_WIN_RATE = 0.7
# ``single-step-gap`` fires when FGSM leaves at least this much more robust accuracy than PGD-10 and
# PGD-10 leaves less than half of what FGSM leaves (the zoo's FGSM-RS model that overfitted: about 0.8
# against 0.0; its robust models: gaps below 0.2; bench/results/zoo-audit).
SINGLE_STEP_GAP = 0.2


@register_check("randomized-output", needs=["model"])
def _randomized_output(ctx: AuditContext) -> list[Finding]:
    """The same inputs, twice, in eval mode, give different outputs.

    Always an error: a random model's robust accuracy is itself a random variable, whether or not one
    of the probe's predictions happens to flip between the two passes (the level once depended on
    that, and so changed from run to run on the zoo's input-noise entry).
    """
    a, b = ctx.logits, ctx.logits_again
    diff, randomized = output_change(a, b)  # beyond the rounding of non-deterministic GPU kernels
    if not randomized:
        return []
    flipped = float((a.argmax(1) != b.argmax(1)).float().mean())
    return [Finding("error", "randomized-output", (
        f"The model is random: two forward passes in eval mode on the same {len(a)} inputs differ "
        f"(largest logit change {diff:.3g}; the predicted class changed for {100 * flipped:.1f}% of them). "
        "A randomized defense makes one run of a deterministic attack meaningless: the attack follows one "
        "random draw and the accuracy is measured on another. Attack the expectation instead (EOT: average "
        "the gradient over many draws, e.g. 20), report accuracy over several forward passes, and use "
        "gradient-free attacks; if the randomness is unintended, look for dropout or noise layers that "
        "ignore eval mode."
    ), {"max_logit_change": diff, "prediction_flips": flipped, "examples": len(a)})]


@register_check("probability-output", needs=["model"])
def _probability_output(ctx: AuditContext) -> list[Finding]:
    """The outputs are probabilities (in [0, 1], rows summing to 1): a softmax at the end."""
    z = ctx.logits
    if not z.numel() or not torch.isfinite(z).all():
        return []
    in_range = bool((z >= -1e-6).all() and (z <= 1 + 1e-6).all())
    sums = z.sum(1)
    if not (in_range and torch.allclose(sums, torch.ones_like(sums), atol=1e-3)):
        return []
    return [Finding("error", "probability-output", (
        "The model outputs probabilities (every output is in [0, 1] and each row sums to 1), not logits: "
        "it ends with a softmax. The attacks' losses apply their own softmax, so they see a doubly "
        "squashed output whose gradients vanish when the model is confident, and gradient attacks look "
        "weaker than they are (false robustness). Remove the final softmax and return logits; attack the "
        "model without it."
    ), {"examples": len(z)})]


@register_check("zero-gradient", needs=["model"])
def _zero_gradient(ctx: AuditContext) -> list[Finding]:
    """Input gradients are zero or vanishing for many examples (CE and margin losses both)."""
    g = ctx.grads
    width = ctx.bounds[1] - ctx.bounds[0]
    norms = {k: g[k].flatten(1).abs().sum(1) * width for k in ("ce", "margin")}
    finite = torch.isfinite(norms["ce"]) & torch.isfinite(norms["margin"])
    finite &= torch.isfinite(g["ce_loss"]) & torch.isfinite(g["margin_loss"])  # NaN rows: see nonfinite
    vanishing = finite & (norms["ce"] <= GRAD_TOL) & (norms["margin"] <= GRAD_TOL)
    frac = float(vanishing.float().mean()) if len(vanishing) else 0.0
    exact = float((finite & (norms["ce"] == 0) & (norms["margin"] == 0)).float().mean()) if len(vanishing) else 0.0
    if frac < 0.05:
        return []
    level: Level = "error" if frac >= 0.5 else "warning"
    return [Finding(level, "zero-gradient", (
        f"The input gradient is zero or vanishing for {100 * frac:.0f}% of {len(vanishing)} probe examples "
        f"({100 * exact:.0f}% exactly zero), for both the cross-entropy and the logit-margin loss. Gradient "
        "attacks then have no direction to follow and fail, while the model need not be robust: this is "
        "gradient masking. Typical causes: a non-differentiable layer (rounding, quantization, argmax, "
        "thresholds, JPEG), a saturated softmax or clamp, or a detach() in the forward pass. Try: BPDA "
        "(replace the layer by the identity on the backward pass), transfer attacks from a differentiable "
        "copy of the model, and gradient-free attacks such as Square."
    ), {"fraction": frac, "exactly_zero": exact, "examples": len(vanishing), "rule": f"||grad||_1 * width <= {GRAD_TOL}"})]


@register_check("nonfinite", needs=["model"])
def _nonfinite(ctx: AuditContext) -> list[Finding]:
    """NaN or infinite logits or input gradients."""
    bad_logits = ~torch.isfinite(ctx.logits).all(1)
    g = ctx.grads
    bad_grads = ~(torch.isfinite(g["ce"].flatten(1)).all(1) & torch.isfinite(g["margin"].flatten(1)).all(1))
    n_logits, n_grads = int(bad_logits.sum()), int((bad_grads & ~bad_logits).sum())
    if n_logits == 0 and n_grads == 0:
        return []
    return [Finding("error", "nonfinite", (
        f"NaN or infinite values: the logits of {n_logits} and the input gradients of {n_grads} more of "
        f"{len(bad_logits)} probe examples are not finite. A NaN loss makes every comparison false, so "
        "attacks silently stop improving (and NaN logits can even be counted as correct). Look for log(0), "
        "division by zero, sqrt at 0 or overflowing exp in the model or its preprocessing; compute losses "
        "from logits (log_softmax), not from probabilities."
    ), {"nonfinite_logits": n_logits, "nonfinite_gradients": n_grads, "examples": len(bad_logits)})]


@register_check("shattered-gradient", needs=["model"])
def _shattered_gradient(ctx: AuditContext) -> list[Finding]:
    """A step along the gradient raises the loss no more than random steps do."""
    assert ctx.x is not None and ctx.y is not None
    g = ctx.grads["margin"]
    usable = torch.isfinite(g.flatten(1)).all(1) & (g.flatten(1).abs().sum(1) > 0)
    usable &= torch.isfinite(ctx.grads["margin_loss"])
    if int(usable.sum()) < 10:
        return []
    x, y, g = ctx.x[usable], ctx.y[usable], g[usable]
    lo, hi = ctx.bounds
    threat = ctx.threat if ctx.threat is not None and ctx.threat.eps > 0 else None
    # The probe step: a quarter of the attack's eps (the scale the attack works at), else 2% of the range.
    h = threat.eps / 4 if threat is not None else 0.02 * (hi - lo)
    geometry = threat if threat is not None else Linf(h, bounds=(lo, hi))
    gen = torch.Generator(device=x.device).manual_seed(ctx.seed)

    def margin_at(x_new: torch.Tensor) -> torch.Tensor:
        return losses.margin(ctx.forward(x_new), y)

    # Each example gets its own step in [h/2, h], so that no single step size aliases with a periodic
    # preprocessing; the gradient step and its random rivals use the same size.
    sizes = h * (0.5 + 0.5 * torch.rand(len(x), generator=gen, device=x.device, dtype=x.dtype))
    sizes = sizes.view(-1, *([1] * (x.dim() - 1)))
    base = margin_at(x)
    up = margin_at((x + sizes * geometry.step(g, x)).clamp(lo, hi)) - base
    random_best = torch.full_like(up, float("-inf"))
    trials = 4
    for _ in range(trials):
        r = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        random_best = torch.maximum(random_best, margin_at((x + sizes * geometry.step(r, x)).clamp(lo, hi)) - base)
    win = float((up > random_best).float().mean())
    if win >= SHATTERED_WIN_RATE:
        return []
    return [Finding("warning", "shattered-gradient", (
        f"The gradient does not point uphill: a step of size {h / 2:.3g} to {h:.3g} along it raised the loss more than the "
        f"best of {trials} random steps of the same size for only {100 * win:.0f}% of {len(x)} probe examples "
        f"(a useful gradient wins nearly always; a meaningless one about {100 / (trials + 1):.0f}% of the "
        "time). The gradients are shattered or obfuscated (a non-smooth or high-frequency preprocessing, "
        "randomness), so gradient attacks wander and the accuracy they leave is not a robustness measure. "
        "Try BPDA (differentiate a smooth approximation of the preprocessing, or the identity), EOT if the "
        "model is random, transfer attacks, and gradient-free attacks such as Square."
    ), {"gradient_win_rate": win, "step": h, "random_trials": trials, "examples": len(x)})]


@register_check("single-step-gap", needs=["model"])
def _single_step_gap(ctx: AuditContext) -> list[Finding]:
    """One gradient step (FGSM) leaves far more accuracy than ten (PGD-10): catastrophic overfitting."""
    assert ctx.x is not None and ctx.y is not None
    if ctx.threat is None or ctx.threat.eps <= 0 or len(ctx.x) < 10:
        return []
    correct = ctx.logits.argmax(1) == ctx.y

    def robust(attack) -> float:
        x_adv = torch.cat([attack(ctx.model, ctx.x[s], ctx.y[s]) for s in ctx._batches()])
        return float((correct & (ctx.forward(x_adv).argmax(1) == ctx.y)).float().mean())

    one = robust(FGSM(ctx.threat))
    ten = robust(PGD(ctx.threat, steps=10, seed=ctx.seed))
    if one - ten < SINGLE_STEP_GAP or ten >= one / 2:
        return []
    return [Finding("warning", "single-step-gap", (
        f"One gradient step leaves {100 * one:.1f}% robust accuracy where ten leave {100 * ten:.1f}% "
        f"({len(ctx.x)} probe examples, {ctx.threat}): the loss is flat along the gradient at the clean "
        "point and rises steeply a little further, the signature of catastrophic overfitting (Wong, Rice "
        "& Kolter 2020) in a model trained with single-step attacks. Numbers from FGSM, or from training "
        "logs that use it, overstate the robustness; trust multi-step attacks with restarts (the standard "
        "suite), and retrain with the guard on or with N-FGSM or a smaller step."
    ), {"fgsm_robust_accuracy": one, "pgd10_robust_accuracy": ten, "examples": len(ctx.x)})]
