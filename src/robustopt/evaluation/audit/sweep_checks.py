"""The checks on an eps sweep (robust accuracy that rises with eps or does not collapse at a huge
eps) and on adversarial examples (outside the threat model)."""

from __future__ import annotations

import math

import torch

from robustopt.evaluation.audit.context import AuditContext
from robustopt.evaluation.audit.findings import Finding, Level
from robustopt.evaluation.audit.registry import register_check
from robustopt.evaluation.audit.rows import pct, tolerance
from robustopt.threat import by_name

__all__: list[str] = []


@register_check("non-monotone-eps", needs=["sweep"])
def _non_monotone_eps(ctx: AuditContext) -> list[Finding]:
    """Robust accuracy rises with eps."""
    c = ctx.sweep
    assert c is not None
    rises = []
    for i in range(1, len(c.eps)):
        lowest = min(c.accuracy[:i])
        j = c.accuracy.index(lowest)
        if c.accuracy[i] > lowest + tolerance(lowest, c.accuracy[i], c.n):
            rises.append((c.eps[j], lowest, c.eps[i], c.accuracy[i]))
    if not rises:
        return []
    e1, a1, e2, a2 = rises[0]
    return [Finding("warning", "non-monotone-eps", (
        f"Robust accuracy rises with eps: {pct(a1)} at eps={e1:.4g} but {pct(a2)} at eps={e2:.4g}. The "
        "larger ball contains the smaller one, so the true robust accuracy can only fall; an attack that "
        "does worse with more room is failing to find what exists (gradient masking, a step size that does "
        "not scale with eps, too few steps). Run the sweep as a cascade (the default), which carries "
        "broken examples forward, and look at the gradient findings."
    ), {"rises": [list(r) for r in rises]})]


@register_check("no-collapse-at-large-eps", needs=["sweep"])
def _no_collapse(ctx: AuditContext) -> list[Finding]:
    """Accuracy stays high at an eps where every input can reach the same image."""
    c = ctx.sweep
    assert c is not None
    bounds = c.meta.get("bounds", [0.0, 1.0])
    dim = c.meta.get("dim")
    try:
        p = by_name(c.norm).p
    except ValueError:  # a threat model of the user's own: no known geometry
        return []
    if dim is None and p != math.inf:
        return []
    # At this radius the mid-gray image is inside every example's ball (and the box), so an
    # optimal attack sends every example to one input: at most the most common label survives.
    # It is the l_p norm of the constant vector (hi - lo) / 2 in dim dimensions.
    radius = (bounds[1] - bounds[0]) / 2 * int(dim or 1) ** (1 / p)
    majority = float(c.meta.get("majority_fraction", 0.5))
    large = [(e, a) for e, a in zip(c.eps, c.accuracy) if e >= radius * (1 - 1e-9)]
    if not large:
        return []
    e, a = max(large)
    if a > majority + tolerance(majority, a, c.n):
        level: Level = "error"
    elif a > 0.05:
        level = "warning"
    else:
        return []
    return [Finding(level, "no-collapse-at-large-eps", (
        f"Accuracy does not collapse at a huge eps: {pct(a)} at {c.norm} eps={e:.4g}. From eps={radius:.4g} "
        "on, every input can be moved to the same mid-gray image, so an optimal attack leaves at most the "
        f"share of the most common label ({pct(majority)}) and a working attack gets close to 0. The attack "
        "is failing: gradient masking, or the threat model is not what you think (eps in 0-255 units, "
        "inputs normalized outside the model, wrong bounds)."
    ), {"eps": e, "accuracy": a, "collapse_radius": radius, "majority_fraction": majority})]


# --- adversarial examples ---------------------------------------------------------------------
@register_check("outside-threat", needs=["x_adv"])
def _outside_threat(ctx: AuditContext) -> list[Finding]:
    """Adversarial examples outside the threat model's ball or bounds, or not finite."""
    assert ctx.x_adv is not None and ctx.x_all is not None and ctx.threat is not None
    t, x, xa = ctx.threat, ctx.x_all, ctx.x_adv
    finite = torch.isfinite(xa).flatten(1).all(1)
    lo, hi = t.bounds
    atol = 1e-5
    in_box = ((xa >= lo - atol) & (xa <= hi + atol)).flatten(1).all(1)
    dist = t.distance(x, torch.nan_to_num(xa))
    in_ball = dist <= t.eps * (1 + atol) + atol
    bad = ~(finite & in_box & in_ball)
    if not bad.any():
        return []
    d = {"not_finite": int((~finite).sum()), "outside_bounds": int((finite & ~in_box).sum()),
         "outside_ball": int((finite & ~in_ball).sum()), "examples": len(x),
         "max_distance": float(dist[finite].max()) if finite.any() else None}
    return [Finding("error", "outside-threat", (
        f"{int(bad.sum())} of {len(x)} adversarial examples are outside {t}: {d['not_finite']} not finite, "
        f"{d['outside_bounds']} outside the bounds {t.bounds}, {d['outside_ball']} farther than eps "
        f"(largest distance {d['max_distance']}). Any accuracy measured on them is invalid (too low). Usual "
        "causes: no projection after the last step, eps in 0-255 units, normalization done outside the "
        "model (the box is then wrong), or a bug in the attack."
    ), d)]
