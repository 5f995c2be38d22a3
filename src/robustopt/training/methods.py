"""Training methods: what each weight update of the ``fit`` loop minimizes.

Adversarial training solves ``min_theta E_(x,y) max_{delta in S} L(theta, x + delta, y)``
(Madry et al. 2018, Sec. 2 and 4). The training loop (:mod:`robustopt.training.loop`)
owns the optimizer; a *method* turns one minibatch into weight updates. Every method has
one signature, ``method(ctx, x, y) -> Iterator[Update]``:

* ``ctx`` is a :class:`MethodContext`: the model the attacks run through, the module whose
  forward passes the updates backpropagate, the threat model of the epoch, the run's
  configuration, the attack generator and a state dict that lives for the whole run (and
  is saved in the checkpoint, e.g. Free's perturbation).
* it yields :class:`Update` objects (a loss, its logits and its gradient cost), exactly
  ``updates_per_batch`` of them (declared by :func:`register_method`; one unless declared).
  The loop takes one optimizer step per update and resumes the iterator after each step,
  the last one included, so a method can read the input gradients that a step's backward
  pass left ("free": minibatch replay).

Most methods craft a batch and train on its cross-entropy ("natural", "pgd", "fgsm-rs",
"n-fgsm"): they are written as a function ``craft(ctx, x, y) -> Crafted`` and turned into a
method by :func:`crafting_method`. The registered records live in :data:`METHODS` (a
:class:`~robustopt._registry.Registry` of :class:`TrainingMethod`); add one with
:func:`register_method` without touching the loop. The built-in methods are in
:mod:`robustopt.training.builtin_methods`, registered when :mod:`robustopt.training` is imported.

The ``ctx.model`` a method receives is the model, or with ``TrainConfig.fold_bn`` a view of it
with batch norm folded into the convolutions (:mod:`robustopt.models.folding`: the same
parameters, the same function in train mode). Attacks inside methods use the library's
attack engine (or its one-step form), which runs the model in **eval mode** and restores
its mode afterwards; "free" is the exception: its perturbation gradient comes from the
training pass (train mode). For networks without batch norm or dropout, such as Madry et
al.'s MNIST model A, eval and train mode compute the same function, so this makes no
difference there.

Example:
    >>> ctx = MethodContext(model, threat=ro.Linf(0.3), config=cfg, generator=g)
    >>> batch = builtin_methods.pgd(ctx, x, y)       # the crafted points of "pgd"
    >>> (update,) = get_method("trades")(ctx, x, y)  # one update: CE + beta * KL
    >>> update.loss.backward()
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ContextManager, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from robustopt._registry import Registry
from robustopt.threat import ThreatModel

__all__ = [
    "Crafted", "Update", "MethodContext", "Method", "MethodConfig", "TrainingMethod", "METHODS", "register_method",
    "get_method", "updates_per_batch", "grad_evals_per_example", "crafting_method", "cross_entropy_update",
    "kl_per_example",
]


@dataclass
class Crafted:
    """A training batch crafted by an attack-then-cross-entropy method (see :func:`crafting_method`).

    Attributes:
        x: inputs to train on, same shape/dtype/device as the clean batch, detached,
            inside ``threat.bounds`` (and inside the ball around the clean batch).
        grad_evals: input-gradient evaluations spent crafting it, summed over examples.
    """

    x: torch.Tensor
    grad_evals: int = 0


@dataclass
class Update:
    """One weight update proposed by a method: the loop backpropagates ``loss`` and steps.

    Attributes:
        loss: scalar tensor to minimize, differentiable w.r.t. the model's parameters
            (computed in train mode).
        logits: (N, C) logits whose argmax gives the training accuracy (for TRADES and
            Free those of the adversarial inputs).
        grad_evals: backward passes per example spent on this update, summed over the
            batch: the method's attack plus the backward of ``loss`` (N per forward pass
            of the batch that ``loss`` depends on).
        x: the inputs of ``logits`` (for inspection), or None.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    grad_evals: int
    x: torch.Tensor | None = None


