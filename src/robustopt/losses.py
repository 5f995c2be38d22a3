"""Per-example attack objectives ``(logits, y, target=None) -> Tensor[N]`` to be MAXIMIZED.

Untargeted (``target=None``) they grow as the true class ``y`` loses; targeted
they grow as the ``target`` class wins. Every function masks a class with
``-inf`` (never by multiplying with zero), so margins stay correct when all
logits are negative.

References:
    CE, CW margin: Carlini & Wagner 2017, as used by Madry et al. 2018 (CW, CW+ with kappa=50).
    DLR: Croce & Hein 2020, "Reliable evaluation of adversarial robustness ...".
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["ce", "cw", "dlr", "margin", "get", "LOSSES"]


def _other_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Largest logit among the classes other than ``cls``, shape (N,)."""
    mask = F.one_hot(cls, logits.shape[1]).bool()
    return logits.masked_fill(mask, float("-inf")).amax(dim=1)


def _at(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, cls[:, None]).squeeze(1)


def ce(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the true class (untargeted) or minus that of the target (targeted)."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def cw(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None, kappa: float = 0.0
) -> torch.Tensor:
    """Carlini-Wagner margin, capped at confidence ``kappa``.

    Untargeted: ``-relu(z_y - max_{j != y} z_j + kappa)``, as in Madry et al.'s code;
    it is 0 once the best wrong class beats the true class by ``kappa``.
    Targeted: ``-relu(max_{j != t} z_j - z_t + kappa)``.
    """
    if target is None:
        return -F.relu(_at(logits, y) - _other_max(logits, y) + kappa)
    return -F.relu(_other_max(logits, target) - _at(logits, target) + kappa)


def dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020), invariant to shift and scale of the logits.

    Untargeted: ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``.
    Targeted: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (needs >= 4 classes).
    """
    top = logits.sort(dim=1, descending=True).values
    if target is None:
        if logits.shape[1] < 3:
            raise ValueError("the DLR loss needs at least 3 classes; use loss='cw' instead.")
        return -(_at(logits, y) - _other_max(logits, y)) / (top[:, 0] - top[:, 2] + 1e-12)
    if logits.shape[1] < 4:
        raise ValueError("the targeted DLR loss needs at least 4 classes; use loss='cw' instead.")
    denom = top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12
    return -(_at(logits, y) - _at(logits, target)) / denom


def margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Signed logit margin, positive exactly when an attack has succeeded (not a training loss).

    Untargeted: ``max_{j != y} z_j - z_y``; targeted: ``z_t - max_{j != t} z_j``. The uncapped
    CW margin; attacks read it to decide whether an example can still flip.
    """
    if target is None:
        return _other_max(logits, y) - _at(logits, y)
    return _at(logits, target) - _other_max(logits, target)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"ce": ce, "cw": cw, "dlr": dlr}


def get(name: str) -> Callable[..., torch.Tensor]:
    """Look up a loss by name ("ce", "cw", "dlr")."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}.") from None
