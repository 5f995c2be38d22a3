"""The probes of the audit: what every check reads of the model, computed once on demand and cached."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustopt import losses
from robustopt.attacks.passes import InBatches, batches, eval_mode, predict
from robustopt.evaluation.results import Evaluation
from robustopt.evaluation.sweep import SweepCurve
from robustopt.threat import ThreatModel

__all__ = ["AuditContext"]


@dataclass
class AuditContext:
    """What the checks look at; model probes are computed once, on demand, and cached.

    Attributes:
        model: the audited model, or None.
        x, y: the probe examples (at most ``probe`` of the data, drawn with ``seed``).
        x_all: all inputs (for ``outside-threat``).
        evaluation, sweep, x_adv, threat: what was passed to ``audit`` (threat possibly
            read from the evaluation).
        batch_size: examples per forward pass.
        seed: seed of the probe's random directions.
    """

    model: nn.Module | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    x_all: torch.Tensor | None = None
    evaluation: Evaluation | None = None
    sweep: SweepCurve | None = None
    x_adv: torch.Tensor | None = None
    threat: ThreatModel | None = None
    batch_size: int = 200
    seed: int = 0

    @property
    def bounds(self) -> tuple[float, float]:
        return self.threat.bounds if self.threat is not None else (0.0, 1.0)

    def _batches(self) -> list[slice]:
        return batches(0 if self.x is None else len(self.x), self.batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the model on ``x`` (eval mode, no grad), in batches."""
        assert self.model is not None
        with eval_mode(self.model), torch.no_grad():
            return predict(InBatches(self.model, self.batch_size), x)

    @functools.cached_property
    def logits(self) -> torch.Tensor:
        assert self.x is not None
        return self.forward(self.x)

    @functools.cached_property
    def logits_again(self) -> torch.Tensor:
        """A second forward pass on the same inputs (for ``randomized-output``)."""
        _ = self.logits
        assert self.x is not None
        return self.forward(self.x)

    @functools.cached_property
    def grads(self) -> dict[str, torch.Tensor]:
        """Input gradients of the CE loss and of the margin ``max_{j != y} z_j - z_y``, with the losses."""
        assert self.model is not None and self.x is not None and self.y is not None
        out: dict[str, list[torch.Tensor]] = {"ce": [], "margin": [], "ce_loss": [], "margin_loss": []}
        with eval_mode(self.model), torch.enable_grad():
            for s in self._batches():
                xb = self.x[s].detach().clone().requires_grad_(True)
                logits = predict(self.model, xb)
                ce = F.cross_entropy(logits, self.y[s], reduction="none")
                margin = losses.margin(logits, self.y[s])
                for name, loss in (("ce", ce), ("margin", margin)):
                    if loss.requires_grad:
                        (g,) = torch.autograd.grad(loss.sum(), xb, retain_graph=True, allow_unused=True)
                    else:  # the model cut the graph (e.g. .detach() or no_grad inside): no gradient at all
                        g = None
                    out[name].append(torch.zeros_like(xb) if g is None else g.detach())
                    out[name + "_loss"].append(loss.detach())
        return {k: torch.cat(v) for k, v in out.items()}

