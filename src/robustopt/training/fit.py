"""Adversarial training: the outer minimization of Madry et al. (2018), Sec. 4.

``fit`` trains a model on ``min_theta E max_{delta in S} CE(theta, x + delta, y)``:
per minibatch a training method (:mod:`robustopt.training.methods`) runs the inner
maximization and defines the weight update(s): "natural", "pgd" and "fgsm-rs" craft
the batch and the loop steps on its cross-entropy; "trades" returns its own loss
(CE + beta * KL); "free" replays the batch ``replay`` times, one step each. The loop
below reads top to bottom: method, optimizer steps (under autocast with ``amp``),
then per epoch validation, the catastrophic-overfitting guard, early stopping and
the checkpoint. Its configuration is the :class:`TrainConfig` dataclass.

Output folder (when ``out`` is given)::

    out/config.json     the TrainConfig (TrainConfig.from_dict reads it back)
    out/log.jsonl       one JSON line per finished epoch; an epoch where the guard or
                        early stopping acted has an "events" list
    out/model.json      the checkpoint (robustopt.checkpoint: .json + .safetensors +
                        .optim.pt, + .tensors.safetensors for a method's state such as
                        Free's perturbation), rewritten after every epoch. It is both the
                        resume point and, once the run ends, the final model (after a
                        stop: the restored weights; resuming a stopped run does nothing).
    out/best.json       with early stopping: the best epoch's model (.json + .safetensors)
    out/partial.json    a mid-epoch checkpoint (``checkpoint_every`` / ``checkpoint_minutes``),
                        the same files as model.*; removed once its epoch's model.* is written
    out/.lock           held while ``fit`` runs (robustopt._runfolder): one process per folder

Example:
    >>> model = ro.models.create("madry-mnist")
    >>> res = ro.training.fit(model, ro.data.load("mnist", split="train"),
    ...                       method="pgd", eps=0.3, epochs=90, out="runs/a")
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from robustopt import checkpoint, distributed
from robustopt._checks import warn_eps
from robustopt._device import resolve_device
from robustopt._io import atomic_write_json, atomic_write_text
from robustopt._progress import progress_bar
from robustopt._runfolder import holding
from robustopt.attacks import PGD
from robustopt.attacks.base import check_batch, check_labels, eval_mode, predict
from robustopt.threat import L1, L2, Linf, ThreatModel
from robustopt.training.augment import AUGMENTATIONS, augment
from robustopt.training.methods import as_updates, get_method, method_extras, updates_per_batch

__all__ = ["TrainConfig", "TrainResult", "fit", "CHECKPOINT_NAME", "BEST_NAME", "PARTIAL_NAME"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "model"  # out/model.* is the checkpoint, updated after every epoch
BEST_NAME = "best"  # out/best.*: the best epoch's checkpoint, kept while early stopping is on
PARTIAL_NAME = "partial"  # out/partial.*: the mid-epoch checkpoint, removed once its epoch ends
_NORMS: dict[str, type[ThreatModel]] = {"linf": Linf, "l2": L2, "l1": L1}
_OPTIMIZERS = ("adam", "sgd")
_SCHEDULES = ("constant", "cosine", "step", "piecewise", "cyclic")
_ATTACK_MODES = ("eval",)
SINGLE_STEP_METHODS = ("fgsm-rs", "n-fgsm")  # the catastrophic-overfitting guard is on by default for these
_GUARD_ACTIONS = ("stop", "continue")
# Fields that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = frozenset({"epochs", "log_every", "device", "amp", "checkpoint_every", "checkpoint_minutes"})
_EVAL_BATCH = 500  # batch size of the held-out evaluation; does not change the numbers


@dataclass(frozen=True)
class TrainConfig:
    """Configuration of :func:`fit`; JSON-ready through :meth:`to_dict` / :meth:`from_dict`.

    The defaults are Madry et al.'s MNIST setup (Sec. 4 and Appendix): PGD training
    against l_inf eps=0.3 with 40 steps of 0.01 from a random start, Adam 1e-4,
    batch 50 (the paper trains 100k steps, about 90 epochs of 55k images).

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
        attack_mode: mode of the model while the training attack runs. Only "eval" is
            supported: the attack engine runs the model in eval mode (batch norm uses
            its running statistics, dropout is off) and restores train mode before the
            weight update. Madry et al.'s MNIST model has neither batch norm nor
            dropout, so there it makes no difference. ("free" has no separate attack:
            its perturbation gradient comes from the training pass, in train mode.)
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

    method: str = "pgd"
    epochs: int = 100
    batch_size: int = 50
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_milestones: tuple[float, ...] | None = None
    lr_values: tuple[float, ...] | None = None
    norm: str = "linf"
    eps: float = 0.3
    attack_steps: int = 40
    attack_step_size: float | None = 0.01
    attack_random_start: bool = True
    attack_mode: str = "eval"
    beta: float = 6.0
    replay: int = 4
    eps_warmup_epochs: int = 0
    augment: str = "none"
    seed: int = 0
    val_size: int | None = None
    val_attack_steps: int = 10
    guard: bool | None = None
    guard_drop: float = 0.2
    guard_action: str = "stop"
    early_stopping_patience: int = 0
    device: str = "cpu"
    amp: bool = False
    log_every: int = 10
    checkpoint_every: int = 0
    checkpoint_minutes: float | None = 10.0

    def __post_init__(self) -> None:
        get_method(self.method)
        _choice("optimizer", self.optimizer, _OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, _SCHEDULES)
        _choice("augment", self.augment, AUGMENTATIONS)
        _choice("norm", self.norm, tuple(_NORMS))
        if self.attack_mode not in _ATTACK_MODES:
            raise ValueError(
                f"attack_mode must be 'eval', got {self.attack_mode!r}: the attack engine always runs "
                "the model in eval mode (batch norm with running statistics, no dropout)."
            )
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
        for name in ("lr", "momentum", "weight_decay", "eps", "beta", "guard_drop"):
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
        _check_milestones(self)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0 (a radius in pixel space, e.g. 0.3 or 8/255), got {self.eps}.")
        if self.attack_step_size is not None:
            step = _number("attack_step_size", self.attack_step_size)
            if step <= 0:
                raise ValueError(f"attack_step_size must be > 0 or None (2.5 * eps / steps), got {step}.")
            object.__setattr__(self, "attack_step_size", step)
        if not isinstance(self.attack_random_start, bool):
            raise TypeError(f"attack_random_start must be True or False, got {self.attack_random_start!r}.")
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a str such as 'cpu', 'cuda' or 'auto', got {self.device!r}.")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as err:
                raise ValueError(f"device must be 'cpu', 'auto' or a torch device string, got {self.device!r}.") from err

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON types."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; missing fields take their defaults.

        Raises:
            TypeError: If ``d`` has keys that are not TrainConfig fields.
        """
        _check_fields(d)
        return cls(**d)


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (the same object that was passed), in eval mode; after
            a stop, with the restored weights (the last good epoch, or the best one).
        history: one dict per finished epoch, as in ``out/log.jsonl`` (epochs of an
            earlier, resumed run included).
        out: the output folder, or None.
        seconds: wall time of this call.
        config: the configuration that was used.
        stopped: why training ended before ``config.epochs``: "catastrophic_overfitting"
            (the guard) or "early_stopping"; None if it ran all epochs.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    out: Path | None
    seconds: float
    config: TrainConfig
    stopped: str | None = None


@holding(lambda a: a["out"], "train")  # one process per output folder (released on exit, crash or kill)
def fit(
    model: nn.Module,
    train_data: tuple[torch.Tensor, torch.Tensor],
    *,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> TrainResult:
    """Train ``model`` with a (robust) training method (Madry et al. 2018, Sec. 4).

    Per epoch: shuffle; per batch: the method crafts the training inputs (for "pgd",
    the PGD adversarial examples, found with the model in eval mode) or its own loss,
    and the model, in train mode, takes one optimizer step per update (``replay`` for
    "free", else one). After each epoch: clean and PGD robust accuracy on the held-out
    split; the catastrophic-overfitting guard and early stopping (which may restore
    earlier weights and end the run, see TrainConfig); a line in ``out/log.jsonl`` and
    the checkpoint ``out/model`` (see the module docstring).

    Runs are reproducible: the same seed, data and initial weights give identical
    weights on CPU, and a run interrupted (even by ``kill -9``) and resumed with
    ``resume=True`` ends with the same weights, bit for bit, as an uninterrupted one
    (on CPU; CUDA kernels may be non-deterministic); it resumes from the last epoch's
    checkpoint or from a later mid-epoch one (``checkpoint_every``, ``checkpoint_minutes``).
    While ``fit`` runs it holds ``out`` (a lock freed when the process ends, however it
    ends): a second process training into the same folder is refused. Note that ``fit`` sets the global
    torch seed (``torch.manual_seed(config.seed)``).

    Under ``torchrun`` (``WORLD_SIZE > 1``) the loop is data-parallel: each process
    trains on its share of every global batch through DistributedDataParallel (attacks
    use the unwrapped model), rank 0 validates and writes ``out`` while the others wait,
    and the epoch metrics are summed over the processes. A checkpoint holds every rank's
    RNG states, so a resumed distributed run with the same number of processes is exact
    too. See :mod:`robustopt.distributed`.

    Args:
        model: maps images in [0, 1] (N, C, H, W) to logits (N, classes). It is moved
            to ``config.device`` and trained in place.
        train_data: ``(x, y)``: x float images in [0, 1] (N, ...), y int64 labels (N,).
            The last ``val_size`` examples are held out for validation.
        config: the configuration; default ``TrainConfig()``.
        out: folder for config.json, log.jsonl and the checkpoint; None writes nothing.
        resume: continue from the checkpoint in ``out`` if there is one (weights,
            optimizer, RNG states, epoch and position in it, method state). Only ``epochs``,
            ``log_every``, ``device``, ``amp`` and the ``checkpoint_*`` fields may differ from
            the checkpoint's configuration.
        progress: show a progress bar per epoch (plain lines when stderr is not a terminal,
            see :mod:`robustopt._progress`).
        **overrides: TrainConfig fields replacing those of ``config``, e.g. ``eps=0.3``.

    Returns:
        TrainResult with the model (in eval mode), the history and the output folder.

    Raises:
        TypeError: unknown override, or data/model of the wrong type.
        ValueError: invalid configuration or data (shapes, dtypes, pixels outside
            [0, 1], NaN, labels out of range), ``amp`` without CUDA, the guard or early
            stopping without a validation robust accuracy, or a resume whose
            configuration or data differs from the checkpoint's.
        FileExistsError: ``out`` holds a checkpoint and ``resume`` is False.
        OSError: ``out`` cannot be written, or another process trains into it
            (``robustopt._runfolder.RunFolderBusyError``, naming its PID).

    Example:
        >>> res = fit(model, (x, y), method="pgd", eps=0.3, epochs=10, out="runs/a")
        >>> res.history[-1]["val_robust_acc"]
    """
    t_start = time.perf_counter()
    config = _resolve_config(config, overrides)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameters that require grad; there is nothing to train.")
    x, y = _check_data(train_data)
    warn_eps(config.norm, config.eps, x.shape[1:])  # refuse an eps beyond the [0, 1] box, warn above the usual
    ctx = distributed.setup()  # torchrun: one process per device, data-parallel (robustopt.distributed)
    device = ctx.device(resolve_device(config.device))
    n_val = _val_size(config, len(x))
    n_train = len(x) - n_val
    x_train, y_train, x_val, y_val = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    method = get_method(config.method)
    per_batch = updates_per_batch(config.method, config)  # weight updates per minibatch (Free: replay)
    # The guard and early stopping read the validation robust accuracy: is there one?
    has_robust_val = n_val > 0 and (config.val_attack_steps > 0 or config.eps == 0)
    guard = _guard_enabled(config, has_robust_val)
    if config.early_stopping_patience and not has_robust_val:
        raise ValueError("early_stopping_patience > 0 needs a validation robust accuracy: set val_size > 0 "
                         "(or None) and val_attack_steps > 0.")
    if config.amp and device.type != "cuda":
        raise ValueError(f"amp=True needs a CUDA device (float16 autocast with a GradScaler), got {device}; "
                         "set amp=False on CPU.")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if config.amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp)

    model.to(device)
    with eval_mode(model), torch.no_grad():  # clear errors for a wrong input shape or labels
        logits = predict(model, x[:1].to(device))
    check_labels(logits, y, "labels y")
    optimizer = _make_optimizer(config, params)

    # Randomness: shuffling on CPU, attack starts on the device, dropout from the global RNG.
    shuffle_gen = torch.Generator().manual_seed(config.seed)
    # Under torchrun each rank attacks (and drops out) its own examples: its own streams.
    attack_gen = torch.Generator(device=device).manual_seed(distributed.rank_seed(config.seed + 1, ctx.rank))
    torch.manual_seed(distributed.rank_seed(config.seed, ctx.rank))
    history: list[dict[str, Any]] = []
    start_epoch, step = 0, 0
    stopped: str | None = None  # why the run ended early, if it did
    method_state: dict[str, torch.Tensor] = {}  # kept by a stateful method (Free's delta), checkpointed
    data_info = _fingerprint(x, y)

    out = Path(out) if out is not None else None
    ckpt = out / CHECKPOINT_NAME if out is not None else None
    partial = out / PARTIAL_NAME if out is not None else None  # the mid-epoch checkpoint

    def restore(path: Path) -> dict[str, Any]:
        """Load checkpoint ``path`` into the model, optimizer, scaler, generators and method state."""
        nonlocal method_state
        state = _check_resume(checkpoint.read_metadata(path), config, data_info, path)  # before touching the model
        checkpoint.load(path, model, map_location=device, optimizer=optimizer)
        method_state = _rank_state(checkpoint.load_tensors(path, map_location=device), ctx.rank)
        if config.amp and state.get("amp_scaler"):
            scaler.load_state_dict(state["amp_scaler"])
        fresh = _get_rng_states(shuffle_gen, attack_gen, device)
        _set_rng_states(distributed.resume_rng_states(state, ctx, fresh), shuffle_gen, attack_gen, device)
        return state

    if ckpt is not None and not resume and (checkpoint.exists(ckpt) or checkpoint.exists(partial)):
        raise FileExistsError(
            f"{out} already holds a training checkpoint ({ckpt}); pass resume=True to continue "
            "that run, or choose another output folder. Nothing was overwritten."
        )
    if resume and ckpt is not None and checkpoint.exists(ckpt):  # a committed checkpoint (its .json)
        state = restore(ckpt)
        start_epoch, step, history = state["epoch"], state["step"], list(state["history"])
        stopped = state.get("stopped")
    # Restore points: the last epoch the guard accepted (the checkpoint always holds it), the best epoch.
    good = _Snapshot.take(start_epoch, model, optimizer, scaler) if guard else None
    best_weights = _best_weights(out, model, history, start_epoch, device) if config.early_stopping_patience else None
    position = _Position()  # where the first epoch starts: its beginning, or where a mid-epoch checkpoint left it
    if resume and partial is not None and ctx.run_on_main(lambda: _partial_continues(partial, start_epoch)):
        state = restore(partial)
        step, position = state["step"], _Position.of(state["position"], ctx)
        model.train(position.train_mode)
    if step:
        logger.info("resuming %s after epoch %d, batch %d (step %d)%s", out, start_epoch, position.batch, step,
                    f"; it was stopped ({stopped}), nothing to do" if stopped else "")
    ctx.check_same((start_epoch, position.batch), f"the epoch and batch to resume {ckpt} from")
    net = ctx.wrap(model, device)  # DDP under torchrun (weight updates only), else the model itself
    extra_args = {k: v for k, v in (("forward", net), ("state", method_state)) if k in method_extras(method)}
    if out is not None and ctx.is_main:
        atomic_write_json(out / "config.json", config.to_dict())
        _write_log(out, history)  # drops lines of an epoch whose checkpoint never landed

    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total_steps = config.epochs * steps_per_epoch * per_batch  # optimizer steps, for the lr schedule
    val_threat = _NORMS[config.norm](config.eps)

    def save(path: Path, **extra: Any) -> None:
        """Checkpoint ``path`` with all a resume needs; under torchrun every rank calls it (rank 0 writes)."""
        # Every rank's RNG states and method state go in, so that a distributed run resumes exactly.
        rng_ranks = ctx.gather(_get_rng_states(shuffle_gen, attack_gen, device)) if ctx.enabled else None
        stateful = "state" in extra_args
        state_ranks = ctx.gather(_cpu(method_state)) if ctx.enabled and stateful else [method_state]
        if not ctx.is_main:
            return
        extra.update(step=step, history=history, data=data_info, rng=_get_rng_states(shuffle_gen, attack_gen, device))
        if rng_ranks is not None:
            extra.update(world_size=ctx.world_size, rng_ranks=rng_ranks)
        if config.amp:
            extra["amp_scaler"] = scaler.state_dict()
        tensors = {f"{rank}/{k}": v for rank, st in enumerate(state_ranks) for k, v in st.items()}
        checkpoint.save(path, model, config=config.to_dict(), optimizer=optimizer, extra=extra, tensors=tensors or None)

    saved_at = (step, time.monotonic())  # the last checkpoint (or the start): mid-epoch ones count from there
    try:
        for epoch in range(start_epoch, start_epoch if stopped else config.epochs):
            t_epoch = time.perf_counter() - position.seconds
            eps = _eps_at(config, epoch)
            threat = _NORMS[config.norm](eps)
            # The epoch's permutation; resuming inside the epoch draws it again from the state it came from.
            epoch_shuffle = _as_state(position.shuffle) if position.batch else shuffle_gen.get_state()
            perm_gen = torch.Generator().set_state(epoch_shuffle) if position.batch else shuffle_gen
            perm = torch.randperm(n_train, generator=perm_gen).to(x_train.device)
            loss_sum, correct, seen, grad_evals = position.sums
            bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", "step",
                               enabled=progress and ctx.is_main)
            bar.update(position.batch)
            for i in range(position.batch, steps_per_epoch):
                global_idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
                if config.augment == "none":
                    idx = ctx.shard(global_idx)  # this rank's slice of the global batch
                    xb, yb = x_train[idx].to(device), y_train[idx].to(device)
                else:  # every rank draws the whole batch's augmentation, then takes its slice
                    local = ctx.shard(torch.arange(len(global_idx)))
                    xb = augment(config.augment, x_train[global_idx], shuffle_gen)[local].to(device)
                    yb = y_train[global_idx][local].to(device)

                # Inner maximization: the method crafts the batch or its loss (attacks run in eval mode).
                with autocast():
                    result = method(model, xb, yb, threat=threat, config=config, generator=attack_gen, **extra_args)
                updates = as_updates(result, net, yb)  # a crafted batch: its cross-entropy, in train mode
                # Outer minimization: one optimizer step per update (several for minibatch replay).
                for _ in range(per_batch):
                    with autocast():  # the update's forward passes; the backward runs outside
                        update = next(updates, None)
                    if update is None:
                        raise RuntimeError(f"training method {config.method!r} gave fewer than {per_batch} "
                                           "updates for a batch (see register_method's updates_per_batch).")
                    lr = _lr_at(config, step, total_steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.zero_grad(set_to_none=True)
                    # (an empty shard, possible in a last batch smaller than the world size, adds zero gradient)
                    scale = ctx.loss_scale(len(yb), len(global_idx))  # 1.0 in a single process
                    scaler.scale(update.loss * scale if scale != 1.0 else update.loss).backward()
                    scaler.step(optimizer)  # without amp: optimizer.step()
                    scaler.update()
                    step += 1

                    loss_sum += update.loss.item() * len(yb)
                    correct += (update.logits.argmax(dim=1) == yb).sum().item()
                    seen += len(yb)
                    grad_evals += update.grad_evals  # attack + weight-update backward passes
                if next(updates, None) is not None:  # lets the method finish its batch (Free: the last delta step)
                    raise RuntimeError(f"training method {config.method!r} gave more than {per_batch} updates "
                                       "for a batch.")
                bar.update()
                if config.log_every and (i + 1) % config.log_every == 0:
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}",
                                    **({} if config.method == "natural" else {"eps": f"{eps:.3g}"}))
                # A mid-epoch checkpoint (the last batch is followed by the epoch's own checkpoint).
                if partial is not None and i + 1 < steps_per_epoch and _checkpoint_due(config, step, saved_at, ctx):
                    save(partial, epoch=epoch, position={
                        "batch": i + 1, "shuffle": _hex(epoch_shuffle), "train_mode": model.training,
                        "sums": ctx.gather((loss_sum, correct, seen, grad_evals)),  # per rank, summed after the epoch
                        "seconds": time.perf_counter() - t_epoch})
                    ctx.barrier()  # the other ranks wait until rank 0 has written it
                    saved_at = (step, time.monotonic())
            position = _Position()  # the next epochs start at their beginning

            model.eval()
            loss_sum, correct, seen, grad_evals = ctx.sum(loss_sum, correct, seen, grad_evals)
            # Validation runs on rank 0 (its numbers are those of a single process); others wait.
            val_clean, val_robust = ctx.run_on_main(
                lambda: _validate(model, x_val, y_val, val_threat, config, device))
            record = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": loss_sum / seen,
                "train_acc": correct / seen,
                "val_clean_acc": val_clean,
                "val_robust_acc": val_robust,
                "lr": lr,
                "eps": eps,
                "seconds": time.perf_counter() - t_epoch,
                "grad_evals": grad_evals,
            }
            events: list[dict[str, Any]] = []
            if guard:  # catastrophic overfitting: robust accuracy collapsed below the best seen
                best_acc = max((r["val_robust_acc"] for r in history if r["val_robust_acc"] is not None), default=None)
                if best_acc is not None and val_robust < best_acc - config.guard_drop:
                    good.restore(model, optimizer, scaler)
                    events.append({"type": "catastrophic_overfitting", "val_robust_acc": val_robust,
                                   "best_val_robust_acc": best_acc, "guard_drop": config.guard_drop,
                                   "restored_epoch": good.epoch, "action": config.guard_action})
                    stopped = "catastrophic_overfitting" if config.guard_action == "stop" else None
                else:
                    good = _Snapshot.take(epoch + 1, model, optimizer, scaler)
            improved = False
            if config.early_stopping_patience and not stopped:
                best_epoch = _best_epoch(history + [record])
                improved = best_epoch == epoch + 1
                if improved:
                    best_weights = _clone_weights(model)
                elif epoch + 1 - best_epoch >= config.early_stopping_patience:
                    model.load_state_dict(best_weights)
                    events.append({"type": "early_stopping", "best_epoch": best_epoch,
                                   "best_val_robust_acc": history[best_epoch - 1]["val_robust_acc"],
                                   "patience": config.early_stopping_patience, "restored_epoch": best_epoch})
                    stopped = "early_stopping"
            if events:
                record["events"] = events
                for event in events:
                    logger.warning("epoch %d: %s", epoch + 1, json.dumps(event))
            history.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", acc=f"{record['train_acc']:.3f}",
                            val=_fmt(val_clean), val_rob=_fmt(val_robust))
            bar.close()
            logger.info("epoch %d: %s", epoch + 1, json.dumps(record))

            if out is not None:
                if ctx.is_main:
                    _write_log(out, history)
                # "stopped": resuming a stopped run does nothing
                save(ckpt, epoch=epoch + 1, metrics=record, **({"stopped": stopped} if stopped else {}))
                if ctx.is_main:
                    if improved:  # after model.*: a crash in between leaves best = the checkpoint's epoch
                        checkpoint.save(out / BEST_NAME, model, config=config.to_dict(),
                                        extra={"epoch": epoch + 1, "metrics": record})
                    checkpoint.remove(partial)  # after model.*: a crash in between leaves a stale one, ignored
                saved_at = (step, time.monotonic())
            ctx.barrier()  # the other ranks wait until rank 0 has written the checkpoint
            if stopped:
                break
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.eval()

    return TrainResult(model, history, out, time.perf_counter() - t_start, config, stopped)


# --- schedules ------------------------------------------------------------------------------


def _lr_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) out of ``total_steps`` (see TrainConfig)."""
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * step / max(total_steps, 1)))
    if config.lr_schedule == "step":
        drops = (step >= 0.5 * total_steps) + (step >= 0.75 * total_steps)
        return config.lr * 0.1**drops
    if config.lr_schedule == "cyclic":
        return config.lr * max(0.0, 1 - abs(2 * step / max(total_steps, 1) - 1))
    if config.lr_schedule == "piecewise":
        epoch = step / max(total_steps, 1) * config.epochs  # position in epochs
        if config.lr_milestones is None:
            points = [(0.0, 0.0), (0.4 * config.epochs, 1.0), (float(config.epochs), 0.0)]
        else:
            points = list(zip(config.lr_milestones, config.lr_values))
        return config.lr * _interpolate(points, epoch)
    return config.lr


