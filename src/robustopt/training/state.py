"""Training state: checkpoints and resume, RNG states, restore points, mid-epoch positions, DDP shards.

What :func:`robustopt.training.fit` needs to stop at any batch boundary, even by ``kill -9``,
and continue bit for bit: a checkpoint (:class:`Checkpoints`) holds the weights, the optimizer
and AMP-scaler state, every rank's RNG states and method state, the epoch and optimizer step,
the history, a fingerprint of the data and, for a mid-epoch checkpoint, the :class:`Position`
inside the epoch. (The in-memory restore points of the catastrophic-overfitting guard and of early stopping are
:mod:`robustopt.training.restore`.)

The files, in the output folder ``out``::

    out/config.json     the TrainConfig (TrainConfig.from_dict reads it back)
    out/log.jsonl       one JSON line per finished epoch
    out/model.*         the checkpoint of the last finished epoch (robustopt.checkpoint files)
    out/best.*          with early stopping: the best epoch's model
    out/partial.*       a mid-epoch checkpoint, removed once its epoch's model.* is written
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from robustopt import checkpoint, distributed
from robustopt._io import atomic_write_text
from robustopt.data.formats import Streamed
from robustopt.training.augment import augment
from robustopt.training.averaging import WeightAverage
from robustopt.training.config import RESUMABLE_CHANGES, TrainConfig
from robustopt.training.restore import BEST_NAME

__all__ = ["CHECKPOINT_NAME", "BEST_NAME", "PARTIAL_NAME", "CONFIG_NAME", "LOG_NAME", "TRAINED_PREFIX", "trained_weights", "Checkpoints", "Position",
           "partial_continues", "checkpoint_due", "write_log", "fingerprint", "local_batch"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "model"  # out/model.* is the checkpoint, updated after every epoch
PARTIAL_NAME = "partial"  # out/partial.*: the mid-epoch checkpoint, removed once its epoch ends
CONFIG_NAME = "config.json"
LOG_NAME = "log.jsonl"
TRAINED_PREFIX = "train/"  # with a weight average: the trained weights' prefix among a checkpoint's tensors


def trained_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trained weights (a state dict) among a weight-averaged checkpoint's ``tensors`` (``TRAINED_PREFIX``)."""
    return {k[len(TRAINED_PREFIX):]: v for k, v in tensors.items() if k.startswith(TRAINED_PREFIX)}


# --- checkpoints ---------------------------------------------------------------------------------


