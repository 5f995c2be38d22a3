"""Attacks for the inner maximization: one gradient engine, configured as FGSM and PGD, and transfer."""

from robustopt.attacks.apgd import APGD
from robustopt.attacks.base import Attack, AttackResult
from robustopt.attacks.gradient import FGSM, PGD, GradientAttack
from robustopt.attacks.square import Square
from robustopt.attacks.transfer import Transfer

__all__ = ["Attack", "AttackResult", "GradientAttack", "PGD", "FGSM", "Transfer", "APGD", "Square"]