def _interpolate(points: list[tuple[float, float]], t: float) -> float:
    """Piecewise-linear ``(t_i, v_i)`` curve at ``t``, constant outside; right-continuous at jumps."""
    if t < points[0][0]:
        return points[0][1]
    i = max(k for k, (tk, _) in enumerate(points) if tk <= t)  # the last point at or before t
    if i == len(points) - 1:
        return points[-1][1]
    (t0, v0), (t1, v1) = points[i], points[i + 1]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)  # t1 > t0: a repeated milestone is skipped by the max


def _eps_at(config: TrainConfig, epoch: int) -> float:
    """Training eps of ``epoch`` (0-based): linear warm-up over ``eps_warmup_epochs``."""
    if config.eps_warmup_epochs == 0:
        return config.eps
    return config.eps * min(1.0, (epoch + 1) / config.eps_warmup_epochs)


# --- restore points: the catastrophic-overfitting guard and early stopping ---------------------


@dataclass
class _Snapshot:
    """Weights, optimizer and AMP-scaler state after ``epoch``, to restore them exactly."""

    epoch: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]

    @classmethod
    def take(cls, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler) -> _Snapshot:
        return cls(epoch, _clone_weights(model), copy.deepcopy(optimizer.state_dict()), scaler.state_dict())

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        model.load_state_dict(self.weights)
        # load_state_dict keeps the given tensors, which the next steps update in place: hand it a copy.
        optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        if self.scaler:
            scaler.load_state_dict(self.scaler)


