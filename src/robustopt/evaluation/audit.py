"""Audit a robustness claim for the signs of gradient masking and of a broken evaluation.

Gradient masking (Papernot et al. 2017; Athalye et al. 2018, "Obfuscated
Gradients Give a False Sense of Security") makes gradient attacks fail without
making the model robust. ``audit`` runs a registry of small checks, each a
function ``(AuditContext) -> list[Finding]`` registered with ``@register_check``:

* on the model, with cheap probes on at most ``probe`` (200) examples:
  ``randomized-output``, ``probability-output``, ``zero-gradient``, ``nonfinite``,
  ``shattered-gradient``;
* on an :class:`~robustopt.evaluation.Evaluation` (its rows):
  ``transfer-beats-whitebox``, ``gradient-free-beats-whitebox``, ``fgsm-beats-pgd``,
  ``more-steps-worse``; and on the stages of a cascade (its rows in cascade mode, or the
  stages a scheduled suite records, e.g. ``suites.standard(version="adaptive")``):
  ``ce-stage-weak``, ``black-box-breaks-survivors``;
* on a :class:`~robustopt.evaluation.sweep.SweepCurve`: ``non-monotone-eps``,
  ``no-collapse-at-large-eps``;
* on adversarial examples with their threat model: ``outside-threat``.

A check runs only when what it needs was passed. Levels: "error" means the
reported robustness is very likely wrong; "warning" means it is suspicious; "info"
is context that explains a pattern which looks odd but is expected.

Example:
    >>> findings = audit(model, (x, y), ev)
    >>> print(findings_table(findings))
"""

from __future__ import annotations

import functools
import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from robustopt import losses
from robustopt.attacks.base import WHITE_BOX_SOURCE, Attack, attack_key, check_batch, eval_mode, output_change, predict
from robustopt.evaluation.evaluate import _as_tensors
from robustopt.evaluation.results import Evaluation, Row
from robustopt.evaluation.records import stage_budget
from robustopt.evaluation.sweep import SweepCurve
from robustopt.threat import Linf, ThreatModel, by_name

__all__ = ["Finding", "AuditContext", "audit", "findings_table", "findings_summary", "register_check", "CHECKS"]

Level = Literal["error", "warning", "info"]
LEVELS: tuple[str, ...] = ("error", "warning", "info")

# An example's gradient "vanishes" when a step across the whole pixel range along the
# best direction would change the loss by less than this, to first order:
# ||grad||_1 * (high - low) <= GRAD_TOL, for both the CE and the logit-margin loss.
GRAD_TOL = 1e-8
# ``shattered-gradient`` fires when a step along the gradient beats the best of 4 random steps
# of the same size for fewer than this fraction of the probe examples. A useful gradient wins
# nearly always; a meaningless one about 1 time in 5 (as often as each of the 4 random steps).
SHATTERED_WIN_RATE = 0.7