class MethodConfig(Protocol):
    """What the methods here read of the run's configuration, a :class:`~robustopt.training.TrainConfig`.

    (A protocol rather than the class itself: the configuration checks its method name against
    :data:`METHODS`, so it depends on this module and not the other way round.)
    """

    @property
    def attack_steps(self) -> int: ...

    @property
    def attack_step_size(self) -> float | None: ...

    @property
    def attack_random_start(self) -> bool: ...

    @property
    def beta(self) -> float: ...

    @property
    def replay(self) -> int: ...

    @property
    def label_smoothing(self) -> float: ...


@dataclass(frozen=True)
class MethodContext:
    """What a training method works with besides the batch; the loop makes one per epoch.

    Attributes:
        model: the module the method's attacks run through (in eval mode, see the module docstring).
        threat: the threat model of the epoch's training attack (its eps follows the warm-up).
        config: the run's configuration.
        generator: the generator of the attacks' random draws.
        forward: the module whose forward passes the updates' losses come from: the model, or its
            DistributedDataParallel wrapper under torchrun. None: ``model``.
        state: tensors the method keeps for the whole run (e.g. Free's perturbation), saved in the
            checkpoint and restored on resume; empty for a method without state.
    """

    model: nn.Module
    _: dataclasses.KW_ONLY
    threat: ThreatModel
    config: MethodConfig
    generator: torch.Generator
    forward: nn.Module | None = None
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.forward is None:
            object.__setattr__(self, "forward", self.model)


Method = Callable[[MethodContext, torch.Tensor, torch.Tensor], Iterator[Update]]
"""A training method: ``method(ctx, x, y)`` yields the updates of the minibatch ``(x, y)``."""


def _one_update(config: MethodConfig) -> int:
    return 1


@dataclass(frozen=True)
class TrainingMethod:
    """A registered training method: the function and what the loop and the cost report read of it.

    Calling the record calls the method: ``get_method("pgd")(ctx, x, y)`` yields its updates.

    Attributes:
        name: the name ``TrainConfig.method`` selects it by.
        fn: the method, ``fn(ctx, x, y) -> Iterator[Update]``.
        updates_per_batch: the number of updates (optimizer steps) per minibatch as a function of the
            configuration (e.g. Free's ``config.replay``); the learning-rate schedule counts on it.
        grad_evals: image-gradient evaluations (forward + backward passes) per training example and
            epoch as a function of the configuration (e.g. PGD's ``attack_steps + 1``), or None
            (unknown); ``robustopt train`` prints the run's cost with it.
    """

    name: str
    fn: Method
    updates_per_batch: Callable[[MethodConfig], int] = _one_update
    grad_evals: Callable[[MethodConfig], int] | None = None

    def __call__(self, ctx: MethodContext, x: torch.Tensor, y: torch.Tensor) -> Iterator[Update]:
        return self.fn(ctx, x, y)

    def updates(self, ctx: MethodContext, x: torch.Tensor, y: torch.Tensor,
                under: Callable[[], ContextManager[object]] = contextlib.nullcontext) -> Iterator[Update]:
        """The updates of the minibatch ``(x, y)``, checked: exactly ``updates_per_batch(ctx.config)`` of them.

        The method runs until it ends, so after the last update it can still finish its batch
        (Free's last perturbation step).

        Args:
            under: a context for the method's work up to each update (its attack and forward
                passes), e.g. autocast; the caller's backward pass runs outside it.

        Raises:
            RuntimeError: the method yields fewer or more updates than it declared.
            TypeError: it yields something that is not an :class:`Update`.
        """
        expected = int(self.updates_per_batch(ctx.config))
        produced = iter(self.fn(ctx, x, y))
        for count in range(expected + 1):
            with under():
                update = next(produced, None)
            if update is None:
                if count < expected:
                    raise RuntimeError(f"training method {self.name!r} gave fewer than {expected} updates for a "
                                       f"batch ({count}; see register_method's updates_per_batch).")
                return
            if count == expected:
                raise RuntimeError(f"training method {self.name!r} gave more than {expected} updates for a batch "
                                   "(see register_method's updates_per_batch).")
            if not isinstance(update, Update):
                raise TypeError(f"training method {self.name!r} yielded {type(update).__name__}; a method yields "
                                "Update objects (see robustopt.training.methods).")
            yield update