def _clone_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _guard_enabled(config: TrainConfig, has_robust_val: bool) -> bool:
    """Whether the catastrophic-overfitting guard runs (``config.guard`` None: on for the single-step methods)."""
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


def _best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The epoch with the highest validation robust accuracy (the earliest among ties)."""
    scored = [(r["val_robust_acc"], -r["epoch"]) for r in history if r.get("val_robust_acc") is not None]
    return -max(scored)[1] if scored else None


def _best_weights(out: Path | None, model: nn.Module, history: list[dict[str, Any]], epoch: int,
                  device: torch.device) -> dict[str, torch.Tensor] | None:
    """Weights of the best epoch of a run resumed after ``epoch`` (from out/best.* or the checkpoint)."""
    best = _best_epoch(history)
    if best is None:
        return None
    if best == epoch:  # the checkpoint just loaded is the best epoch
        return _clone_weights(model)
    path = out / BEST_NAME
    saved = (checkpoint.read_metadata(path).get("extra") or {}).get("epoch") if checkpoint.exists(path) else None
    if saved != best:
        raise ValueError(f"cannot resume with early stopping: {path} should hold epoch {best}, the best one in "
                         f"the log, but holds {saved}. Use another output folder for a new run.")
    holder = copy.deepcopy(model)
    checkpoint.load(path, holder, map_location=device)
    return _clone_weights(holder)


def _rank_state(tensors: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """This rank's method state from a checkpoint's tensors (saved as "RANK/name")."""
    prefix = f"{rank}/"
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in tensors.items()}


# --- validation on the held-out split --------------------------------------------------------


def _validate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, config: TrainConfig, device: torch.device
) -> tuple[float | None, float | None]:
    """Clean and PGD robust accuracy on ``(x, y)`` (None when empty / disabled).

    Robust = correctly classified clean AND not broken by the attack, which starts
    from a fixed seed (``seed + 2``) every epoch so that epochs are comparable.
    """
    if len(x) == 0:
        return None, None
    attack = None
    if config.val_attack_steps > 0 and threat.eps > 0:
        attack = PGD(threat, steps=config.val_attack_steps, rel_step_size=2.5 / config.val_attack_steps)
    gen = torch.Generator(device=device).manual_seed(config.seed + 2)
    clean = robust = 0
    with eval_mode(model):
        for i in range(0, len(x), _EVAL_BATCH):
            xb, yb = x[i : i + _EVAL_BATCH].to(device), y[i : i + _EVAL_BATCH].to(device)
            with torch.no_grad():
                ok = predict(model, xb).argmax(dim=1) == yb
            clean += ok.sum().item()
            if attack is not None:
                ok &= ~attack.run(model, xb, yb, generator=gen).success
            robust += ok.sum().item()
    if config.val_attack_steps == 0 and threat.eps > 0:
        return clean / len(x), None
    return clean / len(x), robust / len(x)  # at eps = 0 robust accuracy is the clean one


# --- checkpoint / resume -------------------------------------------------------------------------


def _write_log(out: Path, history: list[dict[str, Any]]) -> None:
    # The whole file is rewritten atomically: it always matches a finished epoch.
    atomic_write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def _check_resume(meta: Mapping[str, Any], config: TrainConfig, data_info: dict[str, Any], ckpt: Path) -> dict[str, Any]:
    """Raise ValueError unless the checkpoint continues the requested run; return its training state."""
    saved = meta.get("config") or {}
    state = meta.get("extra") or {}
    if not {"epoch", "step", "history", "rng"} <= set(state):
        raise ValueError(f"{ckpt} is not a checkpoint written by robustopt.training.fit; cannot resume from it.")
    wanted = config.to_dict()
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs requested {wanted[k]!r}"
        for k in wanted
        if k not in _RESUMABLE_CHANGES and saved.get(k, wanted[k]) != wanted[k]
    ]
    if diffs:
        raise ValueError(
            f"cannot resume {ckpt}: the configuration differs in " + "; ".join(diffs)
            + f". Only {sorted(_RESUMABLE_CHANGES)} may change on resume; use another output folder for a new run."
        )
    old = state.get("data") or {}
    same_data = (
        old.get("n") == data_info["n"]
        and old.get("shape") == data_info["shape"]
        and old.get("y_sum") == data_info["y_sum"]
        and math.isclose(old.get("x_sum", math.nan), data_info["x_sum"], rel_tol=1e-9, abs_tol=1e-9)
    )
    if old and not same_data:
        raise ValueError(
            f"cannot resume {ckpt}: the training data differs from the checkpoint's "
            f"(checkpoint {old}, now {data_info}). Pass the same (x, y) or use another output folder."
        )
    if state["epoch"] > config.epochs:
        raise ValueError(
            f"cannot resume {ckpt}: it already trained {state['epoch']} epochs, more than the requested "
            f"epochs={config.epochs}. Ask for at least {state['epoch']} epochs."
        )
    return state


def _fingerprint(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Cheap, order-sensitive summary of the training data, to refuse resuming on other data."""
    pos = torch.arange(1, len(x) + 1, device=x.device, dtype=torch.float64)  # weights make order count
    return {
        "n": len(x),
        "shape": list(x.shape[1:]),
        "x_sum": (x.flatten(1).double().sum(1) * pos).sum().item(),
        "y_sum": int((y.double() * pos).sum().item()),
    }


