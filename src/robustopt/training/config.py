"""The configuration of :func:`robustopt.training.fit`: :class:`TrainConfig`, its checks and its schedules.

``TrainConfig`` is a frozen dataclass that checks every field when it is made (a bad value
raises ValueError or TypeError with what to do), reads back from ``config.json``
(:meth:`TrainConfig.from_dict`), and answers the questions the loop asks of it: the learning
rate of a step (:meth:`TrainConfig.lr_at`), the eps of an epoch (:meth:`TrainConfig.eps_at`),
the size of the validation split (:meth:`TrainConfig.validation_size`).

Example:
    >>> cfg = TrainConfig(method="fgsm-rs", eps=8 / 255, epochs=15, lr=0.2, lr_schedule="cyclic")
    >>> cfg.lr_at(0, 1000), cfg.lr_at(500, 1000)
    (0.0, 0.2)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

from robustopt._device import check_device_name
from robustopt.threat import ThreatModel, by_name
from robustopt.threat import names as norm_names
from robustopt.training.augment import AUGMENTATIONS
from robustopt.training.methods import METHODS, get_method

__all__ = ["TrainConfig", "SINGLE_STEP_METHODS", "RESUMABLE_CHANGES", "resolve_config", "guard_enabled"]

logger = logging.getLogger(__name__)

_OPTIMIZERS = ("adam", "sgd")
_SCHEDULES = ("constant", "cosine", "step", "piecewise", "cyclic")
SINGLE_STEP_METHODS = ("fgsm-rs", "n-fgsm")  # the catastrophic-overfitting guard is on by default for these
_GUARD_ACTIONS = ("stop", "continue")
# Fields that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset({"epochs", "log_every", "device", "amp", "checkpoint_every", "checkpoint_minutes"})


def _option(default: Any, help: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None,
            names: Iterable[str] | None = None, pixels: bool = False) -> Any:
    """A field that ``robustopt train`` exposes as an option, with the option's help text in its metadata.

    Args:
        default: the field's default (and the option's).
        help: the option's help text.
        flag: the option's name when it is not ``--field-name``.
        choices: the only values the option accepts.
        names: the values the help lists (a live registry; the configuration checks them).
        pixels: a length in pixel space, written like ``8/255`` on the command line.
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "names": names, "pixels": pixels}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """Configuration of :func:`fit`; JSON-ready through :meth:`to_dict` / :meth:`from_dict`.

    The defaults are Madry et al.'s MNIST setup (Sec. 4 and Appendix): PGD training
    against l_inf eps=0.3 with 40 steps of 0.01 from a random start, Adam 1e-4,
    batch 50 (the paper trains 100k steps, about 90 epochs of 55k images).

    Training attacks run the model in eval mode (batch norm with its running statistics,
    dropout off: the attack engine's rule) and the weight updates in train mode; "free" has
    no separate attack (its perturbation gradient comes from the training pass, in train
    mode). Madry et al.'s MNIST model has neither batch norm nor dropout, so there it makes
    no difference. Older ``config.json`` files hold an ``attack_mode`` field that could only
    be "eval"; :meth:`from_dict` accepts it.

    Args:
        method: training method, a key of ``robustopt.training.METHODS``: "natural",
            "pgd" (Madry et al. 2018), "fgsm-rs" (Wong et al. 2020: uniform random start
            in the ball, one step of 1.25 * eps; ignores the attack_* fields), "n-fgsm" (de Jorge
            et al. 2022: noise of 2 * eps, one step of eps, no projection onto the ball; ignores
            the attack_* fields), "trades"
            (Zhang et al. 2019: CE + beta * KL, its KL attack uses the attack_* fields)
            or "free" (Shafahi et al. 2019: each minibatch replayed ``replay`` times).
        epochs: number of passes over the training split, >= 1. With "free" every pass
            replays each minibatch ``replay`` times, so an epoch costs ``replay``
            natural epochs (the paper's "epochs / m" is ``epochs`` here).
        batch_size: examples per optimizer step (the last batch of an epoch may be smaller).
            Under torchrun it is the global batch, split across the processes, so it and
            ``lr`` mean the same as in one process (see :mod:`robustopt.distributed`).
        optimizer: "adam" or "sgd" (with ``momentum``); ``weight_decay`` is an L2 penalty.
        lr: peak learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty coefficient.
        label_smoothing: the cross-entropy of the weight updates against labels smoothed by this
            amount (``torch.nn.functional.cross_entropy``'s ``label_smoothing``), in [0, 1); 0 = off.
            Every method's update uses it (TRADES: its cross-entropy term); the training attacks and
            the validation do not.
        ema_decay: keep an exponential moving average of the weights with this decay, in [0, 1)
            (e.g. 0.999; :class:`robustopt.training.averaging.WeightAverage`); 0 = off. When on, the
            average is the model: the validation, the guard and early stopping read it, the
            checkpoints save it as the weights, and ``fit`` returns it; the weights being trained
            are kept in the checkpoint to resume.
        finish_method: train the last ``finish_epochs`` epochs with this method instead (a key of
            ``METHODS`` with as many updates per batch as ``method``), e.g. "pgd" with ``attack_steps=2``
            after "n-fgsm": a multi-step finish of a single-step run. None = off.
        finish_epochs: how many of the last epochs ``finish_method`` trains, in [1, epochs]; 0 = off.
            Counted from the end: a resumed run with more ``epochs`` finishes later.
        lr_schedule: per optimizer step, evaluated at the step's start: "constant";
            "cosine" (from lr to 0 over all steps); "step" (x0.1 after 50% and again
            after 75% of the steps); "cyclic" (one triangular cycle, Wong et al. 2020:
            0 at the first step, lr at the midpoint, back towards 0 at the end); or
            "piecewise": linear interpolation through the points ``(lr_milestones[i],
            lr * lr_values[i])``, milestones in epochs (fractions allowed), constant
            beyond the first and last; a repeated milestone makes a jump (e.g.
            milestones ``(0, 100, 100, 150, 150)`` and values ``(1, 1, 0.1, 0.1, 0.01)``
            is Rice et al.'s step decay). Without milestones it is the common
            piecewise-linear one-cycle: 0 at epoch 0, lr at 40% of the epochs, 0 at the end.
        lr_milestones: epochs of the "piecewise" points, non-decreasing, >= 0.
        lr_values: multipliers of ``lr`` at those points, >= 0 (same length).
        norm: threat model of the training attack and of the validation: "linf", "l2", "l1".
        eps: radius in pixel space (inputs in [0, 1]), >= 0.
        attack_steps: PGD steps of the training attack ("pgd", "trades").
        attack_step_size: PGD step in pixel space (absolute, not relative to eps);
            None means ``2.5 * eps / attack_steps``.
        attack_random_start: start PGD from a uniform point of the ball ("pgd").
        beta: TRADES' weight of the KL (robustness) term, >= 0 (the paper uses 6).
        replay: Free's minibatch replays m, >= 1 (the paper: 8 on CIFAR-10, 4 on ImageNet).
        eps_warmup_epochs: ramp the training eps linearly over the first k epochs
            (epoch e, counted from 0, uses ``eps * min(1, (e + 1) / k)``); 0 = off.
            Validation always uses the full eps.
        augment: "none", or "crop-flip" (random crop of the image zero-padded by 4 and a
            random horizontal flip, the CIFAR-10 recipe of Madry et al.), drawn from the
            shuffling generator.
        seed: seeds the shuffling (generator ``seed``), the attack's random starts
            (generator ``seed + 1``), the validation attack (``seed + 2``) and the global
            torch RNG (``torch.manual_seed(seed)``, for dropout). Under torchrun, rank 0
            uses these seeds and every other rank its own attack and dropout streams
            (``robustopt.distributed.rank_seed``); the shuffling is shared.
        val_size: examples held out from the END of the training data, never trained
            on, for the per-epoch clean and robust accuracy. None: ``min(1000, N // 10)``.
            0 disables validation.
        val_attack_steps: PGD steps (step ``2.5 * eps / steps``, random start) of the
            validation robust accuracy; 0 skips it.
        guard: catastrophic-overfitting guard (Wong, Rice & Kolter 2020). After every
            epoch it compares the validation robust accuracy (PGD on the fixed held-out
            split, fixed seed) with the best of the earlier epochs; if it fell by more
            than ``guard_drop``, the weights and optimizer state of the last good epoch
            are restored, the epoch's log line gets an event, and training stops or
            continues (``guard_action``). None: on for "fgsm-rs" and "n-fgsm" when there is a
            validation robust accuracy, off otherwise. True needs ``val_size > 0`` and
            ``val_attack_steps > 0``.
        guard_drop: drop of the validation robust accuracy (absolute, in (0, 1]) below the
            best one seen that counts as a collapse.
        guard_action: "stop" (end the run with the restored weights) or "continue"
            (go on training from them).
        early_stopping_patience: stop after this many epochs without a new best
            validation robust accuracy (the split is carved from the training data,
            never the test set) and restore the best epoch's weights; 0 = off. While
            on, ``out/best.*`` holds the best epoch's checkpoint.
        device: "cpu", "auto" (CUDA when available, else CPU) or a torch device string.
        amp: mixed precision on CUDA: the methods' forward passes (their training
            attacks included) under float16 ``torch.autocast``, the weight updates with
            a ``GradScaler``. Validation stays in float32. On a device without CUDA
            ``fit`` raises ValueError (float16 autocast is a CUDA feature; there is no
            silent bfloat16 fallback on CPU).
        fold_bn: run the training attacks through ``robustopt.models.folding.fold_batchnorm(model)``:
            in their eval-mode passes every convolution directly followed by a batch norm is one
            convolution with folded weights (recomputed from the live weights at every call). The
            same function up to float rounding, so the attack points agree except where a gradient
            coordinate is within rounding of zero; faster on CPU (docs/performance.md, "Training
            step on CPU"). Any device; no effect on models without such pairs. Validation and the
            weight updates use the model itself.
        log_every: refresh the progress bar's loss/accuracy every this many steps.
        checkpoint_every: also checkpoint inside an epoch (``out/partial.*``), at the first batch
            boundary after this many optimizer steps since the last checkpoint; 0 = off.
        checkpoint_minutes: also checkpoint inside an epoch at the first batch boundary after this
            many minutes since the last checkpoint; None or 0 = off. Resuming from a mid-epoch
            checkpoint gives the same weights, bit for bit, as an uninterrupted run (same epoch
            permutation and position in it, RNG states, method state, guard and early-stopping
            state, LR schedule position; under torchrun every rank's). Neither field changes the
            result, so both may change on resume.
    """

    method: str = _option("pgd", "the training method (robustopt.training.METHODS).", names=METHODS)
    epochs: int = _option(100, "Passes over the training data (>= 1).")
    batch_size: int = _option(50, "Examples per optimizer step.")
    optimizer: str = _option("adam", "the optimizer (SGD with --momentum).", names=_OPTIMIZERS)
    lr: float = _option(1e-4, "Peak learning rate.")
    momentum: float = _option(0.9, "SGD momentum (Adam ignores it).")
    weight_decay: float = _option(0.0, "L2 penalty coefficient, e.g. 5e-4 for CIFAR-10 with SGD.")
    label_smoothing: float = _option(
        0.0, "Cross-entropy of the weight updates against labels smoothed by this much, e.g. 0.1; 0 = off.")
    ema_decay: float = _option(
        0.0, "Keep an exponential moving average of the weights with this decay, e.g. 0.999, and make it the model "
             "(validated, saved, evaluated); 0 = off.", flag="--ema")
    finish_method: str | None = _option(
        None, "Train the last --finish-epochs epochs with this method instead, e.g. pgd (with --steps 2) after "
              "n-fgsm.", names=METHODS)
    finish_epochs: int = _option(0, "Epochs at the end that --finish-method trains; 0 = off.")
    lr_schedule: str = _option(
        "constant", "Per optimizer step. cyclic: 0 -> lr at the midpoint -> 0 (Wong et al. 2020); piecewise: through "
                    "--lr-milestones/--lr-values, else 0 -> lr at 40% of the epochs -> 0.", choices=_SCHEDULES)
    lr_milestones: tuple[float, ...] | None = _option(
        None, "piecewise: epochs of the schedule's points, e.g. 0,100,100,150 (a repeated epoch is a jump).")
    lr_values: tuple[float, ...] | None = _option(
        None, "piecewise: multipliers of --lr at those epochs, e.g. 1,1,0.1,0.1.")
    norm: str = _option("linf", "Threat model of the training attack and the validation.", choices=tuple(norm_names()))
    eps: float = _option(0.3, "Radius in pixel space, e.g. 0.3 or 8/255.", pixels=True)
    attack_steps: int = _option(40, "Inner PGD steps.", flag="--steps")
    attack_step_size: float | None = _option(0.01, "Inner PGD step size, pixel space.", flag="--step-size",
                                             pixels=True)
    attack_random_start: bool = True
    beta: float = _option(6.0, "trades: weight of the KL term.")
    replay: int = _option(4, "free: minibatch replays m; an epoch then costs m natural epochs.")
    eps_warmup_epochs: int = _option(0, "Ramp eps linearly over the first K epochs; 0 = off.")
    augment: str = _option("none", "Training augmentation: crop-flip = random crop (zero padding 4) + horizontal "
                                   "flip (CIFAR-10).", choices=AUGMENTATIONS)
    seed: int = _option(0, "Seed of the initial weights, the shuffling, the attacks and dropout.")
    val_size: int | None = None
    val_attack_steps: int = 10
    guard: bool | None = _option(
        None, "Catastrophic-overfitting guard: restore the last good epoch when the validation robust accuracy "
              "collapses (default: on for fgsm-rs and n-fgsm only).")
    guard_drop: float = _option(0.2, "Drop below the best validation robust accuracy that counts as a collapse.")
    guard_action: str = _option("stop", "After a collapse: stop with the restored weights or continue from them.",
                                choices=_GUARD_ACTIONS)
    early_stopping_patience: int = _option(
        0, "Stop after K epochs without a better validation robust accuracy and keep the best epoch (OUT/best.*); "
           "0 = off.")
    device: str = _option("cpu", "cpu | cuda | cuda:N | auto.")
    amp: bool = _option(False, "Mixed precision (float16 autocast + GradScaler); CUDA only.")
    fold_bn: bool = _option(False, "Training attacks with batch norm folded into the convolutions (the same function "
                                   "up to float rounding; faster on CPU, any device).")
    log_every: int = 10
    checkpoint_every: int = _option(
        0, "Also checkpoint inside an epoch, every N optimizer steps (OUT/partial.*; 0 = off). --resume continues "
           "from there exactly as if never interrupted.")
    checkpoint_minutes: float | None = _option(
        10.0, "Checkpoint inside an epoch when this many minutes passed since the last checkpoint (0 = off).")

    def __post_init__(self) -> None:
        get_method(self.method)
        _choice("optimizer", self.optimizer, _OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, _SCHEDULES)
        _choice("augment", self.augment, AUGMENTATIONS)
        _choice("norm", self.norm, tuple(norm_names()))
        object.__setattr__(self, "_threat_class", by_name(self.norm))  # resolved once, see threat()
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("attack_steps", 1), ("replay", 1),
                              ("eps_warmup_epochs", 0), ("val_attack_steps", 0), ("early_stopping_patience", 0),
                              ("log_every", 0), ("checkpoint_every", 0)):
            _integer(name, getattr(self, name), minimum)
        if self.checkpoint_minutes is not None:
            minutes = _number("checkpoint_minutes", self.checkpoint_minutes)
            if minutes < 0:
                raise ValueError(f"checkpoint_minutes must be >= 0 (0 or None: no checkpoints by time), got {minutes}.")
            object.__setattr__(self, "checkpoint_minutes", minutes)
        _integer("seed", self.seed, 0)
        if self.val_size is not None:
            _integer("val_size", self.val_size, 0)
        for name in ("lr", "momentum", "weight_decay", "label_smoothing", "ema_decay", "eps", "beta", "guard_drop"):
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0 (TRADES' weight of the KL term; the paper uses 6), got {self.beta}.")
        if not 0 < self.guard_drop <= 1:
            raise ValueError(f"guard_drop must be in (0, 1] (an absolute drop in accuracy), got {self.guard_drop}.")
        _choice("guard_action", self.guard_action, _GUARD_ACTIONS)
        if not (self.guard is None or isinstance(self.guard, bool)):
            raise TypeError(f"guard must be True or False or None (on for fgsm-rs and n-fgsm only), got {self.guard!r}.")
        if not isinstance(self.amp, bool):
            raise TypeError(f"amp must be True or False, got {self.amp!r}.")
        if not isinstance(self.fold_bn, bool):
            raise TypeError(f"fold_bn must be True or False, got {self.fold_bn!r}.")
        _check_milestones(self)
        _check_finish(self)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1) (0 = off, e.g. 0.1), got {self.label_smoothing}.")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off, e.g. 0.999), got {self.ema_decay}.")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0 (a radius in pixel space, e.g. 0.3 or 8/255), got {self.eps}.")
        if self.attack_step_size is not None:
            step = _number("attack_step_size", self.attack_step_size)
            if step <= 0:
                raise ValueError(f"attack_step_size must be > 0 or None (2.5 * eps / steps), got {step}.")
            object.__setattr__(self, "attack_step_size", step)
        if not isinstance(self.attack_random_start, bool):
            raise TypeError(f"attack_random_start must be True or False, got {self.attack_random_start!r}.")
        check_device_name(self.device)  # its spelling; whether this machine has it is checked when training starts

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON types."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; missing fields take their defaults.

        Also reads the ``config.json`` of older runs, whose ``attack_mode`` is "eval".

        Raises:
            TypeError: If ``d`` has keys that are not TrainConfig fields.
            ValueError: If ``d`` has an ``attack_mode`` other than "eval".
        """
        d = dict(d)
        if d.pop("attack_mode", "eval") != "eval":
            raise ValueError("attack_mode is no longer a field: training attacks always run the model in eval mode "
                             "(batch norm with running statistics, no dropout), the only mode it ever accepted.")
        _check_fields(d)
        return cls(**d)

    def validation_size(self, n: int) -> int:
        """Examples held out for validation out of ``n`` training examples (``val_size``, or its default).

        Raises:
            ValueError: ``val_size`` leaves no training data.
        """
        if self.val_size is None:
            return min(1000, n // 10)
        if self.val_size >= n:
            raise ValueError(f"val_size={self.val_size} leaves no training data out of {n} examples; "
                             f"choose val_size < {n} (0 disables validation).")
        return self.val_size

    def method_at(self, epoch: int) -> str:
        """The training method of epoch ``epoch`` (0-based): ``finish_method`` in the last ``finish_epochs``."""
        finishing = self.finish_method is not None and epoch >= self.epochs - self.finish_epochs
        return self.finish_method if finishing else self.method

    def lr_at(self, step: int, total_steps: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based) out of ``total_steps`` (see ``lr_schedule``)."""
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * step / max(total_steps, 1)))
        if self.lr_schedule == "step":
            drops = (step >= 0.5 * total_steps) + (step >= 0.75 * total_steps)
            return self.lr * 0.1**drops
        if self.lr_schedule == "cyclic":
            return self.lr * max(0.0, 1 - abs(2 * step / max(total_steps, 1) - 1))
        if self.lr_schedule == "piecewise":
            epoch = step / max(total_steps, 1) * self.epochs  # position in epochs
            if self.lr_milestones is None:
                points = [(0.0, 0.0), (0.4 * self.epochs, 1.0), (float(self.epochs), 0.0)]
            else:
                points = list(zip(self.lr_milestones, self.lr_values))
            return self.lr * _interpolate(points, epoch)
        return self.lr

    def eps_at(self, epoch: int) -> float:
        """Training eps of ``epoch`` (0-based): linear warm-up over ``eps_warmup_epochs``."""
        if self.eps_warmup_epochs == 0:
            return self.eps
        return self.eps * min(1.0, (epoch + 1) / self.eps_warmup_epochs)

    _threat_class: ClassVar[type[ThreatModel]]  # the class of ``norm``, set by __post_init__

    def threat(self, epoch: int | None = None) -> ThreatModel:
        """The threat model of ``norm`` with the training eps of ``epoch`` (0-based, see :meth:`eps_at`).

        Args:
            epoch: the training epoch; None: the full ``eps`` (the validation's threat model).

        Example:
            >>> TrainConfig(norm="l2", eps=0.5, eps_warmup_epochs=2).threat(0)
            L2(eps=0.25, bounds=(0.0, 1.0))
        """
        return self._threat_class(self.eps if epoch is None else self.eps_at(epoch))


