"""Restore points of :func:`robustopt.training.fit`: the catastrophic-overfitting guard and early stopping.

:class:`Snapshot` is the exact state after an epoch (weights, optimizer, AMP scaler, weight average);
:class:`RestorePoints` decides after each epoch whether the guard restores the last good epoch or early
stopping the best one; :func:`best_weights` finds the best epoch's weights when a run resumes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from robustopt import checkpoint
from robustopt.training.averaging import WeightAverage
from robustopt.training.config import TrainConfig

__all__ = ["BEST_NAME", "Snapshot", "RestorePoints", "clone_weights", "best_epoch", "best_weights"]

BEST_NAME = "best"  # out/best.*: the best epoch's checkpoint, kept while early stopping is on


class TrainingState(Protocol):
    """What a restore point puts back (``robustopt.training.state.Checkpoints`` is one)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    average: WeightAverage | None

    @property
    def evaluated(self) -> nn.Module: ...



@dataclass
class Snapshot:
    """Weights, optimizer, AMP-scaler state and weight average after ``epoch``, to restore them exactly."""

    epoch: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    average: dict[str, Any] | None = None

    @classmethod
    def take(cls, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler, average: WeightAverage | None = None) -> Snapshot:
        """The state after ``epoch``, copied."""
        return cls(epoch, clone_weights(model), copy.deepcopy(optimizer.state_dict()), scaler.state_dict(),
                   average.state_dict() if average is not None else None)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                average: WeightAverage | None = None) -> None:
        """Put the snapshot's state back into the model, optimizer, scaler and weight average."""
        model.load_state_dict(self.weights)
        # load_state_dict keeps the given tensors, which the next steps update in place: hand it a copy.
        optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        if self.scaler:
            scaler.load_state_dict(self.scaler)
        if average is not None and self.average is not None:
            average.load_state_dict(self.average)  # (a module's load_state_dict copies the values)


@dataclass
class RestorePoints:
    """The catastrophic-overfitting guard and early stopping: what they restore, and what they decide.

    Attributes:
        config: ``guard_drop``, ``guard_action`` and ``early_stopping_patience``.
        good: the last epoch the guard accepted; None when the guard is off.
        best: the best epoch's weights; None when early stopping is off (or no epoch scored yet).
    """

    config: TrainConfig
    good: Snapshot | None
    best: dict[str, torch.Tensor] | None

    def after_epoch(self, record: dict[str, Any], history: list[dict[str, Any]],
                    state: TrainingState) -> tuple[list[dict[str, Any]], str | None, bool]:
        """The guard, then early stopping, after the epoch of ``record`` (``history``: the epochs before it).

        ``state`` holds what they restore: the trained model, optimizer, scaler and weight average.

        Returns:
            The events to log (what was restored and why), why the run stops (None: it goes on),
            and whether the epoch is the best so far (then its weights are kept as ``out/best.*``).
        """
        config, epoch, val_robust = self.config, record["epoch"], record["val_robust_acc"]
        events: list[dict[str, Any]] = []
        stopped = None
        if self.good is not None:  # catastrophic overfitting: robust accuracy collapsed below the best seen
            best_acc = max((r["val_robust_acc"] for r in history if r["val_robust_acc"] is not None), default=None)
            if best_acc is not None and val_robust < best_acc - config.guard_drop:
                self.good.restore(state.model, state.optimizer, state.scaler, state.average)
                events.append({"type": "catastrophic_overfitting", "val_robust_acc": val_robust,
                               "best_val_robust_acc": best_acc, "guard_drop": config.guard_drop,
                               "restored_epoch": self.good.epoch, "action": config.guard_action})
                stopped = "catastrophic_overfitting" if config.guard_action == "stop" else None
            else:
                self.good = Snapshot.take(epoch, state.model, state.optimizer, state.scaler, state.average)
        improved = False
        if config.early_stopping_patience and not stopped:
            best_so_far = best_epoch(history + [record])
            improved = best_so_far == epoch
            if improved:
                self.best = clone_weights(state.evaluated)
            elif epoch - best_so_far >= config.early_stopping_patience:
                state.evaluated.load_state_dict(self.best)  # the run ends: what it saves and returns
                events.append({"type": "early_stopping", "best_epoch": best_so_far,
                               "best_val_robust_acc": history[best_so_far - 1]["val_robust_acc"],
                               "patience": config.early_stopping_patience, "restored_epoch": best_so_far})
                stopped = "early_stopping"
        return events, stopped, improved


def clone_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The epoch with the highest validation robust accuracy (the earliest among ties)."""
    scored = [(r["val_robust_acc"], -r["epoch"]) for r in history if r.get("val_robust_acc") is not None]
    return -max(scored)[1] if scored else None


def best_weights(out: Path | None, model: nn.Module, history: list[dict[str, Any]], epoch: int,
                 device: torch.device) -> dict[str, torch.Tensor] | None:
    """Weights of the best epoch of a run resumed after ``epoch`` (from out/best.* or the checkpoint)."""
    best = best_epoch(history)
    if best is None:
        return None
    if best == epoch:  # the checkpoint just loaded is the best epoch
        return clone_weights(model)
    path = out / BEST_NAME
    saved = (checkpoint.read_metadata(path).get("extra") or {}).get("epoch") if checkpoint.exists(path) else None
    if saved != best:
        raise ValueError(f"cannot resume with early stopping: {path} should hold epoch {best}, the best one in "
                         f"the log, but holds {saved}. Use another output folder for a new run.")
    holder = copy.deepcopy(model)
    checkpoint.load(path, holder, map_location=device)
    return clone_weights(holder)
