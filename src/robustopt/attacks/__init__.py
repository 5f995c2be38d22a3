"""Attacks for the inner maximization: one gradient engine (FGSM, PGD), APGD, FAB, Square, and transfer."""

from robustopt.attacks.apgd import APGD
from robustopt.attacks.base import Attack, AttackResult
from robustopt.attacks.fab import FAB
from robustopt.attacks.gradient import FGSM, PGD, GradientAttack
from robustopt.attacks.square import Square
from robustopt.attacks.transfer import Transfer

__all__ = ["Attack", "AttackResult", "GradientAttack", "PGD", "FGSM", "Transfer", "APGD", "FAB", "Square"]
