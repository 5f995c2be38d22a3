"""The attack base class and the one driver, the result type, and the registry of attacks by key.

``Attack.run`` is a template method. An attack supplies its configuration (a frozen
dataclass) and ``_search``; the driver does the rest, the same way for every attack:

1. check the inputs (``checks``) and seed the generator;
2. one clean pass, with the label and probability checks, where the attack needs it
   (``_needs_clean_pass``);
3. the plan: the aims (``search.Aim``: which class the objective aims at, and what counts as
   success) that the attack runs one after the other (``_plan``);
4. for each aim and restart, ``_search`` on the examples still unbroken;
5. every candidate a search offers goes into ``search.Best`` under one per-example rule,
   ``search.better``.

How an attack calls the model is in ``passes``, why a search stops early in ``early_exit``, and
how low-precision inputs are attacked in ``precision``. ``Attack.describe`` and
``Attack.from_dict`` turn an attack into JSON and back, through its key in ``ATTACKS``.

Example:
    >>> x_adv = PGD(Linf(0.3), steps=40)(model, x, y)     # any attack: same call, same guarantees
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from robustopt._registry import Registry
from robustopt.attacks.checks import check_batch, check_targets, first_logits_check
from robustopt.attacks.passes import eval_mode, predict
from robustopt.attacks.precision import LOW_PRECISION, Float32Inputs, cast_result, options_in_float32, round_into_ball
from robustopt.attacks.search import Aim, Best, Cost, Search, success_of
from robustopt.threat import ThreatModel

__all__ = ["Attack", "AttackResult", "UnsupportedThreat", "ATTACKS", "attack_key", "WHITE_BOX_SOURCE"]

WHITE_BOX_SOURCE = "A"  # the Source of white-box rows in tables (the paper's name for the evaluated model)


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
                x, model, options = x.float(), Float32Inputs(model, low), options_in_float32(options)
            best = Best(x, minimize=self.minimize, eps=self.threat.eps)
            if len(x) == 0:
                return cast_result(self._result(x, best, cost), x, low)
            check = first_logits_check(model, y, targets)
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
                    round_into_ball(best, x, low, model, y, plan[0].success_target, cost)
        return cast_result(self._result(x, best, cost), x, low)

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

    def call_size(self, batch_size: int) -> int:
        """The examples ``evaluate`` gives one call when its batch size is ``batch_size`` (default: as many).

        An attack that decides over more examples than fit a batch (the adaptive schedule's samples)
        asks for more, declares ``"batch_size"`` in ``call_options`` and then gets the batch size with
        every call, to run its passes on the model in batches of it.
        """
        return batch_size

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
