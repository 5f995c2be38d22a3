"""How the checks read results: the kind of each row or stage, a row's label, accuracies as
percentages, and the noise allowance between two accuracies."""

from __future__ import annotations

import math
from typing import Any, Mapping

from robustopt.attacks.base import WHITE_BOX_SOURCE, attack_key
from robustopt.evaluation.audit.context import AuditContext
from robustopt.evaluation.results import Evaluation, Row

__all__ = ["row_kind", "kind_of", "stage_kind", "evaluation_of", "of_kind", "recipe", "single_step", "pct", "label", "tolerance"]


def row_kind(row: Row) -> str:
    """"natural", "gradient-free", "transfer" or "white-box"."""
    if row.natural:
        return "natural"
    return kind_of(row.attack, row.source)


def kind_of(description: Mapping[str, Any], source: str = WHITE_BOX_SOURCE) -> str:
    """The kind of the attack an ``Attack.describe()`` dict describes: "gradient-free", "transfer" or "white-box"."""
    key = attack_key(description)
    if key == "transfer" or source not in (WHITE_BOX_SOURCE, ""):
        return "transfer"
    return "gradient-free" if key == "square" else "white-box"


def stage_kind(description: Mapping[str, Any], source: str = WHITE_BOX_SOURCE) -> str:
    """:func:`kind_of`, with "ce" for an untargeted white-box attack on the cross-entropy loss."""
    kind = kind_of(description, source)
    ce = description.get("loss") == "ce" and not description.get("targeted")
    return "ce" if kind == "white-box" and ce else kind


def evaluation_of(ctx: AuditContext) -> Evaluation:
    """The evaluation of a check that declared ``needs=["evaluation"]``."""
    assert ctx.evaluation is not None  # the audit runs the check only with an evaluation
    return ctx.evaluation


def of_kind(ev: Evaluation, kind: str) -> list[Row]:
    """The rows of ``ev`` of one :func:`row_kind`, in order."""
    return [r for r in ev.rows if row_kind(r) == kind]


def recipe(row: Row) -> tuple:
    """What crafts a row's points, budget aside: its attack's registry key, loss, kappa and target (a
    transfer row: those of the attack run on the source)."""
    desc = row.attack or {}
    if attack_key(desc) == "transfer" and isinstance(desc.get("attack"), Mapping):
        desc = desc["attack"]
    return attack_key(desc), desc.get("loss"), desc.get("kappa"), desc.get("targeted")


def single_step(row: Row) -> bool:
    """Whether the row's attack takes one step from the clean input (FGSM, or one step without a random start)."""
    return row.key == "fgsm" or (row.steps == 1 and not row.attack.get("random_start", False))


def pct(p: float) -> str:
    """An accuracy in [0, 1] as a percentage with one decimal, e.g. "89.3%"."""
    return f"{100 * p:.1f}%"


def label(row: Row) -> str:
    """How a finding names a row: its name, its steps x restarts where known, and its source."""
    budget = f" {row.steps}x{row.restarts}" if row.steps is not None and row.restarts is not None else ""
    return f"{row.name}{budget} (source {row.source})"


def tolerance(p1: float, p2: float, n: int) -> float:
    """Noise allowance between two accuracies on n examples: max(0.5 points, 2 standard errors)."""
    se = math.sqrt(max(p1 * (1 - p1) + p2 * (1 - p2), 0.0) / max(n, 1))
    return max(0.005, 2 * se)
