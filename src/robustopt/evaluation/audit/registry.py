"""The registry of audit checks: ``@register_check(code, needs=[...])`` adds a check, ``CHECKS`` holds them.

A check is a function ``(AuditContext) -> list[Finding]``; ``audit`` runs it when everything it
needs was passed. Checks run, and their findings of one level are listed, in registration order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from robustopt._registry import Registry
from robustopt.evaluation.audit.context import AuditContext
from robustopt.evaluation.audit.findings import Finding

__all__ = ["Check", "CHECKS", "NEEDS", "register_check"]


@dataclass(frozen=True)
class Check:
    """A registered check: its code, its function and what it needs ("model", "evaluation", "sweep", "x_adv")."""

    code: str
    fn: Callable[[AuditContext], list[Finding]]
    needs: frozenset[str]
    summary: str


CHECKS: Registry[Check] = Registry("audit check")
NEEDS = {"model", "evaluation", "sweep", "x_adv"}


def register_check(code: str, *, needs: Iterable[str]) -> Callable[[Callable[[AuditContext], list[Finding]]], Callable]:
    """Register ``fn(ctx) -> list[Finding]`` under ``code``; it runs when everything in ``needs`` was given.

    Example:
        >>> @register_check("my-check", needs=["model"])
        ... def my_check(ctx): return []
    """
    needs = frozenset(needs)
    if not needs <= NEEDS:
        raise ValueError(f"needs must be a subset of {sorted(NEEDS)}, got {sorted(needs)}.")

    def decorate(fn: Callable[[AuditContext], list[Finding]]) -> Callable[[AuditContext], list[Finding]]:
        if code in CHECKS:  # (a new Check record each time: refuse by code, not by identity)
            raise ValueError(f"the audit check name {code!r} is already taken by {CHECKS.get(code).fn.__name__}.")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        CHECKS.register(code, Check(code, fn, needs, summary))
        return fn

    return decorate
