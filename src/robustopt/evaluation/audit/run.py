"""The entry point of the audit: ``audit(model, data, evaluation, ...)`` runs the registered checks."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from robustopt.attacks.checks import check_batch
from robustopt.evaluation.audit.context import AuditContext
from robustopt.evaluation.audit.findings import LEVELS, Finding
from robustopt.evaluation.audit.registry import CHECKS
from robustopt.evaluation.evaluate import _as_tensors
from robustopt.evaluation.results import Evaluation
from robustopt.evaluation.sweep import SweepCurve
from robustopt.threat import ThreatModel

__all__ = ["audit"]


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
