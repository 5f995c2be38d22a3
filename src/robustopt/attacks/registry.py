"""Attack registry in the style of timm: ``@register_attack(key)`` + ``create(key, threat, **kw)``.

Every attack file registers its classes; ``robustopt.attacks`` imports the files, so that
importing the package fills ``ATTACKS`` (a :class:`robustopt._registry.Registry`). The key is
the attack's identity: ``Attack.describe()`` stores it and ``Attack.from_dict`` reads it back.
The suites build their rows from the registry, and the attack contract test
(tests/test_attack_contract.py) runs on every registered attack, so a new attack is one file
plus one import line in ``attacks/__init__.py``.

Example:
    >>> ro.attacks.create("pgd", ro.Linf(0.3), steps=40)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from robustopt.attacks.base import ATTACKS, Attack, attack_key
from robustopt.threat import ThreatModel

__all__ = ["ATTACKS", "register_attack", "create", "attack_key"]

A = TypeVar("A", bound=type[Attack])


def register_attack(key: str) -> Callable[[A], A]:
    """Class decorator: make an attack available as ``ATTACKS[key]`` and ``create(key, ...)``.

    Raises:
        TypeError: the decorated object is not an Attack subclass.
        ValueError: ``key`` is taken by another attack.

    Example:
        >>> @register_attack("pgd")
        ... @dataclass(frozen=True)
        ... class PGD(GradientAttack): ...
    """

    def add(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Attack)):
            raise TypeError(f"register_attack({key!r}) needs an Attack subclass, got {cls!r}.")
        return ATTACKS.register(key, cls)  # type: ignore[return-value]

    return add


def create(name: str, threat: ThreatModel, **kwargs: Any) -> Attack:
    """The registered attack ``name`` on ``threat``, configured by ``kwargs``.

    Args:
        name: a key of ``ATTACKS`` ("fgsm", "pgd", "apgd", "fab", "square", "adaptive", "transfer").
        threat: the threat model, e.g. ``ro.Linf(0.3)``.
        **kwargs: configuration fields of that attack, e.g. ``steps=40`` (for "transfer": see
            ``Transfer.create``).

    Returns:
        The attack (a frozen configuration value).

    Raises:
        ValueError: unknown key (the message names the close match and the known keys).
    """
    return ATTACKS.get(name).create(threat, **kwargs)
