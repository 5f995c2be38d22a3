"""What every attack shares: the result type, input checks, model hygiene, and the one driver.

``Attack.run`` is a template method. An attack supplies its configuration (a frozen
dataclass) and ``_search``; the driver does the rest, the same way for every attack:

1. check the inputs and seed the generator;
2. one clean pass, with the label and probability checks, where the attack needs it
   (``_needs_clean_pass``);
3. the plan: the aims (``Aim``: which class the objective aims at, and what counts as
   success) that the attack runs one after the other (``_plan``);
4. for each aim and restart, ``_search`` on the examples still unbroken;
5. every candidate a search offers goes into ``Best`` under one per-example rule, ``better``.

Example:
    >>> x_adv = PGD(Linf(0.3), steps=40)(model, x, y)     # any attack: same call, same guarantees
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, NamedTuple

import torch
from torch import nn

from robustopt._registry import Registry
from robustopt.threat import ThreatModel, check_images

__all__ = [
    "Attack", "AttackResult", "Aim", "Best", "Search", "better", "eval_mode", "check_batch", "check_targets",
    "predict", "success_of", "aims_at_top_classes", "UnsupportedThreat", "Cost", "STOP_REASONS", "stalled",
    "value_and_grad", "value_at", "output_change", "is_randomized", "ATTACKS", "attack_key",
]

WHITE_BOX_SOURCE = "A"  # the Source of white-box rows in tables (the paper's name for the evaluated model)
_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


@dataclass
class AttackResult:
    """Outcome of one attack on a batch.

    Attributes:
        x_adv: adversarial inputs, same shape/dtype/device as the clean ones.
        success: bool (N,): misclassified (untargeted) or classified as the target.
        grad_evals: forward+backward passes through the attacked model, summed over examples.
        forwards: forward-only passes (queries), summed over examples.
        grad_evals_per_example / forwards_per_example: the same per example, int64 (N,)
            (None where a result was built by hand).
        notes: what an attack that explains its decisions records per example, tensors (N,)
            (e.g. why each example's search stopped); empty for most attacks.
        summary: a JSON-ready account of the call (e.g. the stages of a schedule), or None.
            ``evaluate`` keeps ``notes`` and ``summary`` in the attack's row where an attack gives them.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    grad_evals: int = 0
    forwards: int = 0
    grad_evals_per_example: torch.Tensor | None = None
    forwards_per_example: torch.Tensor | None = None
    notes: dict[str, torch.Tensor] = field(default_factory=dict)
    summary: dict[str, Any] | None = None


class UnsupportedThreat(NotImplementedError, ValueError):
    """The attack is not defined (or not implemented) for this threat model's norm."""


# --- checks and model hygiene ---------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode and restore the mode of every submodule afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


_warned_probabilities: set[int] = set()


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` on ``x`` with shape checks and clear errors. Does not touch grad mode."""
    try:
        logits = model(x)
    except RuntimeError as err:
        raise ValueError(
            f"the model failed on inputs of shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}: {err}. "
            "Check that the model and the data are on the same device and the input shape is what it expects."
        ) from err
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (N, classes) = ({x.shape[0]}, C), got {shape}.")
    return logits


def value_and_grad(
    model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], eot: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The objective and its input gradient at ``x``, averaged over ``eot`` draws of the model's randomness.

    Expectation over Transformation (Athalye et al. 2018, "Obfuscated Gradients Give a False Sense
    of Security"): a randomized model is attacked through the mean of ``eot`` forward+backward
    passes; with ``eot=1`` it is one pass. Only the input gradient is computed.

    Args:
        model: maps ``x`` to logits (N, C).
        x: the points (N, ...); not modified.
        objective: ``logits -> Tensor[N]`` to differentiate (summed over the batch).
        eot: draws to average, >= 1; each costs one forward+backward pass.

    Returns:
        ``(value, grad, logits)``: the mean objective (N,), the mean gradient (shape of ``x``) and
        the mean logits (N, C), all detached.
    """
    value = grad = logits = None
    with torch.enable_grad():
        for _ in range(eot):
            point = x.detach().requires_grad_(True)
            z = predict(model, point)
            v = objective(z)
            (g,) = torch.autograd.grad(v.sum(), point)
            v, z = v.detach(), z.detach()
            value, grad, logits = (v, g, z) if value is None else (value + v, grad + g, logits + z)
    if eot > 1:
        value, grad, logits = value / eot, grad / eot, logits / eot
    return value, grad, logits


def value_at(
    model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], eot: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(value, logits)`` of :func:`value_and_grad` without the gradient: ``eot`` forward passes, no graph."""
    value = logits = None
    with torch.no_grad():
        for _ in range(eot):
            z = predict(model, x)
            v = objective(z)
            value, logits = (v, z) if value is None else (value + v, logits + z)
    return (value / eot, logits / eot) if eot > 1 else (value, logits)


RANDOM_TOLERANCE = 1e-4  # relative change between two passes that non-deterministic kernels stay under


def output_change(a: torch.Tensor, b: torch.Tensor) -> tuple[float, bool]:
    """The largest change between two forward passes' logits on the same inputs, and whether the model is random.

    Finite entries only; random means a change above ``RANDOM_TOLERANCE`` times the largest logit
    (at least 1), beyond what non-deterministic GPU kernels produce.
    """
    if not a.numel():
        return 0.0, False
    finite = torch.isfinite(a) & torch.isfinite(b)
    diff = float((a - b).abs().masked_fill(~finite, 0).max())
    scale = float(a.abs().masked_fill(~finite, 0).max().clamp_min(1.0))
    return diff, diff > RANDOM_TOLERANCE * scale


def is_randomized(model: nn.Module, x: torch.Tensor, probe: int = 32) -> bool:
    """Whether two forward passes of ``model`` (in eval mode) on the first ``probe`` inputs of ``x`` differ.

    Example:
        >>> is_randomized(model, x)   # True for a model with input noise, dropout in eval mode, ...
    """
    with eval_mode(model), torch.no_grad():
        a, b = predict(model, x[:probe]), predict(model, x[:probe])
    return output_change(a, b)[1]


def _warn_if_probabilities(model: nn.Module, logits: torch.Tensor) -> None:
    with torch.no_grad():
        looks_like = logits.numel() > 0 and bool(
            (logits >= 0).all() and (logits <= 1).all() and torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=1e-3)
        )
    if looks_like and id(model) not in _warned_probabilities:
        _warned_probabilities.add(id(model))
        warnings.warn(
            "the model's outputs are in [0, 1] and sum to 1: they look like probabilities, not logits. "
            "Remove the final softmax; gradients through a softmax vanish and attacks then look weaker "
            "than they are (a classic cause of false robustness).",
            UserWarning,
            stacklevel=3,
        )


def check_batch(x: torch.Tensor, y: torch.Tensor, threat: ThreatModel | None = None) -> None:
    """Validate a batch of images and labels before attacking or evaluating."""
    check_images(x, threat.bounds if threat is not None else (0.0, 1.0))
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}.")
    if y.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"y must hold integer class indices (e.g. torch.int64), got dtype {y.dtype}.")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels and inputs do not match: x has {x.shape[0]} examples (shape {tuple(x.shape)}), "
            f"y has shape {tuple(y.shape)}; pass one class index per example."
        )
    if y.device != x.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}; move both to the same device.")


def check_targets(targets: Any, y: torch.Tensor) -> torch.Tensor:
    """Explicit target classes as a long tensor on y's device; their range is checked on the first logits."""
    if not isinstance(targets, torch.Tensor) or targets.shape != y.shape:
        raise ValueError(f"targets must be a tensor of shape {tuple(y.shape)} (one class per example).")
    if targets.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"targets must hold integer class indices, got dtype {targets.dtype}.")
    return targets.to(device=y.device, dtype=torch.long)


def check_labels(logits: torch.Tensor, y: torch.Tensor, what: str = "labels") -> None:
    """Raise a clear error unless every class index in ``y`` is an output of the model."""
    classes = logits.shape[1]
    if y.numel() and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{what} must be in [0, {classes - 1}] for a model with {classes} outputs, got {y.min().item()}..{y.max().item()}.")


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


# --- early exit: why a search ended, and the rule that stops an example that cannot flip ---------
# Per example in ``AttackResult.notes["stop"]`` of attacks run with ``early_exit``; the last search
# of an example decides (e.g. its last target).
STOP_REASONS = ("not run", "budget", "broken", "stalled")
STOP_NOT_RUN, STOP_BUDGET, STOP_BROKEN, STOP_STALLED = range(len(STOP_REASONS))


def stalled(margin: torch.Tensor, margin_then: torch.Tensor, remaining: int, window: int, factor: float) -> torch.Tensor:
    """bool: the margin cannot reach 0 even at ``factor`` times the pace of the last window.

    ``margin + factor * (remaining / window) * max(margin - margin_then, 0) < 0``: the margin is
    ``losses.margin`` (positive exactly when the example is broken), ``margin_then`` its value
    ``window`` steps ago and ``remaining`` the steps left. A search whose progress slows down
    (APGD's shrinking steps, Square's shrinking windows) stays under this linear extrapolation,
    so ``factor`` is a margin of safety on top of it. The online discarding of A3 (Liu et al.
    2022, "Practical Evaluation of Adversarial Robustness via Adaptive Auto Attack", CVPR), with
    the example's own progress as the statistic.
    """
    gain = (margin - margin_then).clamp_min(0)
    return margin + factor * (remaining / window) * gain < 0


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


def _first_logits_check(model: nn.Module, y: torch.Tensor, targets: torch.Tensor | None) -> Callable[[torch.Tensor], None]:
    """A check of labels, targets and outputs that runs on the first logits it sees, once."""
    done = False

    def check(logits: torch.Tensor) -> None:
        nonlocal done
        if not done:
            check_labels(logits, y)
            _warn_if_probabilities(model, logits)
            if targets is not None:
                check_labels(logits, targets, "targets")
            done = True

    return check


def _target_scores(scores: Any, clean: torch.Tensor | None, targets: torch.Tensor | None) -> torch.Tensor | None:
    """The scores that rank target classes: ``target_scores`` where given (checked), else the clean logits."""
    if scores is None:
        return clean
    if targets is not None:
        raise ValueError("pass either targets (aim at these classes) or target_scores (rank the classes), not both.")
    if clean is None or not isinstance(scores, torch.Tensor) or scores.shape != clean.shape:
        shape = tuple(clean.shape) if clean is not None else "(N, C)"
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"target_scores must be a tensor of shape {shape}, one score per example and class; got {got}.")
    if not scores.is_floating_point():
        raise TypeError(f"target_scores must be floating point, got dtype {scores.dtype}.")
    return scores.to(clean.device)


# --- low-precision inputs: the attack works in float32 ------------------------------------------
LOW_PRECISION = (torch.float16, torch.bfloat16)


class _Float32Inputs(nn.Module):
    """``model`` seen from an attack that works in float32: inputs cast to ``dtype``, logits to float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> Any:
        out = self.model(x.to(self.dtype))
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out


def _options_in_float32(options: dict[str, Any]) -> dict[str, Any]:
    """The call options with floating tensors (e.g. ``start``) in float32."""
    return {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in options.items()}


@torch.no_grad()
def _round_into_ball(best: Best, x: torch.Tensor, dtype: torch.dtype, model: nn.Module, y: torch.Tensor,
                     target: torch.Tensor | None, cost: Cost) -> None:
    """Make the best points exact in ``dtype``, each coordinate rounded toward the clean ``x``.

    Rounding toward ``x`` never moves a coordinate farther from it, so a point inside the ball and
    the box (which holds ``x``) stays inside in ``dtype``; rounding to nearest does not. A point that
    moved off the one the model scored is scored again (one forward pass, counted).
    """
    points = best.x
    nearest = points.to(dtype)
    away = (nearest.float() - x).abs() > (points - x).abs()
    rounded = torch.where(away, torch.nextafter(nearest, x.to(dtype)), nearest).float()
    success = best.success.clone()
    rows = away.flatten(1).any(dim=1).nonzero().squeeze(1)
    if len(rows):
        logits = predict(model, rounded[rows])
        success[rows] = success_of(logits, y[rows], None if target is None else target[rows])
        cost.add(rows, forwards=1)
    best.put(torch.arange(len(x), device=x.device), rounded, success, best.value.clone())


def _cast_result(result: AttackResult, x: torch.Tensor, dtype: torch.dtype | None) -> AttackResult:
    """``result`` with its points (tensors shaped like ``x``) back in the input's ``dtype``."""
    if dtype is not None:
        for f in dataclasses.fields(result):
            value = getattr(result, f.name)
            if isinstance(value, torch.Tensor) and value.shape == x.shape and value.dtype == x.dtype:
                setattr(result, f.name, value.to(dtype))
    return result


# --- the base class and the driver ---------------------------------------------------------------
class Attack:
    """Base of all attacks: frozen configuration values, called as ``attack(model, x, y)``.

    Subclasses are frozen dataclasses with a ``threat`` field (and ``seed``, ``label``); they
    implement ``_search`` and, where they differ from the defaults, the hooks of ``run``. Calling
    an attack mutates neither the attack nor the model (its train/eval mode is restored, no
    parameter gradient is written).

    Class attributes:
        norms: the threat-model norms the attack supports (None: every norm).
        call_options: extra keyword options ``run`` accepts and hands to the search.
        minimize: values are distances to the clean input (a minimum-norm attack), not losses.
        clean_success_counts: an example that the clean input already breaks is done after the
            clean pass (returned as it is); at eps = 0 nothing is searched at all.
    """

    threat: ThreatModel
    label: str | None
    seed: int

    norms: ClassVar[tuple[str, ...] | None] = None
    call_options: ClassVar[tuple[str, ...]] = ()
    minimize: ClassVar[bool] = False
    clean_success_counts: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not isinstance(self.threat, ThreatModel):
            raise TypeError(f"threat must be a threat model such as ro.Linf(0.3), got {self.threat!r}.")
        if self.norms is not None and self.threat.norm not in self.norms:
            raise UnsupportedThreat(
                f"{type(self).__name__} supports the {', '.join(self.norms)} threat models, got {self.threat}; "
                f"it is not implemented for {self.threat.norm}."
            )

    def _check_counts(self, *names: str, minimum: int = 1) -> None:
        """Raise unless each named field is an integer >= ``minimum`` (bools are refused)."""
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")

    def _check_positive(self, *names: str) -> None:
        """Raise unless each named field is a finite number > 0 (bools are refused)."""
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, got {value!r}.")

    def _check_flags(self, *names: str) -> None:
        """Raise unless each named field is True or False."""
        for name in names:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")

    def _check_seed(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ValueError(f"seed must be an integer, got {self.seed!r}.")

    # --- the driver (template method) ----------------------------------------------------------
    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        targets: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> AttackResult:
        """Attack ``model`` on the batch ``(x, y)``.

        Args:
            model: maps inputs in ``threat.bounds`` (N, ...) to logits (N, C).
            x: clean inputs, floating, inside the bounds.
            y: true labels (N,), integer.
            targets: explicit target classes (N,); the attack then aims at them and success
                means "predicted as the target".
            generator: source of randomness; default: a fresh one seeded with ``self.seed``.
            **options: the attack's ``call_options`` (see its docstring). One is handled here for
                every attack that declares it: ``target_scores`` (N, C), the scores by which an
                attack that chooses its own target classes (APGD-T, FAB-T) ranks them, highest
                first, instead of the clean logits (e.g. the logits at an earlier attack's point).

        Returns:
            AttackResult: per example the best point found (see ``better``), inside the ball and
            the bounds, its success flag, and the model passes spent.

        Inputs in float16 or bfloat16 are attacked in float32 (the model still sees its own dtype,
        the losses its logits in float32); each coordinate of the result is then rounded toward the
        clean input, so the point lies inside the ball and the bounds in the input's dtype too.
        """
        check_batch(x, y, self.threat)
        self._check_call(x, options)
        y = y.long()
        if targets is not None:
            targets = check_targets(targets, y)
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        with torch.inference_mode(False):  # ordinary tensors even when called inside inference_mode
            cost = Cost(len(x), x.device)
            x = x.detach()
            low = x.dtype if x.dtype in LOW_PRECISION else None
            if low is not None:  # perturb and project in float32; the model still sees its own dtype
                x, model, options = x.float(), _Float32Inputs(model, low), _options_in_float32(options)
            best = Best(x, minimize=self.minimize, eps=self.threat.eps)
            if len(x) == 0:
                return _cast_result(self._result(x, best, cost), x, low)
            check = _first_logits_check(model, y, targets)
            with eval_mode(model), torch.no_grad():
                clean = None
                if self._needs_clean_pass(targets):
                    clean = predict(model, x)
                    cost.add(torch.arange(len(x), device=x.device), forwards=1)
                    check(clean)
                plan = self._plan(_target_scores(options.get("target_scores"), clean, targets), y, targets, generator)
                if self.clean_success_counts:
                    best.success |= success_of(clean, y, plan[0].success_target)
                searching = not (self.clean_success_counts and self.threat.eps == 0)
                for aim in plan if searching else []:
                    for restart in range(self.restarts or 1):
                        rows = (~best.broken).nonzero().squeeze(1)
                        if len(rows) == 0:
                            break
                        sub = (lambda t: t) if len(rows) == len(x) else (lambda t: t if t is None else t[rows])
                        self._search(Search(model, sub(x), sub(y), sub(aim.loss_target), sub(aim.success_target),
                                            rows, restart, generator, best, cost, options, check))
                self._finish(model, x, y, plan[0], best, cost)
                if low is not None:
                    _round_into_ball(best, x, low, model, y, plan[0].success_target, cost)
        return _cast_result(self._result(x, best, cost), x, low)

    # --- the hooks ---------------------------------------------------------------------------------
    def _check_call(self, x: torch.Tensor, options: dict[str, Any]) -> None:
        """Check what only this attack requires of a call (after the common checks)."""
        unknown = sorted(set(options) - set(self.call_options))
        if unknown:
            raise TypeError(f"{type(self).__name__}.run() got unexpected keyword arguments {unknown}.")

    def _needs_clean_pass(self, targets: torch.Tensor | None) -> bool:
        """Whether the call starts with a forward pass on the clean inputs (labels are checked there)."""
        return True

    def _plan(
        self, clean: torch.Tensor | None, y: torch.Tensor, targets: torch.Tensor | None, generator: torch.Generator
    ) -> list[Aim]:
        """The aims, run one after the other; default: the explicit targets, or untargeted.

        ``clean`` holds the clean logits, or the call's ``target_scores`` where it passed them.
        """
        return [Aim(targets, targets)]

    def _search(self, s: Search) -> None:
        """One run on the examples of ``s``: offer candidates to ``s.best``, count passes in ``s.cost``."""
        raise NotImplementedError

    def _finish(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, aim: Aim, best: Best, cost: Cost) -> None:
        """After every aim and restart, still in eval mode (e.g. FAB's final bisection); default: nothing."""

    def _result(self, x: torch.Tensor, best: Best, cost: Cost) -> AttackResult:
        return AttackResult(best.x, best.success, grad_evals=cost.grad_evals, forwards=cost.forwards,
                            grad_evals_per_example=cost.grad_per_example, forwards_per_example=cost.forwards_per_example,
                            notes=cost.notes, summary=cost.summary)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Adversarial examples for ``(x, y)`` against ``model``; see ``run`` for the options."""
        return self.run(model, x, y, **kwargs).x_adv

    @classmethod
    def create(cls, threat: ThreatModel, **kwargs: Any) -> Attack:
        """This attack on ``threat``, configured by ``kwargs``: what ``ro.attacks.create(key, ...)`` calls.

        An attack whose first field is not the threat model (a transfer attack) overrides it.
        """
        return cls(threat, **kwargs)  # type: ignore[call-arg]

    # --- how a table row and a JSON file show the attack --------------------------
    @property
    def name(self) -> str:
        return self.label or type(self).__name__

    @property
    def steps(self) -> int | None:
        """Iterations per run, for the Steps column of tables; None for an attack without iterations."""
        return None

    @property
    def restarts(self) -> int | None:
        """Runs per aim, each on the examples still unbroken; None: one."""
        return None

    @property
    def source(self) -> str:
        """The model the attack differentiates, as tables name it: the evaluated model (white box)."""
        return WHITE_BOX_SOURCE

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: the registry key, the class, the display name and every configuration field.

        ``key`` is what identifies the attack (the key of ``ATTACKS``, None for an unregistered
        class); ``type`` (the class name) and ``name`` (the table's label) are for readers.
        Models an attack holds (a transfer source) are left out. :meth:`from_dict` is the inverse.
        """
        out: dict[str, Any] = {"key": _key_of_class(type(self)), "type": type(self).__name__, "name": self.name}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, ThreatModel):
                value = value.to_dict()
            elif isinstance(value, Attack):
                value = value.describe()
            elif isinstance(value, nn.Module):
                continue
            elif isinstance(value, torch.Tensor):
                value = value.tolist()
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **models: nn.Module) -> Attack:
        """The attack that :meth:`describe` described, also as read back from a JSON file.

        Args:
            d: a ``describe()`` dict. Descriptions written before the registry key was stored
                name the class in ``type`` instead; both are read.
            **models: the models a description leaves out, by field name (``source_model`` of a
                transfer attack).

        Returns:
            An attack equal to the described one (any registered attack).

        Raises:
            ValueError: ``d`` names no registered attack, the attack is not a ``cls``, or ``d`` holds
                a field the attack does not have.
            TypeError: ``d`` is not a mapping, or a model the attack needs is not passed.

        Example:
            >>> Attack.from_dict(PGD(Linf(0.3), steps=40).describe()) == PGD(Linf(0.3), steps=40)
            True
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"an attack description must be a dict (Attack.describe()), got {type(d).__name__}.")
        if "key" not in d and "type" not in d:
            raise ValueError(f"an attack description names its attack in 'key' (Attack.describe()); got {dict(d)!r}.")
        klass = ATTACKS.get(attack_key(d) or str(d.get("key", d.get("type"))))
        if not issubclass(klass, cls):
            raise ValueError(f"the description is of a {klass.__name__}, not of a {cls.__name__}.")
        fields = {f.name: f for f in dataclasses.fields(klass) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(fields) - {"key", "type", "name"})
        if unknown:
            raise ValueError(f"{klass.__name__} has no field(s) {unknown}; the description is of another "
                             "version of the attack, or not of an attack.")
        hints = typing.get_type_hints(klass)
        kwargs: dict[str, Any] = {}
        for name in fields:
            hint = hints.get(name)
            if _is_class(hint, nn.Module):
                if name not in models:
                    raise TypeError(f"{klass.__name__}.from_dict needs the model the description leaves out: "
                                    f"pass {name}=<the nn.Module>.")
                kwargs[name] = models[name]
            elif name in d:
                kwargs[name] = _field_from_json(hint, d[name])
        return klass(**kwargs)


# Every attack by its key; ``robustopt.attacks.registry`` adds the entries (``@register_attack``).
ATTACKS: Registry[type[Attack]] = Registry("attack")


def _key_of_class(cls: type) -> str | None:
    """The key ``cls`` is registered under (None for an unregistered class, e.g. an unregistered subclass)."""
    return next((key for key, entry in ATTACKS.items() if entry is cls), None)


def attack_key(description: Mapping[str, Any] | None) -> str | None:
    """The registry key of the attack an ``Attack.describe()`` dict describes; None for no attack.

    Reads ``key``, or, in descriptions written before it was stored, the class name in ``type``.

    Example:
        >>> attack_key(PGD(Linf(0.3)).describe())
        'pgd'
    """
    if not isinstance(description, Mapping):
        return None
    key = description.get("key")
    if isinstance(key, str) and key in ATTACKS:
        return key
    kind = description.get("type")
    return next((k for k, entry in ATTACKS.items() if entry.__name__ == kind), None)


def _is_class(hint: Any, base: type) -> bool:
    return isinstance(hint, type) and issubclass(hint, base)


def _field_from_json(hint: Any, value: Any) -> Any:
    """A configuration field as the attack holds it, from its JSON form (threat models, attacks, tuples)."""
    if _is_class(hint, ThreatModel) and isinstance(value, Mapping):
        return ThreatModel.from_dict(value)
    if _is_class(hint, Attack) and isinstance(value, Mapping):
        return Attack.from_dict(value)
    if isinstance(value, list) and (_is_class(hint, tuple) or typing.get_origin(hint) is tuple):
        return tuple(value)
    return value
