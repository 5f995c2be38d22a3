"""The per-example bookkeeping of a search: what counts as success, the one rule by which an
attack keeps its best point (``better``, ``Best``), what a run aims at (``Aim``), the model passes
it spends (``Cost``), and what the driver hands to a search (``Search``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = ["success_of", "better", "Best", "Aim", "aims_at_top_classes", "Cost", "Search"]


def success_of(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """bool (N,): misclassified (untargeted) or predicted as ``target`` (targeted)."""
    pred = logits.argmax(dim=1)
    return pred != y if target is None else pred == target


# --- the one per-example rule, and the best points kept under it -----------------------------
def better(
    success: torch.Tensor,
    value: torch.Tensor,
    best_success: torch.Tensor,
    best_value: torch.Tensor,
    minimize: bool = False,
) -> torch.Tensor:
    """bool (N,): does the candidate beat the stored point? The rule every attack keeps its best by.

    A successful point (misclassified, or predicted as its target) beats an unsuccessful one.
    Between two that agree, the higher value wins: the attack's loss; or, with ``minimize``,
    the lower value: the distance to the clean input, for minimum-norm attacks such as FAB.
    A tie (or NaN) keeps the stored point, so the first of equally good points stays.
    """
    gains = value < best_value if minimize else value > best_value
    return torch.where(success != best_success, success, gains)


class Best:
    """Per example, the best point an attack has found so far, its success flag and its value.

    Starts at the clean input, unsuccessful, with value ``-inf`` (never scored) or, with
    ``minimize``, ``0`` (its own distance to itself). Candidates go through :func:`better`.

    The points are kept lazily: the latest offer is held by reference and a row of it is copied
    only when a later offer on the same rows fails to beat it, so a search whose loss keeps
    rising (PGD) copies no input per step. An offered tensor must not be modified in place.

    Args:
        x: the clean inputs (N, ...).
        minimize: values are distances to minimize (minimum-norm attacks), not losses.
        eps: with ``minimize``, a successful point farther than ``eps`` breaks nothing.
    """

    def __init__(self, x: torch.Tensor, *, minimize: bool = False, eps: float = math.inf) -> None:
        n, device = len(x), x.device
        self.minimize, self.eps = minimize, eps
        self._x = x.detach().clone()
        self.success = torch.zeros(n, dtype=torch.bool, device=device)
        dtype = x.dtype if minimize else torch.float32
        self.value = torch.full((n,), 0.0 if minimize else -math.inf, dtype=dtype, device=device)
        self._latest: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (rows, points, holds best)

    @property
    def x(self) -> torch.Tensor:
        """The best points (N, ...)."""
        self._settle()
        return self._x

    @property
    def broken(self) -> torch.Tensor:
        """bool (N,): the example has a successful point inside the threat's ball."""
        return self.success & (self.value <= self.eps) if self.minimize else self.success

    @torch.no_grad()
    def offer(self, rows: torch.Tensor, x: torch.Tensor, success: torch.Tensor, value: torch.Tensor) -> None:
        """Keep the candidates ``x`` for the batch rows ``rows`` (distinct, increasing) where they are ``better``."""
        value = value.detach().to(self.value.dtype)
        every = len(rows) == len(self.value)  # then rows is 0..N-1: no gather / scatter
        old_success, old_value = (self.success, self.value) if every else (self.success[rows], self.value[rows])
        take = better(success, value, old_success, old_value, self.minimize)
        new_value = torch.where(take, value, old_value)
        new_success = old_success | success  # the same as where(take, ...): a taken point is never less successful
        if every:
            self.value, self.success = new_value, new_success
        else:
            self.value[rows], self.success[rows] = new_value, new_success
        if self._latest is not None:  # rows whose best is the previous offer and that this one does not replace
            old_rows, old_x, old_take = self._latest
            keep = old_take & ~take if old_rows is rows else old_take
            if bool(keep.any()):
                self._x.index_copy_(0, old_rows[keep], old_x[keep])
        self._latest = (rows, x.detach(), take)

    @torch.no_grad()
    def put(self, rows: torch.Tensor, x: torch.Tensor, success: torch.Tensor, value: torch.Tensor) -> None:
        """Store the points unconditionally, bypassing the rule (for a search that returns its last iterate)."""
        self._settle()
        self._x[rows] = x.detach()
        self.success[rows] = success
        self.value[rows] = value.detach().to(self.value.dtype)

    def _settle(self) -> None:
        if self._latest is not None:
            rows, x, take = self._latest
            if bool(take.any()):
                self._x.index_copy_(0, rows[take], x[take])
            self._latest = None