def guard_enabled(config: TrainConfig, has_robust_val: bool) -> bool:
    """Whether the catastrophic-overfitting guard runs (``config.guard`` None: on for the single-step methods).

    Args:
        config: the configuration.
        has_robust_val: whether the run measures a validation robust accuracy (the guard reads it).

    Raises:
        ValueError: ``guard=True`` without a validation robust accuracy.
    """
    if config.guard is None:
        single_step = config.method in SINGLE_STEP_METHODS
        if single_step and not has_robust_val:
            logger.warning("the catastrophic-overfitting guard (on by default for %s) is off: it needs a "
                           "validation robust accuracy (val_size > 0, val_attack_steps > 0)", config.method)
        return single_step and has_robust_val
    if config.guard and not has_robust_val:
        raise ValueError("guard=True needs a validation robust accuracy: set val_size > 0 (or None) and "
                         "val_attack_steps > 0, or guard=False.")
    return config.guard


def _check_finish(config: TrainConfig) -> None:
    _integer("finish_epochs", config.finish_epochs, 0)
    if (config.finish_method is None) != (config.finish_epochs == 0):
        raise ValueError("finish_method and finish_epochs go together: name the method that trains the last epochs "
                         f"and how many (>= 1), or neither; got {config.finish_method!r} and {config.finish_epochs}.")
    if config.finish_method is None:
        return
    finish = get_method(config.finish_method)
    if config.finish_epochs > config.epochs:
        raise ValueError(f"finish_epochs={config.finish_epochs} is more than epochs={config.epochs}.")
    if finish.updates_per_batch(config) != get_method(config.method).updates_per_batch(config):
        raise ValueError(f"finish_method {config.finish_method!r} makes another number of weight updates per batch "
                         f"than {config.method!r}: the learning-rate schedule counts one of them; choose a method "
                         "with one update per batch for both (not 'free').")


