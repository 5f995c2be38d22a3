"""The checks that read the stages of a cascade (its rows in cascade mode, or the stages a
scheduled suite records): a weak cross-entropy stage, a black-box stage that breaks the survivors."""

from __future__ import annotations

from dataclasses import dataclass

from robustopt.attacks.base import Attack
from robustopt.evaluation.audit.context import AuditContext
from robustopt.evaluation.audit.findings import Finding, Level
from robustopt.evaluation.audit.registry import register_check
from robustopt.evaluation.audit.rows import evaluation_of, pct, stage_kind
from robustopt.evaluation.records import stage_budget
from robustopt.evaluation.results import Evaluation, Row

__all__: list[str] = []


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
    return [stage_kind(a.describe()) for a in stages]


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
    return [_Stage(r.name, "natural" if r.natural else stage_kind(r.attack, r.source), r.attacked,
                   max(0, before.robust - r.robust)) for before, r in zip(ev.rows, ev.rows[1:])]


@register_check("ce-stage-weak", needs=["evaluation"])
def _ce_stage_weak(ctx: AuditContext) -> list[Finding]:
    """Later stages of a cascade break most of what its cross-entropy stage (APGD-CE, PGD) left.

    The signature of uninformative CE gradients: saturated logits (logits scaled up, as in
    defensive distillation) or a catastrophically overfitted single-step model.
    """
    ev = evaluation_of(ctx)
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
        f"the stages ({pct(ev.robust_accuracy)}), which {top.name} drives, not a PGD or APGD number with "
        "the CE loss alone; in attacks of your own use a scale-invariant loss (DLR, the CW margin)."
    ), {"ce_stage": ce.name, "ce_broken": ce_broken, "later_broken": broken_later, "share": share,
        "strongest_later_stage": top.name})]


@register_check("black-box-breaks-survivors", needs=["evaluation"])
def _black_box_breaks_survivors(ctx: AuditContext) -> list[Finding]:
    """A gradient-free stage (Square) breaks a large share of what every gradient stage left.

    A random search on the outputs should find little that working gradient attacks missed;
    when it breaks a large share of their survivors, the gradients were masked.
    """
    ev = evaluation_of(ctx)
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
            f"{st.name} and the worst case over all the stages ({pct(ev.robust_accuracy)}), not any "
            "white-box number alone; to measure the model's robustness, attack it around its masking "
            "(BPDA for non-differentiable preprocessing, EOT for randomness, transfer from a smooth model)."
        ), {"stage": st.name, "broken": st.broken, "attacked": st.attacked, "share": share,
            "white_box_stages": [s.name for s in white]}))
    return findings