# --- what the driver hands to a search ---------------------------------------------------------
class Aim(NamedTuple):
    """What one pass of the plan aims at, per example.

    Attributes:
        loss_target: the class the objective pushes towards (N,), or None: away from the label.
        success_target: success means "predicted as this class" (N,), or None: misclassified.
    """

    loss_target: torch.Tensor | None
    success_target: torch.Tensor | None


def aims_at_top_classes(clean_logits: torch.Tensor, y: torch.Tensor, k: int) -> list[Aim]:
    """AutoAttack's targeted plan: one aim per class among the ``k`` highest clean logits other than ``y``.

    Success stays "misclassified"; at most ``classes - 1`` aims.
    """
    classes = clean_logits.shape[1]
    if classes < 2:
        raise ValueError("a targeted attack needs a model with at least 2 classes.")
    others = clean_logits.masked_fill(torch.nn.functional.one_hot(y, classes).bool(), float("-inf"))
    ranked = others.sort(dim=1, descending=True, stable=True).indices
    return [Aim(ranked[:, j], None) for j in range(min(k, classes - 1))]


class Cost:
    """Model passes spent so far, per example of the batch; ``grad_evals`` and ``forwards`` are the totals.

    Args:
        n: examples in the batch.
        device: where the per-example counters live (the batch's device).
    """

    def __init__(self, n: int = 0, device: torch.device | str | None = None) -> None:
        self.grad_per_example = torch.zeros(n, dtype=torch.int64, device=device)
        self.forwards_per_example = torch.zeros(n, dtype=torch.int64, device=device)
        self.notes: dict[str, torch.Tensor] = {}  # per-example records an attack keeps (AttackResult.notes)
        self.summary: dict[str, Any] | None = None  # a JSON-ready account of the call (AttackResult.summary)

    def note(self, key: str, rows: torch.Tensor, values: torch.Tensor, fill: float | int | bool = 0) -> None:
        """Record ``values`` for the batch ``rows`` under ``key``; examples never noted keep ``fill``."""
        if key not in self.notes:
            n = len(self.grad_per_example)
            self.notes[key] = torch.full((n,), fill, dtype=values.dtype, device=self.grad_per_example.device)
        self.notes[key][rows] = values.to(self.notes[key].device)

    def add(self, rows: torch.Tensor, *, grad_evals: int | torch.Tensor = 0, forwards: int | torch.Tensor = 0) -> None:
        """Count ``grad_evals`` forward+backward and ``forwards`` forward-only passes for each of ``rows``.

        Each count is one number for every row, or a tensor with one per row (e.g. an inner attack's).
        """
        every = len(rows) == len(self.grad_per_example)  # then rows is 0..N-1
        for counter, k in ((self.grad_per_example, grad_evals), (self.forwards_per_example, forwards)):
            if isinstance(k, torch.Tensor):
                counter.index_add_(0, rows, k.to(device=counter.device, dtype=torch.int64))
            elif k and every:
                counter += k
            elif k:
                counter.index_add_(0, rows, torch.full_like(rows, k, dtype=torch.int64))

    @property
    def grad_evals(self) -> int:
        return int(self.grad_per_example.sum())

    @property
    def forwards(self) -> int:
        return int(self.forwards_per_example.sum())


@dataclass
class Search:
    """One run of an attack's search: one aim and restart, on the examples still unbroken.

    Attributes:
        model: the attacked model, in eval mode (grad mode is off: enable it where needed).
        x: the clean inputs of these examples (n, ...), detached; do not modify in place.
        y: their labels (n,), long.
        loss_target: the class the objective aims at (n,), or None (away from ``y``).
        success_target: success means "predicted as this class" (n,), or None (misclassified).
        rows: their positions in the batch (n,).
        restart: which restart of this aim (0 first).
        generator: the source of all randomness.
        best: the batch's best points; the search offers its candidates to it.
        cost: the counters of model passes, which the search increments.
        options: the call's extra options (e.g. GradientAttack's ``start`` and ``objective``).
        check: checks the labels and outputs on the first logits of the call (no-op afterwards).
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss_target: torch.Tensor | None
    success_target: torch.Tensor | None
    rows: torch.Tensor
    restart: int
    generator: torch.Generator
    best: Best
    cost: Cost
    options: dict[str, Any] = field(default_factory=dict)
    check: Callable[[torch.Tensor], None] = lambda logits: None

    def success(self, logits: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """bool: success of ``logits`` for these examples (or for the subset ``at`` of them)."""
        if at is None:
            return success_of(logits, self.y, self.success_target)
        target = None if self.success_target is None else self.success_target[at]
        return success_of(logits, self.y[at], target)

    def offer(self, x: torch.Tensor, success: torch.Tensor, value: torch.Tensor, at: torch.Tensor | None = None) -> None:
        """Offer candidates for these examples (or for the subset ``at`` of them) to the batch's best."""
        self.best.offer(self.rows if at is None else self.rows[at], x, success, value)