def _check_fields(names: Mapping[str, Any]) -> None:
    valid = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(names) - set(valid))
    if unknown:
        raise TypeError(f"unknown TrainConfig field(s) {unknown}; valid ones are: {', '.join(valid)}.")


def resolve_config(config: TrainConfig | None, overrides: Mapping[str, Any]) -> TrainConfig:
    """``config`` (default ``TrainConfig()``) with the fields in ``overrides`` replaced.

    Raises:
        TypeError: ``config`` is not a TrainConfig, or ``overrides`` names an unknown field.
    """
    if config is None:
        config = TrainConfig()
    elif not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (or None), got {type(config).__name__}; "
                        "use TrainConfig.from_dict for a dict.")
    _check_fields(overrides)
    return dataclasses.replace(config, **overrides)


def _check_milestones(config: TrainConfig) -> None:
    """Validate lr_milestones / lr_values (stored as tuples of floats)."""
    given = [name for name in ("lr_milestones", "lr_values") if getattr(config, name) is not None]
    if given and config.lr_schedule != "piecewise":
        raise ValueError(f"{' and '.join(given)} only apply to lr_schedule='piecewise', got {config.lr_schedule!r}.")
    if not given:
        return
    if len(given) == 1:
        raise ValueError("lr_milestones and lr_values go together: give both (same length) or neither "
                         "(the default piecewise-linear one-cycle schedule).")
    for name in given:
        value = getattr(config, name)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"{name} must be a sequence of numbers, got {value!r}.")
        numbers = tuple(_number(name, v) for v in value)
        if not numbers or min(numbers) < 0:
            raise ValueError(f"{name} must be a non-empty sequence of numbers >= 0, got {list(numbers)}.")
        object.__setattr__(config, name, numbers)
    milestones, values = config.lr_milestones, config.lr_values
    if len(milestones) != len(values):
        raise ValueError(f"lr_milestones ({len(milestones)}) and lr_values ({len(values)}) must have the same length.")
    if any(b < a for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"lr_milestones must be non-decreasing (epochs), got {list(milestones)}.")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _integer(name: str, value: Any, minimum: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r}).")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")


def _number(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r}).")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")
    return float(value)


def _interpolate(points: list[tuple[float, float]], t: float) -> float:
    """Piecewise-linear ``(t_i, v_i)`` curve at ``t``, constant outside; right-continuous at jumps."""
    if t < points[0][0]:
        return points[0][1]
    i = max(k for k, (tk, _) in enumerate(points) if tk <= t)  # the last point at or before t
    if i == len(points) - 1:
        return points[-1][1]
    (t0, v0), (t1, v1) = points[i], points[i + 1]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)  # t1 > t0: a repeated milestone is skipped by the max