@dataclass(frozen=True)
class Finding:
    """One result of the audit.

    Attributes:
        level: "error" (the robustness number is very likely wrong), "warning" (suspicious)
            or "info" (context).
        code: stable identifier, e.g. "zero-gradient".
        message: plain-language explanation: what was seen, what it means, what to try.
        details: the numbers behind it (JSON-ready).
    """

    level: Level
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: level, code, message, details."""
        return {"level": self.level, "code": self.code, "message": self.message, "details": dict(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        """The inverse of :meth:`to_dict`."""
        return cls(d["level"], d["code"], d["message"], dict(d.get("details") or {}))


# --- the context every check reads --------------------------------------------------------
@dataclass
class AuditContext:
    """What the checks look at; model probes are computed once, on demand, and cached.

    Attributes:
        model: the audited model, or None.
        x, y: the probe examples (at most ``probe`` of the data, drawn with ``seed``).
        x_all: all inputs (for ``outside-threat``).
        evaluation, sweep, x_adv, threat: what was passed to ``audit`` (threat possibly
            read from the evaluation).
        batch_size: examples per forward pass.
        seed: seed of the probe's random directions.
    """

    model: nn.Module | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    x_all: torch.Tensor | None = None
    evaluation: Evaluation | None = None
    sweep: SweepCurve | None = None
    x_adv: torch.Tensor | None = None
    threat: ThreatModel | None = None
    batch_size: int = 200
    seed: int = 0

    @property
    def bounds(self) -> tuple[float, float]:
        return self.threat.bounds if self.threat is not None else (0.0, 1.0)

    def _batches(self) -> list[slice]:
        n = 0 if self.x is None else len(self.x)
        return [slice(i, i + self.batch_size) for i in range(0, n, self.batch_size)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the model on ``x`` (eval mode, no grad), in batches."""
        assert self.model is not None
        with eval_mode(self.model), torch.no_grad():
            return torch.cat([predict(self.model, x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])

    @functools.cached_property
    def logits(self) -> torch.Tensor:
        assert self.x is not None
        return self.forward(self.x)

    @functools.cached_property
    def logits_again(self) -> torch.Tensor:
        """A second forward pass on the same inputs (for ``randomized-output``)."""
        _ = self.logits
        assert self.x is not None
        return self.forward(self.x)

    @functools.cached_property
    def grads(self) -> dict[str, torch.Tensor]:
        """Input gradients of the CE loss and of the margin ``max_{j != y} z_j - z_y``, with the losses."""
        assert self.model is not None and self.x is not None and self.y is not None
        out: dict[str, list[torch.Tensor]] = {"ce": [], "margin": [], "ce_loss": [], "margin_loss": []}
        with eval_mode(self.model), torch.enable_grad():
            for s in self._batches():
                xb = self.x[s].detach().clone().requires_grad_(True)
                logits = predict(self.model, xb)
                ce = F.cross_entropy(logits, self.y[s], reduction="none")
                margin = losses.margin(logits, self.y[s])
                for name, loss in (("ce", ce), ("margin", margin)):
                    if loss.requires_grad:
                        (g,) = torch.autograd.grad(loss.sum(), xb, retain_graph=True, allow_unused=True)
                    else:  # the model cut the graph (e.g. .detach() or no_grad inside): no gradient at all
                        g = None
                    out[name].append(torch.zeros_like(xb) if g is None else g.detach())
                    out[name + "_loss"].append(loss.detach())
        return {k: torch.cat(v) for k, v in out.items()}


# --- the registry -----------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """A registered check: its code, its function and what it needs ("model", "evaluation", "sweep", "x_adv")."""

    code: str
    fn: Callable[[AuditContext], list[Finding]]
    needs: frozenset[str]
    summary: str


CHECKS: dict[str, Check] = {}
_NEEDS = {"model", "evaluation", "sweep", "x_adv"}


def register_check(code: str, *, needs: Iterable[str]) -> Callable[[Callable[[AuditContext], list[Finding]]], Callable]:
    """Register ``fn(ctx) -> list[Finding]`` under ``code``; it runs when everything in ``needs`` was given.

    Example:
        >>> @register_check("my-check", needs=["model"])
        ... def my_check(ctx): return []
    """
    needs = frozenset(needs)
    if not needs <= _NEEDS:
        raise ValueError(f"needs must be a subset of {sorted(_NEEDS)}, got {sorted(needs)}.")

    def decorate(fn: Callable[[AuditContext], list[Finding]]) -> Callable[[AuditContext], list[Finding]]:
        if code in CHECKS:
            raise ValueError(f"a check named {code!r} is already registered.")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        CHECKS[code] = Check(code, fn, needs, summary)
        return fn

    return decorate


# --- model checks -------------------------------------------------------------------------
@register_check("randomized-output", needs=["model"])
def _randomized_output(ctx: AuditContext) -> list[Finding]:
    """The same inputs, twice, in eval mode, give different outputs."""
    a, b = ctx.logits, ctx.logits_again
    diff, randomized = output_change(a, b)  # beyond the rounding of non-deterministic GPU kernels
    if not randomized:
        return []
    flipped = float((a.argmax(1) != b.argmax(1)).float().mean())
    level: Level = "error" if flipped > 0 else "warning"
    return [Finding(level, "randomized-output", (
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


# --- evaluation checks --------------------------------------------------------------------
def _kind(row: Row) -> str:
    """"natural", "gradient-free", "transfer" or "white-box"."""
    if row.natural:
        return "natural"
    return _kind_of(row.attack, row.source)


def _kind_of(description: Mapping[str, Any], source: str = WHITE_BOX_SOURCE) -> str:
    """The kind of the attack an ``Attack.describe()`` dict describes: "gradient-free", "transfer" or "white-box"."""
    key = attack_key(description)
    if key == "transfer" or source not in (WHITE_BOX_SOURCE, ""):
        return "transfer"
    return "gradient-free" if key == "square" else "white-box"


def _stage_kind(description: Mapping[str, Any], source: str = WHITE_BOX_SOURCE) -> str:
    """:func:`_kind_of`, with "ce" for an untargeted white-box attack on the cross-entropy loss."""
    kind = _kind_of(description, source)
    ce = description.get("loss") == "ce" and not description.get("targeted")
    return "ce" if kind == "white-box" and ce else kind


def _evaluation(ctx: AuditContext) -> Evaluation:
    """The evaluation of a check that declared ``needs=["evaluation"]``."""
    assert ctx.evaluation is not None  # the audit runs the check only with an evaluation
    return ctx.evaluation


def _of_kind(ev: Evaluation, kind: str) -> list[Row]:
    """The rows of ``ev`` of one :func:`_kind`, in order."""
    return [r for r in ev.rows if _kind(r) == kind]


def _single_step(row: Row) -> bool:
    return row.key == "fgsm" or (row.steps == 1 and not row.attack.get("random_start", False))


def _pct(p: float) -> str:
    return f"{100 * p:.1f}%"


def _label(row: Row) -> str:
    budget = f" {row.steps}x{row.restarts}" if row.steps is not None and row.restarts is not None else ""
    return f"{row.name}{budget} (source {row.source})"


def _tolerance(p1: float, p2: float, n: int) -> float:
    """Noise allowance between two accuracies on n examples: max(0.5 points, 2 standard errors)."""
    se = math.sqrt(max(p1 * (1 - p1) + p2 * (1 - p2), 0.0) / max(n, 1))
    return max(0.005, 2 * se)


def _beats(ev: Evaluation, weak: Row, strong: list[Row]) -> tuple[float, str] | None:
    """Does ``weak`` reach a lower accuracy than every row of ``strong``, beyond noise?

    Independent rows compare directly. Cascade rows are cumulative, so only a row that ran
    after all of ``strong`` can show it: by how many examples it lowered the worst case.

    Returns:
        (gap, sentence describing it) or None.
    """
    if not strong:
        return None
    pos = {id(r): i for i, r in enumerate(ev.rows)}
    if ev.mode == "cascade":
        if any(pos[id(s)] > pos[id(weak)] for s in strong) or pos[id(weak)] == 0:
            return None
        before = ev.rows[pos[id(weak)] - 1].worst_case
        gap = before - weak.worst_case
        if gap > _tolerance(before, weak.worst_case, ev.n):
            return gap, (f"{_label(weak)} broke {_pct(gap)} of the examples that survived "
                         f"{', '.join(_label(s) for s in strong)} and every row before it")
        return None
    best = min(strong, key=lambda r: r.accuracy)
    gap = best.accuracy - weak.accuracy
    if gap > _tolerance(best.accuracy, weak.accuracy, ev.n):
        return gap, f"{_label(weak)} leaves {_pct(weak.accuracy)} accurate, {_label(best)} {_pct(best.accuracy)}"
    return None


@register_check("transfer-beats-whitebox", needs=["evaluation"])
def _transfer_beats_whitebox(ctx: AuditContext) -> list[Finding]:
    """A transfer (black-box) row reaches lower accuracy than white-box rows."""
    ev = _evaluation(ctx)
    white = _of_kind(ev, "white-box")
    findings = []
    for t in _of_kind(ev, "transfer"):
        hit = _beats(ev, t, white)
        if hit is not None:
            findings.append(Finding("error", "transfer-beats-whitebox", (
                f"A black-box attack beats every white-box attack: {hit[1]}. Transfer attacks only see this "
                "model through another model's gradients; they should not do better than attacks that use "
                "its own. Most likely the white-box gradients are masked (see the zero-gradient, "
                "shattered-gradient and randomized-output checks) or the white-box attacks are too weak "
                "(more steps and restarts, another loss such as CW or DLR, a tuned step size). Report the "
                "worst case over all rows, and do not trust the white-box numbers until this is explained."
            ), {"row": _label(t), "gap": hit[0]}))
            continue
        # "The same attack": same name and budget if run white-box, else the same name.
        same = [r for r in white if (r.name, r.steps, r.restarts) == (t.name, t.steps, t.restarts)]
        same = same or [r for r in white if r.name == t.name]
        hit = _beats(ev, t, same)
        if hit is None:
            continue
        multi = [r for r in white if (r.steps or 0) > 1]
        strongest = min(multi, key=lambda r: r.accuracy) if multi else None
        if _single_step(t) and strongest is not None and strongest.accuracy < t.accuracy:
            findings.append(Finding("info", "transfer-beats-whitebox", (
                f"FGSM from another model beats white-box FGSM: {hit[1]}. The multi-step white-box attacks "
                f"are still stronger ({_label(strongest)} leaves {_pct(strongest.accuracy)}), so this is the "
                "known weakness of single-step attacks on a robust model, not proof of gradient masking: "
                "adversarial training makes the loss curved around x, so the gradient of this model at x is a "
                "poor direction for one big step, while another model's gradient can happen to point better "
                "(Madry et al. 2018, Table 1: FGSM from B beat white-box FGSM on A). Rely on the multi-step "
                "rows; it would be masking if transfer PGD also beat white-box PGD."
            ), {"row": _label(t), "gap": hit[0], "strongest_white_box": _label(strongest)}))
        else:
            findings.append(Finding("warning", "transfer-beats-whitebox", (
                f"A black-box attack beats the same attack run white-box: {hit[1]}. With this model's own "
                "gradients the attack should do at least as well; either its gradients are partly masked "
                "or the white-box configuration is weak (step size, steps, restarts). Check the gradient "
                "findings and strengthen the white-box attack."
            ), {"row": _label(t), "gap": hit[0]}))
    return findings


@register_check("gradient-free-beats-whitebox", needs=["evaluation"])
def _gradient_free_beats_whitebox(ctx: AuditContext) -> list[Finding]:
    """A gradient-free row (Square) reaches lower accuracy than the gradient attacks."""
    ev = _evaluation(ctx)
    white = _of_kind(ev, "white-box")
    hits = [(r, _beats(ev, r, white)) for r in _of_kind(ev, "gradient-free")]
    return [Finding("warning", "gradient-free-beats-whitebox", (
        f"A gradient-free attack beats the gradient attacks: {hit[1]}. It only queries the model's "
        "outputs, so doing better than attacks that follow the gradient means those gradients are "
        "not useful here: likely gradient masking (zero, noisy or randomized gradients), or "
        "gradient attacks that are too weak. Trust the worst case over all rows, and repair the "
        "gradient attack (BPDA, EOT, more steps) before comparing defenses."
    ), {"row": _label(r), "gap": hit[0]}) for r, hit in hits if hit is not None]


@register_check("fgsm-beats-pgd", needs=["evaluation"])
def _fgsm_beats_pgd(ctx: AuditContext) -> list[Finding]:
    """White-box FGSM reaches lower accuracy than white-box PGD.

    Transfer rows are left out: from another model, single-step attacks often transfer
    better than iterative ones, which overfit the source (Kurakin et al. 2017).
    """
    ev = _evaluation(ctx)
    findings = []
    white = _of_kind(ev, "white-box")
    for f in (r for r in white if _single_step(r)):
        pgds = [r for r in white if r.key == "pgd" and (r.steps or 0) > 1]
        losers = [(p, hit) for p in pgds if (hit := _beats(ev, f, [p])) is not None]
        if not losers:
            continue
        findings.append(Finding("warning", "fgsm-beats-pgd", (
            f"One FGSM step does better than PGD: {losers[0][1][1]}. A PGD run that works is at least as strong "
            "as FGSM (it takes many steps and keeps each example's best point). Either PGD's step size is "
            "too small to leave a flat or noisy region around x (try 2.5 * eps / steps), or the loss "
            "surface is masked near x and FGSM's single big step jumps over it. Check the gradient findings; "
            "tune PGD until it beats FGSM."
        ), {"row": _label(f), "pgd_rows": [_label(p) for p, _ in losers], "gap": max(h[0] for _, h in losers)}))
    return findings


@register_check("more-steps-worse", needs=["evaluation"])
def _more_steps_worse(ctx: AuditContext) -> list[Finding]:
    """A white-box attack with more steps or restarts leaves higher accuracy than a smaller budget.

    Transfer rows are left out: more steps can overfit the source model and transfer worse.
    """
    ev = _evaluation(ctx)
    rows = [r for r in _of_kind(ev, "white-box") if r.steps is not None]

    def group(r: Row) -> tuple:
        a = r.attack or {}
        return (r.key, r.source, a.get("loss"), a.get("kappa"), a.get("targeted"))

    findings = []
    for small in rows:
        bigger = [b for b in rows if b is not small and group(b) == group(small)
                  and b.steps >= small.steps and (b.restarts or 1) >= (small.restarts or 1)
                  and (b.steps, b.restarts or 1) != (small.steps, small.restarts or 1)]
        hits = [(b, hit) for b in bigger if (hit := _beats(ev, small, [b])) is not None]
        if not hits:
            continue
        findings.append(Finding("warning", "more-steps-worse", (
            f"A bigger attack budget did worse: {hits[0][1]}. Each example keeps its best point over all "
            "steps and restarts, so more steps or restarts should never leave a higher accuracy beyond "
            "noise. Common causes: a step size tied to the number of steps (2.5 * eps / steps), so the "
            "longer attack takes tiny steps and stalls; a randomized model (see randomized-output); "
            "noisy or masked gradients. Try a fixed step size and check the gradient findings."
        ), {"fewer": _label(small), "more": [_label(b) for b, _ in hits], "gap": max(h[0] for _, h in hits)}))
    return findings


# --- checks that read a cascade's stages ------------------------------------------------------
@dataclass(frozen=True)
class _Stage:
    """One stage of a cascade: its name, its kind ("ce", "white-box", "gradient-free", "transfer"),
    the examples it attacked and those it broke (that every earlier stage had left)."""

    name: str
    kind: str
    attacked: int
    broken: int


def _stage_kinds(row: Row) -> list[str]:
    """The kinds of a scheduled attack's stages, in the order of its records: those of the stage attacks
    its configuration runs (``stages()``); [] where the configuration cannot be rebuilt here."""
    try:
        attack = Attack.from_dict(row.attack)
    except (ValueError, TypeError):  # an attack of one's own, not registered where the file is read
        return []
    stages = attack.stages() if callable(getattr(attack, "stages", None)) else []
    return [_stage_kind(a.describe()) for a in stages]


def _stages(ev: Evaluation) -> list[_Stage]:
    """The stages of the evaluation's cascade, in order: those of a scheduled attack's row (its
    records, e.g. the adaptive suite) or, in cascade mode, the rows themselves; [] otherwise."""
    scheduled = [r for r in ev.rows if stage_budget(r)]
    if scheduled:
        budget, kinds = stage_budget(scheduled[0]), _stage_kinds(scheduled[0])
        kinds += ["white-box"] * (len(budget) - len(kinds))
        return [_Stage(st["name"], kind, st["attacked"], st["broken"]) for st, kind in zip(budget, kinds)]
    if ev.mode != "cascade":
        return []
    return [_Stage(r.name, "natural" if r.natural else _stage_kind(r.attack, r.source), r.attacked,
                   max(0, before.robust - r.robust)) for before, r in zip(ev.rows, ev.rows[1:])]


@register_check("ce-stage-weak", needs=["evaluation"])
def _ce_stage_weak(ctx: AuditContext) -> list[Finding]:
    """Later stages of a cascade break most of what its cross-entropy stage (APGD-CE, PGD) left.

    The signature of uninformative CE gradients: saturated logits (logits scaled up, as in
    defensive distillation) or a catastrophically overfitted single-step model.
    """
    ev = _evaluation(ctx)
    stages = _stages(ev)
    first = next((i for i, st in enumerate(stages) if st.kind == "ce"), None)
    if first is None:
        return []
    # the CE side (every CE stage, e.g. FGSM then PGD) against the later stages of other losses or no gradient
    ce = stages[first]
    ce_broken = sum(st.broken for st in stages if st.kind == "ce")
    later = [st for st in stages[first + 1 :] if st.kind in ("white-box", "gradient-free")]
    broken_later = sum(st.broken for st in later)
    total = ce_broken + broken_later
    if broken_later == 0 or ev.n == 0:
        return []
    share, rate = broken_later / total, broken_later / ev.n
    if share >= 0.5 and rate >= 0.05:
        level: Level = "error"
    elif share >= 0.25 and rate >= 0.01 and broken_later >= 3:
        level = "warning"
    else:
        return []
    top = max(later, key=lambda st: st.broken)
    return [Finding(level, "ce-stage-weak", (
        f"The cross-entropy attack is fooled: {ce.name} broke {ce_broken} examples, the stages after it "
        f"{broken_later} more ({100 * share:.0f}% of all the breaks; {top.name} alone {top.broken}). Its "
        "cross-entropy gradients carry little information here: typically saturated logits (very large "
        "logits put the softmax at exactly 0 or 1, where the CE gradient vanishes, as in defensive "
        "distillation) or a catastrophically overfitted single-step model. Trust the worst case over all "
        f"the stages ({_pct(ev.robust_accuracy)}), which {top.name} drives, not a PGD or APGD number with "
        "the CE loss alone; in attacks of your own use a scale-invariant loss (DLR, the CW margin)."
    ), {"ce_stage": ce.name, "ce_broken": ce_broken, "later_broken": broken_later, "share": share,
        "strongest_later_stage": top.name})]


@register_check("black-box-breaks-survivors", needs=["evaluation"])
def _black_box_breaks_survivors(ctx: AuditContext) -> list[Finding]:
    """A gradient-free stage (Square) breaks a large share of what every gradient stage left.

    A random search on the outputs should find little that working gradient attacks missed;
    when it breaks a large share of their survivors, the gradients were masked.
    """
    ev = _evaluation(ctx)
    stages = _stages(ev)
    findings = []
    for i, st in enumerate(stages):
        white = [s for s in stages[:i] if s.kind in ("ce", "white-box")]
        if st.kind != "gradient-free" or not white or st.attacked == 0:
            continue
        share = st.broken / st.attacked
        if share >= 0.2 and st.broken >= 5:
            level: Level = "error"
        elif share >= 0.05 and st.broken >= 3 and any(stage_budget(r) for r in ev.rows):
            level = "warning"  # in a plain cascade, gradient-free-beats-whitebox reports this size
        else:
            continue
        findings.append(Finding(level, "black-box-breaks-survivors", (
            f"A black-box attack breaks what the gradient attacks left: {st.name} broke {st.broken} of the "
            f"{st.attacked} examples it attacked after {', '.join(s.name for s in white)} ({100 * share:.0f}%). "
            "It only queries the model's outputs, so working gradient attacks leave little for it to find: "
            "the gradients are masked (zero, saturated, shattered or randomized). Trust "
            f"{st.name} and the worst case over all the stages ({_pct(ev.robust_accuracy)}), not any "
            "white-box number alone; to measure the model's robustness, attack it around its masking "
            "(BPDA for non-differentiable preprocessing, EOT for randomness, transfer from a smooth model)."
        ), {"stage": st.name, "broken": st.broken, "attacked": st.attacked, "share": share,
            "white_box_stages": [s.name for s in white]}))
    return findings


# --- sweep checks ---------------------------------------------------------------------------
@register_check("non-monotone-eps", needs=["sweep"])
def _non_monotone_eps(ctx: AuditContext) -> list[Finding]:
    """Robust accuracy rises with eps."""
    c = ctx.sweep
    assert c is not None
    rises = []
    for i in range(1, len(c.eps)):
        lowest = min(c.accuracy[:i])
        j = c.accuracy.index(lowest)
        if c.accuracy[i] > lowest + _tolerance(lowest, c.accuracy[i], c.n):
            rises.append((c.eps[j], lowest, c.eps[i], c.accuracy[i]))
    if not rises:
        return []
    e1, a1, e2, a2 = rises[0]
    return [Finding("warning", "non-monotone-eps", (
        f"Robust accuracy rises with eps: {_pct(a1)} at eps={e1:.4g} but {_pct(a2)} at eps={e2:.4g}. The "
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
    if a > majority + _tolerance(majority, a, c.n):
        level: Level = "error"
    elif a > 0.05:
        level = "warning"
    else:
        return []
    return [Finding(level, "no-collapse-at-large-eps", (
        f"Accuracy does not collapse at a huge eps: {_pct(a)} at {c.norm} eps={e:.4g}. From eps={radius:.4g} "
        "on, every input can be moved to the same mid-gray image, so an optimal attack leaves at most the "
        f"share of the most common label ({_pct(majority)}) and a working attack gets close to 0. The attack "
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


# --- the entry point -------------------------------------------------------------------------
def audit(
    model: nn.Module | None,
    data: Any = None,
    evaluation: Evaluation | None = None,
    *,
    threat: ThreatModel | None = None,
    sweep: SweepCurve | None = None,
    x_adv: torch.Tensor | None = None,
    batch_size: int = 200,
    probe: int = 200,
    seed: int = 0,
    checks: Iterable[str] | None = None,
) -> list[Finding]:
    """Look for gradient masking and evaluation mistakes; return the findings, errors first.

    Args:
        model: the evaluated model (logits out), or None to audit only results.
        data: ``(x, y)`` tensors or an iterable of batches; at most ``probe`` examples are probed.
        evaluation: result of ``evaluate`` whose rows are compared (prefer ``mode="independent"``;
            cascade rows are cumulative, so fewer comparisons are possible).
        threat: the threat model; needed with ``x_adv``; by default read from the evaluation.
            Sets the bounds and the probe step (eps / 4) of ``shattered-gradient``.
        sweep: a ``SweepCurve`` to check for monotonicity and collapse at large eps.
        x_adv: adversarial examples aligned with ``data``, checked against ``threat``.
        batch_size: examples per forward pass of the probes.
        probe: how many examples the model checks use (drawn with ``seed``).
        seed: seed of the probe sample and of its random directions.
        checks: codes of the checks to run (default: every registered check whose needs are met;
            a check named here whose needs are not met raises ValueError).

    Returns:
        Findings sorted by level (error, warning, info), then in registry order.

    Example:
        >>> for f in audit(model, (x, y), ev): print(f.level, f.code, f.message)
    """
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}.")
    if evaluation is not None and not isinstance(evaluation, Evaluation):
        raise TypeError(f"evaluation must be an Evaluation (from ro.evaluate), got {type(evaluation).__name__}.")
    if sweep is not None and not isinstance(sweep, SweepCurve):
        raise TypeError(f"sweep must be a SweepCurve (from ro.sweep), got {type(sweep).__name__}.")
    if threat is not None and not isinstance(threat, ThreatModel):
        raise TypeError(f"threat must be a threat model such as ro.Linf(0.3), got {threat!r}.")
    for name, v in (("batch_size", batch_size), ("probe", probe)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    if threat is None and evaluation is not None:
        threat = evaluation.threat

    ctx = AuditContext(model=model, evaluation=evaluation, sweep=sweep, threat=threat, batch_size=batch_size, seed=seed)
    if data is not None:
        x, y = _as_tensors(data)
        check_batch(x, y, threat)
        if len(x) == 0:
            raise ValueError("data holds no examples: pass at least one (x, y) pair to audit.")
        y = y.long()
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:probe].to(x.device)
        ctx.x_all, ctx.x, ctx.y = x, x[pick], y[pick]
    if model is not None and data is None:
        raise ValueError("the model checks need data: pass (x, y), or model=None to audit only results.")
    if x_adv is not None:
        if ctx.x_all is None or threat is None:
            raise ValueError("checking x_adv needs the clean data and the threat model: pass data=(x, y) and threat=.")
        if not isinstance(x_adv, torch.Tensor) or x_adv.shape != ctx.x_all.shape:
            raise ValueError(
                f"x_adv must be a tensor shaped like the clean inputs {tuple(ctx.x_all.shape)}, one per example, "
                f"got {tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__}."
            )
        ctx.x_adv = x_adv.to(ctx.x_all.device)

    given = {"model": model is not None, "evaluation": evaluation is not None,
             "sweep": sweep is not None, "x_adv": ctx.x_adv is not None}
    if checks is None:
        selected = list(CHECKS.values())
    else:
        codes = list(checks)
        unknown = [c for c in codes if c not in CHECKS]
        if unknown:
            raise ValueError(f"unknown checks {unknown}; registered: {sorted(CHECKS)}.")
        selected = [CHECKS[c] for c in codes]
        for check in selected:
            missing = sorted(need for need in check.needs if not given[need])
            if missing:
                raise ValueError(f"check {check.code!r} needs {', '.join(missing)}; pass it to audit().")
    findings: list[Finding] = []
    for check in selected:
        if all(given[need] for need in check.needs):
            findings += check.fn(ctx)
    return sorted(findings, key=lambda f: LEVELS.index(f.level))


def findings_table(findings: Iterable[Finding], fmt: Literal["text", "markdown"] = "text", width: int = 100) -> str:
    """The findings as a readable list: level, code, then the wrapped message.

    Args:
        findings: what ``audit`` returned.
        fmt: "text" for the terminal, "markdown" for reports.
        width: line width of the text format.
    """
    findings = list(findings)
    if not findings:
        return findings_summary(findings) + "\n"
    if fmt == "markdown":
        out = ["| Level | Code | Finding |", "|---|---|---|"]
        out += [f"| {f.level} | `{f.code}` | {f.message.replace('|', '/')} |" for f in findings]
        return "\n".join(out) + f"\n\n{findings_summary(findings)}\n"
    if fmt != "text":
        raise ValueError(f"fmt must be 'text' or 'markdown', got {fmt!r}.")
    out = []
    for f in findings:
        out.append(f"{f.level.upper():<8}{f.code}")
        out.append(textwrap.fill(f.message, width=width, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(out) + f"\n{findings_summary(findings)}\n"


def findings_summary(findings: Iterable[Finding]) -> str:
    """One line: "Audit: no problems found." or the count per level, e.g. "Audit: 1 error, 0 warning, 0 info."."""
    findings = list(findings)
    if not findings:
        return "Audit: no problems found."
    return "Audit: " + ", ".join(f"{sum(f.level == lv for f in findings)} {lv}" for lv in LEVELS) + "."
