"""Attacks for the inner maximization: one gradient engine (FGSM, PGD), APGD, FAB, Square, transfer,
and AdaptiveAutoAttack (their AutoAttack schedule, by evidence per example).

Every attack runs through one driver (``Attack.run`` in ``base``) and is registered by key
(``ATTACKS``, ``create``); ``Attack.describe()`` stores the key and ``Attack.from_dict`` reads it
back. A new attack is one file with ``@register_attack("key")`` plus its import line below; the
contract test then covers it.
"""

from robustopt.attacks.base import Attack, AttackResult
from robustopt.attacks.registry import ATTACKS, attack_key, create, register_attack

# the registered attacks: importing a file registers its classes
from robustopt.attacks.gradient import FGSM, PGD, GradientAttack
from robustopt.attacks.apgd import APGD
from robustopt.attacks.fab import FAB
from robustopt.attacks.square import Square
from robustopt.attacks.adaptive import AdaptiveAutoAttack

from robustopt.attacks.transfer import Transfer

__all__ = ["Attack", "AttackResult", "ATTACKS", "attack_key", "create", "register_attack", "GradientAttack", "PGD",
           "FGSM", "Transfer", "APGD", "FAB", "Square", "AdaptiveAutoAttack"]
