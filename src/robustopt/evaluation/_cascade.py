"""The cascade core shared by :func:`robustopt.evaluate` and :func:`robustopt.sweep`.

Both keep one flag per example and run each attack only on a list of example
indices (what is still robust, or every clean-correct example), batch by batch.
This module holds what they share: the batching, the clean pass, the
misclassification test on the evaluated model, the check that every adversarial
point lies inside its threat model before it counts, the per-batch random
streams and the sharding under ``torchrun``. Batch ``j`` runs on rank
``j % world_size`` with batch ``j``'s generator and the flags are merged after
every round of ``world_size`` batches, so every per-example flag is the
single-process one (see :mod:`robustopt.distributed`).

``evaluate`` runs one :meth:`Cascade.rounds` per attack, ``sweep`` one per attack
and eps, each from the current robust mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from robustopt import distributed
from robustopt.attacks.base import Attack
from robustopt.attacks.checks import check_labels
from robustopt.attacks.passes import InBatches, eval_mode, predict
from robustopt.evaluation.records import batch_records
from robustopt.threat import ThreatModel


def seeded_generator(device: torch.device, *key: int) -> torch.Generator:
    """One independent, reproducible random stream per ``key``, e.g. (seed, attack index, batch index)."""
    state = np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) >> 1)


@dataclass
class AttackPass:
    """One attack over its batches: the state after the last finished round.

    Attributes:
        batches: the example indices the attack runs on, batch by batch.
        survived: bool (N,): cleared where the attack broke the example (merged over the ranks).
        done: batches finished by every rank; a pass resumed from a saved state starts there.
        grad_evals: forward+backward passes of the finished batches, summed over the ranks.
        forwards: forward-only passes of the finished batches, summed over the ranks.
    """

    batches: list[torch.Tensor]
    survived: torch.Tensor
    done: int = 0
    grad_evals: int = 0
    forwards: int = 0


class Cascade:
    """The evaluated model and data, with this process's place in a data-parallel run.

    Args:
        model: maps inputs to logits (N, C); run in eval mode, its mode restored after.
        x: all inputs (or a ``robustopt.data.formats.Streamed`` that reads them batch by batch),
            y: their labels (int64).
        batch_size: examples per attack call (an attack may ask for more: ``Attack.call_size``; it
            then gets ``batch_size`` as an option, to batch its own passes).
        what: the data's name in the error raised when the ranks hold different data.
        draws: forward passes that judge each point (``judge``), for a randomized model: an example
            is misclassified when most of them are wrong. With more than one, ``fooled`` keeps per
            example and draw whether its worst point so far (wrong in the most draws) fooled the
            model, from the clean pass on (single process only).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, what: str,
                 draws: int = 1) -> None:
        self.model, self.x, self.y, self.batch_size = model, x, y, batch_size
        self.draws = draws
        self.fooled = torch.zeros(len(y), draws, dtype=torch.bool, device=y.device) if draws > 1 else None
        self.ctx = distributed.setup()
        if self.ctx.enabled:
            sample = x.sample() if hasattr(x, "sample") else x  # streamed data: its first images
            self.ctx.check_same(distributed.data_key(sample, y), what)

    def batches(self, idx: torch.Tensor, attack: Attack | None = None) -> list[torch.Tensor]:
        """``idx`` cut into consecutive batches of ``batch_size``, or of the calls ``attack`` asks for.

        The same cut at every world size (a call is never split over ranks): the per-example results
        stay the single-process ones, and an evaluation smaller than ``world_size`` calls leaves ranks idle.
        """
        size = self.batch_size if attack is None else attack.call_size(self.batch_size)
        return [idx[i : i + size] for i in range(0, len(idx), size)]

    def misclassified(self, x_in: torch.Tensor, yb: torch.Tensor, where: str = "clean inputs") -> torch.Tensor:
        """Bool (B,): the model's prediction on ``x_in`` is not ``yb``.

        Raises:
            ValueError: a label is not one of the model's classes, or the model's output holds NaN or
                Inf at ``where`` (its prediction is then undefined, so no accuracy can count).
        """
        with eval_mode(self.model), torch.no_grad():  # a call may hold more than a batch (Attack.call_size)
            logits = predict(InBatches(self.model, self.batch_size), x_in)
        check_labels(logits, yb)
        bad = ~torch.isfinite(logits).all(dim=1)
        if bad.any():
            raise ValueError(
                f"the model's output (its logits) holds NaN or Inf on {int(bad.sum())} of {len(bad)} {where}: "
                "its prediction is undefined there, so no accuracy can be measured. Fix the "
                "model's numerics (e.g. a log or division by zero, an overflow in low precision) first."
            )
        return logits.argmax(1) != yb

    def judge(self, x_in: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor, where: str = "clean inputs") -> torch.Tensor:
        """Bool (B,): :meth:`misclassified` in most of ``draws`` passes (one for a deterministic model).

        ``idx`` are the batch's positions in the data: where a point is wrong in more draws than
        the example's stored one, its per-draw outcomes replace those in ``fooled``.
        """
        if self.draws == 1:
            return self.misclassified(x_in, yb, where)
        wrong = torch.stack([self.misclassified(x_in, yb, where) for _ in range(self.draws)], dim=1)
        worse = wrong.sum(1) > self.fooled[idx].sum(1)
        self.fooled[idx[worse]] = wrong[worse]
        return 2 * wrong.sum(1) > self.draws

    def clean(self) -> torch.Tensor:
        """Bool (N,): the clean prediction is right (each rank classifies its own batches)."""
        n = len(self.x)
        correct = torch.zeros(n, dtype=torch.bool, device=self.x.device)
        refused = None  # under torchrun, a refusal on one rank is raised on every rank: none waits in a collective
        for k, b in enumerate(self.batches(torch.arange(n, device=self.x.device))):
            if self.ctx.owns(k) and refused is None:
                try:
                    correct[b] = ~self.judge(self.x[b], self.y[b], b)
                except ValueError as err:
                    if not self.ctx.enabled:
                        raise
                    refused = str(err)
        if self.ctx.enabled:
            refused = next((r for r in self.ctx.gather(refused) if r is not None), None)
            if refused is not None:
                raise ValueError(refused)
        return self.ctx.any(correct)

    def rounds(
        self,
        attack: Attack,
        state: AttackPass,
        generator: Callable[[int], torch.Generator],
        *,
        threat: ThreatModel | None = None,
        records: bool = False,
        report: Callable[[str], Any] | None = None,
    ) -> Iterator[tuple[range, list[Any]]]:
        """Run ``attack`` on ``state.batches`` from ``state.done`` on, one round of batches at a time.

        After every round ``state`` holds the merged flags and counters, and this yields the
        batches the round finished and, with ``records``, every rank's ``batch_records``
        (None for a rank without a batch or an attack that records nothing).

        Args:
            attack: run on each batch from the clean input.
            state: updated in place.
            generator: batch index -> the generator of that batch's random draws.
            threat: the threat model the points must lie in (default: the attack's).
            records: gather the attack's per-example records.
            report: told what a call that reports its stages (``on_stage`` in ``call_options``) is doing.

        Raises:
            ValueError: the attack returned points outside the threat model.
        """
        threat = attack.threat if threat is None else threat
        ctx, batches = self.ctx, state.batches
        for j0 in range(state.done, len(batches), ctx.world_size):  # a round: one batch per rank
            j, cost, queries, recorded = j0 + ctx.rank, 0, 0, None
            if j < len(batches):
                idx = batches[j]
                offered = {"batch_size": self.batch_size, "on_stage": report}
                options = {k: v for k, v in offered.items() if k in attack.call_options and v is not None}
                result = attack.run(self.model, self.x[idx], self.y[idx], generator=generator(j), **options)
                inside = threat.contains(result.x_adv, self.x[idx])
                if not inside.all():
                    raise ValueError(
                        f"attack {attack.name} returned {int((~inside).sum())} points outside its threat model "
                        f"{threat}; its result cannot count. This is a bug in that attack."
                    )
                where = f"adversarial points of {attack.name}"
                state.survived[idx] = ~self.judge(result.x_adv, self.y[idx], idx, where)
                cost, queries = int(result.grad_evals), int(result.forwards)
                recorded = batch_records(idx, result) if records else None
            state.survived = ctx.all(state.survived)  # each rank only cleared the flags of its own batch
            cost, queries = ctx.sum(cost, queries)
            state.grad_evals, state.forwards = state.grad_evals + cost, state.forwards + queries
            gathered = ctx.gather(recorded) if records else []
            finished = range(j0, min(j0 + ctx.world_size, len(batches)))
            state.done = finished.stop
            yield finished, gathered

    def run(self, attack: Attack, state: AttackPass, generator: Callable[[int], torch.Generator], *,
            threat: ThreatModel | None = None) -> AttackPass:
        """All of :meth:`rounds` at once; returns ``state``, finished."""
        for _ in self.rounds(attack, state, generator, threat=threat):
            pass
        return state