@dataclass
class Checkpoints:
    """Writes and restores ``fit``'s checkpoints: the model and everything a resume needs.

    Attributes:
        model, optimizer, scaler: what the weight updates change.
        shuffle_gen, attack_gen: the shuffling (CPU) and attack (device) generators.
        device: the training device.
        config: the run's configuration (a checkpoint of another one is refused).
        data: :func:`fingerprint` of the training data (a checkpoint of other data is refused).
        ctx: the distributed context (a single process outside torchrun).
        average: the weight average (``ema_decay > 0``), or None. With one, a checkpoint's weights are
            the average's (what an evaluation loads) and the trained weights go in its tensors
            (``train/NAME``), to resume.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    shuffle_gen: torch.Generator
    attack_gen: torch.Generator
    device: torch.device
    config: TrainConfig
    data: dict[str, Any]
    ctx: distributed.Context
    average: WeightAverage | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The model that is validated and saved: the weight average, or the trained model."""
        return self.average.model if self.average is not None else self.model

    def restore(self, path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Load checkpoint ``path`` into the model, optimizer, scaler and generators.

        Returns:
            The checkpoint's training state (its ``extra``: epoch, step, history, ...) and this
            rank's method state.

        Raises:
            ValueError: the checkpoint is of another configuration or other data (checked before
                anything is loaded).
        """
        state = check_resume(checkpoint.read_metadata(path), self.config, self.data, path)
        checkpoint.load(path, self.evaluated, map_location=self.device, optimizer=self.optimizer)
        tensors = checkpoint.load_tensors(path, map_location=self.device)
        if self.average is not None:
            self.model.load_state_dict(trained_weights(tensors))
            self.average.updates = state["average_updates"]
        method_state = rank_state(tensors, self.ctx.rank)
        if self.config.amp and state.get("amp_scaler"):
            self.scaler.load_state_dict(state["amp_scaler"])
        fresh = self._rng_states()
        self._set_rng_states(distributed.resume_rng_states(state, self.ctx, fresh))
        return state, method_state

    def save(self, path: Path, *, step: int, history: list[dict[str, Any]],
             method_state: dict[str, torch.Tensor] | None, **extra: Any) -> None:
        """Checkpoint ``path`` with all a resume needs; under torchrun every rank calls it (rank 0 writes).

        Args:
            path: the checkpoint (``out/model``, ``out/partial``).
            step: optimizer steps taken so far.
            history: the finished epochs' records.
            method_state: the method's state (None for a method without one).
            **extra: more training state (epoch, position, metrics, stopped).
        """
        # Every rank's RNG states and method state go in, so that a distributed run resumes exactly.
        ctx = self.ctx
        rng_ranks = ctx.gather(self._rng_states()) if ctx.enabled else None
        if ctx.enabled and method_state is not None:
            state_ranks = ctx.gather({k: v.detach().cpu() for k, v in method_state.items()})
        else:
            state_ranks = [method_state or {}]
        if not ctx.is_main:
            return
        extra.update(step=step, history=history, data=self.data, rng=self._rng_states())
        if rng_ranks is not None:
            extra.update(world_size=ctx.world_size, rng_ranks=rng_ranks)
        if self.config.amp:
            extra["amp_scaler"] = self.scaler.state_dict()
        tensors = {f"{rank}/{k}": v for rank, st in enumerate(state_ranks) for k, v in st.items()}
        if self.average is not None:
            tensors.update({TRAINED_PREFIX + k: v for k, v in self.model.state_dict().items()})
            extra["average_updates"] = self.average.updates
        checkpoint.save(path, self.evaluated, config=self.config.to_dict(), optimizer=self.optimizer, extra=extra,
                        tensors=tensors or None)

    def _rng_states(self) -> dict[str, Any]:
        """RNG states as hex strings of their bytes."""
        states = {
            "shuffle": _hex(self.shuffle_gen.get_state()),
            "attack": _hex(self.attack_gen.get_state()),
            "attack_device": self.device.type,
            "torch": _hex(torch.get_rng_state()),
        }
        if self.device.type == "cuda":
            states["cuda"] = _hex(torch.cuda.get_rng_state(self.device))
        return states

    def _set_rng_states(self, states: Mapping[str, Any]) -> None:
        self.shuffle_gen.set_state(as_state(states["shuffle"]))
        if states.get("attack_device", "cpu") == self.device.type:
            self.attack_gen.set_state(as_state(states["attack"]))
        else:  # CPU and CUDA generators have different state formats
            logger.warning("resuming on %s a run saved on %s: the attack's random starts are reseeded, "
                           "so the result will not match an uninterrupted run bit for bit",
                           self.device.type, states.get("attack_device"))
        torch.set_rng_state(as_state(states["torch"]))
        if self.device.type == "cuda" and "cuda" in states:
            torch.cuda.set_rng_state(as_state(states["cuda"]), self.device)


def check_resume(meta: Mapping[str, Any], config: TrainConfig, data_info: dict[str, Any], ckpt: Path) -> dict[str, Any]:
    """Raise ValueError unless the checkpoint continues the requested run; return its training state."""
    saved = meta.get("config") or {}
    state = meta.get("extra") or {}
    if not {"epoch", "step", "history", "rng"} <= set(state):
        raise ValueError(f"{ckpt} is not a checkpoint written by robustopt.training.fit; cannot resume from it.")
    wanted = config.to_dict()
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs requested {wanted[k]!r}"
        for k in wanted
        if k not in RESUMABLE_CHANGES and saved.get(k, wanted[k]) != wanted[k]
    ]
    if diffs:
        raise ValueError(
            f"cannot resume {ckpt}: the configuration differs in " + "; ".join(diffs)
            + f". Only {sorted(RESUMABLE_CHANGES)} may change on resume; use another output folder (--out) for a "
            "new run."
        )
    old = state.get("data") or {}
    same_data = (
        old.get("n") == data_info["n"]
        and old.get("shape") == data_info["shape"]
        and old.get("y_sum") == data_info["y_sum"]
        and math.isclose(old.get("x_sum", math.nan), data_info["x_sum"], rel_tol=1e-9, abs_tol=1e-9)
    )
    if old and not same_data:
        what = (f"{old.get('n')} images then, {data_info['n']} now" if old.get("n") != data_info["n"]
                else "other images or labels")
        raise ValueError(
            f"cannot resume {ckpt}: the training data differs from the checkpoint's ({what}). Resume with the "
            "data it was started with (--data, --train-size, --root; in Python the same (x, y)), or use another "
            "output folder (--out) for a new run."
        )
    if state["epoch"] > config.epochs:
        raise ValueError(
            f"cannot resume {ckpt}: it already trained {state['epoch']} epochs, more than the requested "
            f"{config.epochs} (--epochs). Ask for at least {state['epoch']} epochs."
        )
    return state


def fingerprint(x: torch.Tensor | Streamed, y: torch.Tensor) -> dict[str, Any]:
    """Cheap, order-sensitive summary of the training data, to refuse resuming on other data.

    Streamed images (a dataset read batch by batch) are summarised by their first images only.
    """
    images = x.sample(16) if isinstance(x, Streamed) else x
    pos = torch.arange(1, len(images) + 1, device=images.device, dtype=torch.float64)  # weights make order count
    labels = torch.arange(1, len(y) + 1, device=y.device, dtype=torch.float64)
    return {
        "n": len(x),
        "shape": list(x.shape[1:]),
        "x_sum": (images.flatten(1).double().sum(1) * pos).sum().item(),
        "y_sum": int((y.double() * labels).sum().item()),
    }


def rank_state(tensors: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """This rank's method state from a checkpoint's tensors (saved as "RANK/name")."""
    prefix = f"{rank}/"
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def write_log(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``out/log.jsonl`` atomically: it always matches a finished epoch."""
    atomic_write_text(out / LOG_NAME, "".join(json.dumps(r) + "\n" for r in history))


def _hex(state: torch.Tensor) -> str:
    """An RNG state as the hex string of its bytes (compact in the checkpoint's JSON)."""
    return state.numpy().tobytes().hex()


def as_state(hex_bytes: str) -> torch.Tensor:
    """The inverse of :func:`_hex`: an RNG state tensor."""
    return torch.tensor(list(bytes.fromhex(hex_bytes)), dtype=torch.uint8)


# --- mid-epoch checkpoints -----------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
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
    def of(cls, saved: Mapping[str, Any], ctx: distributed.Context) -> Position:
        """This rank's position from a mid-epoch checkpoint's ``extra["position"]``."""
        sums = saved["sums"]  # one entry per rank that wrote it
        if len(sums) == ctx.world_size:
            mine = sums[ctx.rank]
        else:  # another number of processes: rank 0 carries the totals
            mine = [sum(column) for column in zip(*sums)] if ctx.is_main else (0.0, 0, 0, 0)
        return cls(int(saved["batch"]), saved["shuffle"], (float(mine[0]), int(mine[1]), int(mine[2]), int(mine[3])),
                   float(saved["seconds"]), bool(saved["train_mode"]))

    def permutation_generator(self, shuffle_gen: torch.Generator) -> tuple[torch.Generator, str]:
        """The generator that draws this epoch's permutation, and its state before the draw (hex).

        At an epoch's beginning that is ``shuffle_gen`` itself; inside an epoch, a copy of the
        state it had before the interrupted epoch drew its permutation, so that the same one is drawn.
        """
        if not self.batch:
            return shuffle_gen, _hex(shuffle_gen.get_state())
        return torch.Generator().set_state(as_state(self.shuffle)), self.shuffle


def partial_continues(partial: Path, epoch: int) -> bool:
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


def checkpoint_due(config: TrainConfig, step: int, saved_at: tuple[int, float], ctx: distributed.Context) -> bool:
    """Whether a mid-epoch checkpoint is due after optimizer step ``step``: the same answer on every rank.

    Args:
        config: ``checkpoint_every`` (steps) and ``checkpoint_minutes`` say when.
        step: optimizer steps taken so far.
        saved_at: optimizer step and ``time.monotonic()`` of the last checkpoint (or of the start).
        ctx: the distributed context.
    """
    last_step, last_time = saved_at
    if config.checkpoint_every and step - last_step >= config.checkpoint_every:
        return True  # a function of the step alone: every rank agrees
    if not config.checkpoint_minutes:
        return False
    due = time.monotonic() - last_time >= 60 * config.checkpoint_minutes
    return ctx.broadcast(due) if ctx.enabled else due  # clocks differ between ranks: rank 0 decides


# --- data-parallel batches -------------------------------------------------------------------


def local_batch(x: torch.Tensor, y: torch.Tensor, global_idx: torch.Tensor, config: TrainConfig,
                ctx: distributed.Context, shuffle_gen: torch.Generator,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of the global batch ``global_idx`` of ``(x, y)``, augmented, on ``device``.

    With augmentation every rank draws the whole batch's augmentation from the shared shuffling
    generator, then takes its slice, so that the generators stay in step across ranks.
    """
    if config.augment == "none":
        idx = ctx.shard(global_idx)
        return x[idx].to(device), y[idx].to(device)
    local = ctx.shard(torch.arange(len(global_idx)))
    xb = augment(config.augment, x[global_idx], shuffle_gen)[local].to(device)
    return xb, y[global_idx][local].to(device)
