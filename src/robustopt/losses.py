"""Per-example attack objectives ``(logits, y, target=None) -> Tensor[N]`` to be MAXIMIZED.

Untargeted (``target=None``) they grow as the true class ``y`` loses; targeted
they grow as the ``target`` class wins. Every function masks a class with
``-inf`` (never by multiplying with zero), so margins stay correct when all
logits are negative.

The attack objectives live in the registry :data:`LOSSES` (records of :class:`Loss`, which
say whether the loss takes a confidence ``kappa``); :func:`get` returns the function. Add one
with :func:`register_loss`.

References:
    CE, CW margin: Carlini & Wagner 2017, as used by Madry et al. 2018 (CW, CW+ with kappa=50).
    DLR: Croce & Hein 2020, "Reliable evaluation of adversarial robustness ...".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustopt._registry import Registry

__all__ = ["ce", "cw", "dlr", "margin", "get", "LOSSES", "Loss", "register_loss"]


@dataclass(frozen=True)
class Loss:
    """A registered attack objective; calling the record calls the function.

    Attributes:
        name: the name attacks select it by (``loss="cw"``).
        fn: ``fn(logits, y, target=None[, kappa]) -> Tensor[N]``, to be maximized.
        takes_kappa: whether ``fn`` takes a confidence ``kappa`` keyword (the CW margin's cap).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    takes_kappa: bool = False

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.fn(*args, **kwargs)


LOSSES: Registry[Loss] = Registry("loss")


def register_loss(name: str, *, takes_kappa: bool = False) -> Callable[[Callable[..., torch.Tensor]],
                                                                       Callable[..., torch.Tensor]]:
    """Decorator adding the objective ``fn(logits, y, target=None) -> Tensor[N]`` to :data:`LOSSES` as ``name``.

    The function itself is returned unchanged.

    Args:
        name: the name attacks select it by.
        takes_kappa: ``fn`` takes a confidence ``kappa`` keyword; attacks pass theirs (and refuse
            a nonzero ``kappa`` for a loss without one).

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        LOSSES.register(name, Loss(name, fn, takes_kappa))
        return fn

    return decorator


def _other_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Largest logit among the classes other than ``cls``, shape (N,)."""
    mask = F.one_hot(cls, logits.shape[1]).bool()
    return logits.masked_fill(mask, float("-inf")).amax(dim=1)


def _at(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, cls[:, None]).squeeze(1)


@register_loss("ce")
def ce(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the true class (untargeted) or minus that of the target (targeted)."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


@register_loss("cw", takes_kappa=True)
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


@register_loss("dlr")
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


def get(name: str) -> Callable[..., torch.Tensor]:
    """The loss function registered as ``name`` ("ce", "cw", "dlr", or one of the user's).

    Raises:
        ValueError: no loss has that name (the message names a close one and lists the known ones).
    """
    return LOSSES.get(name).fn