METHODS: Registry[TrainingMethod] = Registry("training method")


def register_method(
    name: str, *, updates_per_batch: Callable[[MethodConfig], int] | None = None,
    grad_evals: Callable[[MethodConfig], int] | None = None,
) -> Callable[[Method], Method]:
    """Decorator adding the method ``fn(ctx, x, y) -> Iterator[Update]`` to :data:`METHODS` under ``name``.

    The function itself is returned unchanged.

    Args:
        name: the name ``TrainConfig.method`` selects it by.
        updates_per_batch: for a method that yields several updates per minibatch, their
            number as a function of the configuration (e.g. Free's ``config.replay``);
            the learning-rate schedule counts on it. Default: one update.
        grad_evals: image-gradient evaluations (forward + backward passes) the method spends
            per training example and epoch, as a function of the configuration (e.g. PGD's
            ``attack_steps + 1``); ``robustopt train`` prints the run's cost with it.
            Default: unknown.

    Raises:
        ValueError: If ``name`` is already registered.
        TypeError: If ``name`` is not a non-empty string or ``fn`` is not callable.

    Example:
        >>> @register_method("clean-twice", updates_per_batch=lambda config: 2)
        ... def clean_twice(ctx, x, y):
        ...     for _ in range(2):
        ...         yield cross_entropy_update(ctx.forward, Crafted(x), y, ctx.config.label_smoothing)
    """

    def decorator(fn: Method) -> Method:
        if not callable(fn):
            raise TypeError(f"a training method must be a function (ctx, x, y) -> Iterator[Update], got {fn!r}.")
        METHODS.register(name, TrainingMethod(name, fn, updates_per_batch or _one_update, grad_evals))
        return fn

    return decorator


def get_method(name: str) -> TrainingMethod:
    """The method registered as ``name`` (a callable record, see :class:`TrainingMethod`).

    Raises:
        ValueError: If no method has that name (the message names a close one and lists the known ones).
    """
    return METHODS.get(name)


def updates_per_batch(name: str, config: MethodConfig) -> int:
    """Weight updates the method ``name`` takes per minibatch (1 unless it registered a count)."""
    return int(get_method(name).updates_per_batch(config))


def grad_evals_per_example(name: str, config: MethodConfig) -> int | None:
    """Image-gradient evaluations per training example and epoch of method ``name`` (None: not declared)."""
    cost = get_method(name).grad_evals
    return None if cost is None else int(cost(config))


def crafting_method(craft: Callable[[MethodContext, torch.Tensor, torch.Tensor], Crafted]) -> Method:
    """The method that trains on the batch ``craft(ctx, x, y)`` crafts: one update, its cross-entropy.

    The update is :func:`cross_entropy_update` of the crafted batch through ``ctx.forward``,
    with the run's ``label_smoothing``.
    """

    @functools.wraps(craft)
    def method(ctx: MethodContext, x: torch.Tensor, y: torch.Tensor) -> Iterator[Update]:
        yield cross_entropy_update(ctx.forward, craft(ctx, x, y), y, ctx.config.label_smoothing)

    return method


def cross_entropy_update(forward: nn.Module, batch: Crafted, y: torch.Tensor, label_smoothing: float = 0.0) -> Update:
    """The update of a crafted batch: cross-entropy of ``forward(batch.x)`` in train mode.

    ``label_smoothing`` is the run's (``TrainConfig.label_smoothing``).

    Costs one backward pass per example on top of ``batch.grad_evals``. An empty batch
    (possible for one rank of a distributed run) gives a zero loss that still reaches
    every parameter.
    """
    forward.train()
    logits = forward(batch.x)
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing) if len(y) else logits.sum()
    return Update(loss, logits, batch.grad_evals + len(y), x=batch.x)


def kl_per_example(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(p_logits) || softmax(q_logits))`` per example, shape (N,), computed in float32.

    Differentiable w.r.t. both arguments (TRADES backpropagates through both).
    """
    log_p = F.log_softmax(p_logits.float(), dim=1)
    log_q = F.log_softmax(q_logits.float(), dim=1)
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)
