"""Attack registry in the style of timm: ``@register_attack(name)`` + ``create(name, threat, **kw)``.

Every attack file registers its classes; ``robustopt.attacks`` imports the files, so that
importing the package fills ``ATTACKS``. The suites build their rows from it, and the attack
contract test (tests/test_attack_contract.py) runs on every registered attack, so a new attack
is one file plus one import line in ``attacks/__init__.py``.

Example:
    >>> ro.attacks.create("pgd", ro.Linf(0.3), steps=40)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from robustopt.attacks.base import Attack
from robustopt.threat import ThreatModel

__all__ = ["ATTACKS", "register_attack", "create"]

ATTACKS: dict[str, type[Attack]] = {}

A = TypeVar("A", bound=type[Attack])


def register_attack(name: str) -> Callable[[A], A]:
    """Class decorator: make an attack available as ``ATTACKS[name]`` and ``create(name, ...)``.

    Example:
        >>> @register_attack("pgd")
        ... @dataclass(frozen=True)
        ... class PGD(GradientAttack): ...
    """

    def add(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Attack)):
            raise TypeError(f"register_attack({name!r}) needs an Attack subclass, got {cls!r}.")
        if ATTACKS.get(name, cls) is not cls:
            raise ValueError(f"the attack name {name!r} is already taken by {ATTACKS[name].__name__}.")
        ATTACKS[name] = cls
        return cls

    return add


def create(name: str, threat: ThreatModel, **kwargs: Any) -> Attack:
    """The registered attack ``name`` on ``threat``, configured by ``kwargs``.

    Args:
        name: a key of ``ATTACKS`` ("fgsm", "pgd", "apgd", "fab", "square", ...).
        threat: the threat model, e.g. ``ro.Linf(0.3)``.
        **kwargs: configuration fields of that attack, e.g. ``steps=40``.

    Returns:
        The attack (a frozen configuration value).
    """
    try:
        cls = ATTACKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, ATTACKS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}.{hint}") from None
    return cls(threat, **kwargs)
