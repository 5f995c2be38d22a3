"""Adversarial training: the outer minimization of Madry et al. (2018), Sec. 4.

``fit`` trains a model on ``min_theta E max_{delta in S} CE(theta, x + delta, y)``:
per minibatch a training method (:mod:`robustopt.training.methods`) runs the inner
maximization and yields the weight updates: one for "natural", "pgd", "fgsm-rs" and
"n-fgsm" (the cross-entropy of the crafted batch) and "trades" (CE + beta * KL);
``replay`` for "free", which replays the batch. The loop below reads top to bottom: the
method's updates (under autocast with ``amp``), one optimizer step each, then per epoch
validation, the catastrophic-overfitting guard, early stopping and the checkpoint. Its configuration is the :class:`TrainConfig` dataclass
(:mod:`robustopt.training.config`); what a checkpoint holds and how a run resumes is
:mod:`robustopt.training.state`.

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
    out/.lock           held while ``fit`` runs (robustopt._lock): one process per folder

Example:
    >>> model = ro.models.create("madry-mnist")
    >>> res = ro.training.fit(model, ro.data.load("mnist", split="train"),
    ...                       method="pgd", eps=0.3, epochs=90, out="runs/a")
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from robustopt import checkpoint, distributed
from robustopt._checks import warn_eps
from robustopt._device import resolve_device
from robustopt._io import atomic_write_json
from robustopt._lock import holding
from robustopt._progress import progress_bar
from robustopt.attacks import PGD
from robustopt.data.formats import Streamed, streamed
from robustopt.models.folding import fold_batchnorm
from robustopt.attacks.checks import check_batch, check_labels
from robustopt.attacks.passes import eval_mode, predict
from robustopt.threat import ThreatModel
from robustopt.training.averaging import WeightAverage
from robustopt.training.config import TrainConfig, guard_enabled, resolve_config
from robustopt.training.methods import MethodContext, get_method
from robustopt.training.restore import BEST_NAME, RestorePoints, Snapshot, best_weights
from robustopt.training.state import (
    CHECKPOINT_NAME, CONFIG_NAME, PARTIAL_NAME, Checkpoints, Position, checkpoint_due, fingerprint, local_batch,
    partial_continues, write_log,
)

__all__ = ["TrainResult", "fit"]

logger = logging.getLogger(__name__)

_EVAL_BATCH = 500  # batch size of the held-out evaluation; does not change the numbers


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (the same object that was passed), in eval mode; after
            a stop, with the restored weights (the last good epoch, or the best one). With
            ``ema_decay``, it holds the weight average.
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
    train_data: tuple[torch.Tensor, torch.Tensor] | Dataset | Streamed,
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
        train_data: ``(x, y)``: x float images in [0, 1] (N, ...), y int64 labels (N,); or a
            map-style dataset of ``(image, label)`` items (e.g. ``ro.data.load("folder:PATH")``),
            streamed: each batch is read when it is needed, so memory is bounded by the batch, not
            the data set (each image is checked to lie in [0, 1] when it is read).
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
            (``robustopt.runs.RunFolderBusyError``, naming its PID).

    Example:
        >>> res = fit(model, (x, y), method="pgd", eps=0.3, epochs=10, out="runs/a")
        >>> res.history[-1]["val_robust_acc"]
    """
    t_start = time.perf_counter()
    config = resolve_config(config, overrides)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameters that require grad; there is nothing to train.")
    x, y = _check_data(train_data)
    warn_eps(config.threat(), x.shape[1:])  # refuse an eps beyond the [0, 1] box, warn above the usual
    ctx = distributed.setup()  # torchrun: one process per device, data-parallel (robustopt.distributed)
    device = ctx.device(resolve_device(config.device))
    n_val = config.validation_size(len(x))
    n_train = len(x) - n_val
    x_train, x_val = (x.subset(0, n_train), x.subset(n_train, len(x))) if isinstance(x, Streamed) else (x[:n_train],
                                                                                                    x[n_train:])
    y_train, y_val = y[:n_train], y[n_train:]
    # Resolved once per fit: the main method, and the finishing one for the last epochs when set.
    methods = {name: get_method(name) for name in {config.method, config.finish_method} if name}
    per_batch = methods[config.method].updates_per_batch(config)  # per minibatch (Free: replay); finish: the same
    # The guard and early stopping read the validation robust accuracy: is there one?
    has_robust_val = n_val > 0 and (config.val_attack_steps > 0 or config.eps == 0)
    guard = guard_enabled(config, has_robust_val)
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
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None  # then it is the model
    checkpoints = Checkpoints(model, optimizer, scaler, shuffle_gen, attack_gen, device, config, fingerprint(x, y), ctx,
                              average)
    evaluated = checkpoints.evaluated  # what is validated, saved and returned: the average, or the model

    # Resume: from the last finished epoch's checkpoint, then from a mid-epoch one inside the next epoch.
    out = Path(out) if out is not None else None
    ckpt = out / CHECKPOINT_NAME if out is not None else None
    partial = out / PARTIAL_NAME if out is not None else None  # the mid-epoch checkpoint
    if ckpt is not None and not resume and (checkpoint.exists(ckpt) or checkpoint.exists(partial)):
        raise FileExistsError(
            f"{out} already holds a training checkpoint ({ckpt}); pass resume=True to continue "
            "that run, or choose another output folder. Nothing was overwritten."
        )
    if resume and ckpt is not None and checkpoint.exists(ckpt):  # a committed checkpoint (its .json)
        state, method_state = checkpoints.restore(ckpt)
        start_epoch, step, history = state["epoch"], state["step"], list(state["history"])
        stopped = state.get("stopped")
    # Restore points: the last epoch the guard accepted (the checkpoint always holds it), the best epoch.
    restore_points = RestorePoints(
        config, good=Snapshot.take(start_epoch, model, optimizer, scaler, average) if guard else None,
        best=best_weights(out, evaluated, history, start_epoch, device) if config.early_stopping_patience else None)
    position = Position()  # where the first epoch starts: its beginning, or where a mid-epoch checkpoint left it
    if resume and partial is not None and ctx.run_on_main(lambda: partial_continues(partial, start_epoch)):
        state, method_state = checkpoints.restore(partial)
        step, position = state["step"], Position.of(state["position"], ctx)
        model.train(position.train_mode)
    if step:
        logger.info("resuming %s after epoch %d, batch %d (step %d)%s", out, start_epoch, position.batch, step,
                    f"; it was stopped ({stopped}), nothing to do" if stopped else "")
    ctx.check_same((start_epoch, position.batch), f"the epoch and batch to resume {ckpt} from")
    net = ctx.wrap(model, device)  # DDP under torchrun (weight updates only), else the model itself
    attacked = fold_batchnorm(model) if config.fold_bn else model  # what the methods' attacks run through
    if out is not None and ctx.is_main:
        atomic_write_json(out / CONFIG_NAME, config.to_dict())
        write_log(out, history)  # drops lines of an epoch whose checkpoint never landed

    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total_steps = config.epochs * steps_per_epoch * per_batch  # optimizer steps, for the lr schedule
    val_threat = config.threat()  # the full eps
    saved_at = (step, time.monotonic())  # the last checkpoint (or the start): mid-epoch ones count from there
    try:
        for epoch in range(start_epoch, start_epoch if stopped else config.epochs):
            t_epoch = time.perf_counter() - position.seconds
            threat = config.threat(epoch)  # eps warm-up
            method = methods[config.method_at(epoch)]  # finish_method in the last epochs
            method_ctx = MethodContext(attacked, threat=threat, config=config, generator=attack_gen, forward=net,
                                       state=method_state)
            # The epoch's permutation; resuming inside the epoch draws it again from the state it came from.
            perm_gen, epoch_shuffle = position.permutation_generator(shuffle_gen)
            perm = torch.randperm(n_train, generator=perm_gen).to(x_train.device)
            loss_sum, correct, seen, grad_evals = position.sums
            bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", "step",
                               enabled=progress and ctx.is_main)
            bar.update(position.batch)
            for i in range(position.batch, steps_per_epoch):
                global_idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
                xb, yb = local_batch(x_train, y_train, global_idx, config, ctx, shuffle_gen, device)

                # Inner maximization inside the method (attacks in eval mode, forward passes under autocast),
                # outer minimization here: one optimizer step per update (several for minibatch replay).
                for update in method.updates(method_ctx, xb, yb, under=autocast):
                    lr = config.lr_at(step, total_steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.zero_grad(set_to_none=True)
                    # (an empty shard, possible in a last batch smaller than the world size, adds zero gradient)
                    scale = ctx.loss_scale(len(yb), len(global_idx))  # 1.0 in a single process
                    scaler.scale(update.loss * scale if scale != 1.0 else update.loss).backward()
                    scaler.step(optimizer)  # without amp: optimizer.step()
                    scaler.update()
                    if average is not None:
                        average.update(model)
                    step += 1

                    loss_sum += update.loss.item() * len(yb)
                    correct += (update.logits.argmax(dim=1) == yb).sum().item()
                    seen += len(yb)
                    grad_evals += update.grad_evals  # attack + weight-update backward passes
                bar.update()
                if config.log_every and (i + 1) % config.log_every == 0:
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}",
                                    **({} if config.method == "natural" else {"eps": f"{threat.eps:.3g}"}))
                # A mid-epoch checkpoint (the last batch is followed by the epoch's own checkpoint).
                if partial is not None and i + 1 < steps_per_epoch and checkpoint_due(config, step, saved_at, ctx):
                    checkpoints.save(partial, step=step, history=history, method_state=method_state, epoch=epoch,
                                     position={"batch": i + 1, "shuffle": epoch_shuffle, "train_mode": model.training,
                                               # per rank, summed after the epoch
                                               "sums": ctx.gather((loss_sum, correct, seen, grad_evals)),
                                               "seconds": time.perf_counter() - t_epoch})
                    ctx.barrier()  # the other ranks wait until rank 0 has written it
                    saved_at = (step, time.monotonic())
            position = Position()  # the next epochs start at their beginning

            # End of the epoch: validation (rank 0; the others wait), then the guard and early stopping,
            # which may restore earlier weights and stop the run.
            model.eval()
            loss_sum, correct, seen, grad_evals = ctx.sum(loss_sum, correct, seen, grad_evals)
            val_clean, val_robust = ctx.run_on_main(
                lambda: _validate(evaluated, x_val, y_val, val_threat, config, device))
            record = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": loss_sum / seen,
                "train_acc": correct / seen,
                "val_clean_acc": val_clean,
                "val_robust_acc": val_robust,
                "lr": lr,
                "eps": threat.eps,
                "seconds": time.perf_counter() - t_epoch,
                "grad_evals": grad_evals,
                **({"method": config.method_at(epoch)} if config.finish_method else {}),
            }
            events, stopped, improved = restore_points.after_epoch(record, history, checkpoints)
            if events:
                record["events"] = events
                for event in events:
                    logger.warning("epoch %d: %s", epoch + 1, json.dumps(event))
            history.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", acc=f"{record['train_acc']:.3f}",
                            val=_fmt(val_clean), val_rob=_fmt(val_robust))
            bar.close()
            logger.info("epoch %d: %s", epoch + 1, json.dumps(record))

            # The epoch's log line and checkpoint (rank 0 writes; the others wait).
            if out is not None:
                if ctx.is_main:
                    write_log(out, history)
                # "stopped": resuming a stopped run does nothing
                checkpoints.save(ckpt, step=step, history=history, method_state=method_state, epoch=epoch + 1,
                                 metrics=record, **({"stopped": stopped} if stopped else {}))
                if ctx.is_main:
                    if improved:  # after model.*: a crash in between leaves best = the checkpoint's epoch
                        checkpoint.save(out / BEST_NAME, evaluated, config=config.to_dict(),
                                        extra={"epoch": epoch + 1, "metrics": record})
                    checkpoint.remove(partial)  # after model.*: a crash in between leaves a stale one, ignored
                saved_at = (step, time.monotonic())
            ctx.barrier()
            if stopped:
                break
        if average is not None:  # the average is the model that fit returns
            model.load_state_dict(average.model.state_dict())
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.eval()

    return TrainResult(model, history, out, time.perf_counter() - t_start, config, stopped)


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


# --- argument checks ---------------------------------------------------------------------------


def _check_data(train_data: Any) -> tuple[torch.Tensor | Streamed, torch.Tensor]:
    """``train_data`` as checked ``(x, y)``, y as int64: tensors, or a dataset as :class:`Streamed` images."""
    stream = None if isinstance(train_data, (tuple, list)) else streamed(train_data)
    if stream is not None:
        x, y = stream, stream.labels()  # the images are checked batch by batch, when read
    elif not isinstance(train_data, (tuple, list)) or len(train_data) != 2:
        raise TypeError(f"train_data must be a pair (x, y) of tensors or a map-style dataset of (image, label) "
                        f"items, got {type(train_data).__name__}.")
    else:
        x, y = train_data
        check_batch(x, y)
    if len(x) < 1:
        raise ValueError("train_data is empty.")
    if y.min() < 0:
        raise ValueError(f"labels y must be class indices >= 0, got minimum {y.min().item()}.")
    return x, y.long()


def _make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum, as the configuration says."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
