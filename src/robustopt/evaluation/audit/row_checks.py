"""The checks that compare an evaluation's rows: transfer or gradient-free attacks that beat the
white-box ones, FGSM that beats PGD, a bigger budget that does worse."""

from __future__ import annotations

from robustopt.evaluation.audit.context import AuditContext
from robustopt.evaluation.audit.findings import Finding
from robustopt.evaluation.audit.registry import register_check
from robustopt.evaluation.audit.rows import evaluation_of, label, of_kind, pct, recipe, single_step, tolerance
from robustopt.evaluation.results import Evaluation, Row

__all__: list[str] = []


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
        if gap > tolerance(before, weak.worst_case, ev.n):
            return gap, (f"{label(weak)} broke {pct(gap)} of the examples that survived "
                         f"{', '.join(label(s) for s in strong)} and every row before it")
        return None
    best = min(strong, key=lambda r: r.accuracy)
    gap = best.accuracy - weak.accuracy
    if gap > tolerance(best.accuracy, weak.accuracy, ev.n):
        return gap, f"{label(weak)} leaves {pct(weak.accuracy)} accurate, {label(best)} {pct(best.accuracy)}"
    return None


@register_check("transfer-beats-whitebox", needs=["evaluation"])
def _transfer_beats_whitebox(ctx: AuditContext) -> list[Finding]:
    """A transfer (black-box) row reaches lower accuracy than white-box rows."""
    ev = evaluation_of(ctx)
    white = of_kind(ev, "white-box")
    findings = []
    for t in of_kind(ev, "transfer"):
        hit = _beats(ev, t, white)
        if hit is not None:
            findings.append(Finding("error", "transfer-beats-whitebox", (
                f"A black-box attack beats every white-box attack: {hit[1]}. Transfer attacks only see this "
                "model through another model's gradients; they should not do better than attacks that use "
                "its own. Most likely the white-box gradients are masked (see the zero-gradient, "
                "shattered-gradient and randomized-output checks) or the white-box attacks are too weak "
                "(more steps and restarts, another loss such as CW or DLR, a tuned step size). Report the "
                "worst case over all rows, and do not trust the white-box numbers until this is explained."
            ), {"row": label(t), "gap": hit[0]}))
            continue
        # "The same attack": the same recipe and budget if run white-box, else the same recipe.
        same = [r for r in white if (recipe(r), r.steps, r.restarts) == (recipe(t), t.steps, t.restarts)]
        same = same or [r for r in white if recipe(r) == recipe(t)]
        hit = _beats(ev, t, same)
        if hit is None:
            continue
        multi = [r for r in white if (r.steps or 0) > 1]
        strongest = min(multi, key=lambda r: r.accuracy) if multi else None
        if single_step(t) and strongest is not None and strongest.accuracy < t.accuracy:
            findings.append(Finding("info", "transfer-beats-whitebox", (
                f"FGSM from another model beats white-box FGSM: {hit[1]}. The multi-step white-box attacks "
                f"are still stronger ({label(strongest)} leaves {pct(strongest.accuracy)}), so this is the "
                "known weakness of single-step attacks on a robust model, not proof of gradient masking: "
                "adversarial training makes the loss curved around x, so the gradient of this model at x is a "
                "poor direction for one big step, while another model's gradient can happen to point better "
                "(Madry et al. 2018, Table 1: FGSM from B beat white-box FGSM on A). Rely on the multi-step "
                "rows; it would be masking if transfer PGD also beat white-box PGD."
            ), {"row": label(t), "gap": hit[0], "strongest_white_box": label(strongest)}))
        else:
            findings.append(Finding("warning", "transfer-beats-whitebox", (
                f"A black-box attack beats the same attack run white-box: {hit[1]}. With this model's own "
                "gradients the attack should do at least as well; either its gradients are partly masked "
                "or the white-box configuration is weak (step size, steps, restarts). Check the gradient "
                "findings and strengthen the white-box attack."
            ), {"row": label(t), "gap": hit[0]}))
    return findings


@register_check("gradient-free-beats-whitebox", needs=["evaluation"])
def _gradient_free_beats_whitebox(ctx: AuditContext) -> list[Finding]:
    """A gradient-free row (Square) reaches lower accuracy than the gradient attacks."""
    ev = evaluation_of(ctx)
    white = of_kind(ev, "white-box")
    hits = [(r, _beats(ev, r, white)) for r in of_kind(ev, "gradient-free")]
    return [Finding("warning", "gradient-free-beats-whitebox", (
        f"A gradient-free attack beats the gradient attacks: {hit[1]}. It only queries the model's "
        "outputs, so doing better than attacks that follow the gradient means those gradients are "
        "not useful here: likely gradient masking (zero, noisy or randomized gradients), or "
        "gradient attacks that are too weak. Trust the worst case over all rows, and repair the "
        "gradient attack (BPDA, EOT, more steps) before comparing defenses."
    ), {"row": label(r), "gap": hit[0]}) for r, hit in hits if hit is not None]


@register_check("fgsm-beats-pgd", needs=["evaluation"])
def _fgsm_beats_pgd(ctx: AuditContext) -> list[Finding]:
    """White-box FGSM reaches lower accuracy than white-box PGD.

    Transfer rows are left out: from another model, single-step attacks often transfer
    better than iterative ones, which overfit the source (Kurakin et al. 2017).
    """
    ev = evaluation_of(ctx)
    findings = []
    white = of_kind(ev, "white-box")
    for f in (r for r in white if single_step(r)):
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
        ), {"row": label(f), "pgd_rows": [label(p) for p, _ in losers], "gap": max(h[0] for _, h in losers)}))
    return findings


@register_check("more-steps-worse", needs=["evaluation"])
def _more_steps_worse(ctx: AuditContext) -> list[Finding]:
    """A white-box attack with more steps or restarts leaves higher accuracy than a smaller budget.

    Transfer rows are left out: more steps can overfit the source model and transfer worse.
    """
    ev = evaluation_of(ctx)
    rows = [r for r in of_kind(ev, "white-box") if r.steps is not None]

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
        ), {"fewer": label(small), "more": [label(b) for b, _ in hits], "gap": max(h[0] for _, h in hits)}))
    return findings