def _hex(state: torch.Tensor) -> str:
    """An RNG state as the hex string of its bytes (compact in the checkpoint's JSON)."""
    return state.numpy().tobytes().hex()


def _as_state(hex_bytes: str) -> torch.Tensor:
    """The inverse of :func:`_hex`."""
    return torch.tensor(list(bytes.fromhex(hex_bytes)), dtype=torch.uint8)


def _get_rng_states(shuffle_gen: torch.Generator, attack_gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    """RNG states as hex strings of their bytes."""
    states = {
        "shuffle": _hex(shuffle_gen.get_state()),
        "attack": _hex(attack_gen.get_state()),
        "attack_device": device.type,
        "torch": _hex(torch.get_rng_state()),
    }
    if device.type == "cuda":
        states["cuda"] = _hex(torch.cuda.get_rng_state(device))
    return states


def _set_rng_states(states: Mapping[str, Any], shuffle_gen: torch.Generator, attack_gen: torch.Generator, device: torch.device) -> None:
    shuffle_gen.set_state(_as_state(states["shuffle"]))
    if states.get("attack_device", "cpu") == device.type:
        attack_gen.set_state(_as_state(states["attack"]))
    else:  # CPU and CUDA generators have different state formats
        logger.warning("resuming on %s a run saved on %s: the attack's random starts are reseeded, "
                       "so the result will not match an uninterrupted run bit for bit",
                       device.type, states.get("attack_device"))
    torch.set_rng_state(_as_state(states["torch"]))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(_as_state(states["cuda"]), device)


# --- mid-epoch checkpoints -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Position:
    """Where an epoch starts: its beginning, or where a mid-epoch checkpoint left it.

    Attributes:
        batch: batches of the epoch already done.
        shuffle: hex state of the shuffling generator before the epoch drew its permutation.
        sums: this rank's training loss sum, correct count, example count and gradient evaluations so far.
        seconds: time the epoch ran before the checkpoint.
        train_mode: the model's mode at the checkpoint.
    """

    batch: int = 0
    shuffle: str | None = None
    sums: tuple[float, int, int, int] = (0.0, 0, 0, 0)
    seconds: float = 0.0
    train_mode: bool = False

    @classmethod
    def of(cls, saved: Mapping[str, Any], ctx: distributed.Context) -> _Position:
        """This rank's position from a mid-epoch checkpoint's ``extra["position"]``."""
        sums = saved["sums"]  # one entry per rank that wrote it
        if len(sums) == ctx.world_size:
            mine = sums[ctx.rank]
        else:  # another number of processes: rank 0 carries the totals
            mine = [sum(column) for column in zip(*sums)] if ctx.is_main else (0.0, 0, 0, 0)
        return cls(int(saved["batch"]), saved["shuffle"], (float(mine[0]), int(mine[1]), int(mine[2]), int(mine[3])),
                   float(saved["seconds"]), bool(saved["train_mode"]))


def _partial_continues(partial: Path, epoch: int) -> bool:
    """Whether the mid-epoch checkpoint ``partial`` continues a run whose last finished epoch is ``epoch``.

    One from an earlier epoch (the run was killed after writing that epoch's checkpoint and
    before removing it) is stale: it is removed.
    """
    if not checkpoint.exists(partial):
        return False
    saved = checkpoint.read_metadata(partial).get("extra") or {}
    if not isinstance(saved.get("epoch"), int) or not isinstance(saved.get("position"), dict):
        raise ValueError(f"{partial} is not a mid-epoch checkpoint written by robustopt.training.fit; remove "
                         "its files to resume from the last finished epoch.")
    if saved["epoch"] < epoch:
        checkpoint.remove(partial)
        return False
    if saved["epoch"] > epoch:
        raise ValueError(f"cannot resume from {partial}: it lies inside epoch {saved['epoch'] + 1}, but the "
                         f"checkpoint of the epochs before it is missing (the last finished epoch found is {epoch}). "
                         "Use another output folder for a new run.")
    return True


def _checkpoint_due(config: TrainConfig, step: int, saved_at: tuple[int, float], ctx: distributed.Context) -> bool:
    """Whether a mid-epoch checkpoint is due after optimizer step ``step``: the same answer on every rank.

    Args:
        saved_at: optimizer step and ``time.monotonic()`` of the last checkpoint (or of the start).
    """
    last_step, last_time = saved_at
    if config.checkpoint_every and step - last_step >= config.checkpoint_every:
        return True  # a function of the step alone: every rank agrees
    if not config.checkpoint_minutes:
        return False
    due = time.monotonic() - last_time >= 60 * config.checkpoint_minutes
    return ctx.broadcast(due) if ctx.enabled else due  # clocks differ between ranks: rank 0 decides


# --- argument checks ---------------------------------------------------------------------------


def _check_fields(names: Mapping[str, Any]) -> None:
    valid = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(names) - set(valid))
    if unknown:
        raise TypeError(f"unknown TrainConfig field(s) {unknown}; valid ones are: {', '.join(valid)}.")


def _resolve_config(config: TrainConfig | None, overrides: Mapping[str, Any]) -> TrainConfig:
    if config is None:
        config = TrainConfig()
    elif not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (or None), got {type(config).__name__}; "
                        "use TrainConfig.from_dict for a dict.")
    _check_fields(overrides)
    return dataclasses.replace(config, **overrides)


def _check_data(train_data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(train_data, (tuple, list)) or len(train_data) != 2:
        raise TypeError(f"train_data must be a pair (x, y) of tensors, got {type(train_data).__name__}.")
    x, y = train_data
    check_batch(x, y)
    if len(x) < 1:
        raise ValueError("train_data is empty.")
    if y.min() < 0:
        raise ValueError(f"labels y must be class indices >= 0, got minimum {y.min().item()}.")
    return x, y.long()


def _val_size(config: TrainConfig, n: int) -> int:
    if config.val_size is None:
        return min(1000, n // 10)
    if config.val_size >= n:
        raise ValueError(f"val_size={config.val_size} leaves no training data out of {n} examples; "
                         f"choose val_size < {n} (0 disables validation).")
    return config.val_size


def _make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


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


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

