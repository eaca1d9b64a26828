"""Attacks: ways to learn from a protected dataset anyway. One registry, `ATTACKS`."""

from . import adv_train, augment_defences, mean_sub, ortho_proj, squeeze  # noqa: F401  (register)
from .base import ATTACKS, AttackContext, AttackInfo, best_accuracy, register_attack, run_attack
from .pgd import pgd

__all__ = ["pgd", "ATTACKS", "AttackContext", "AttackInfo", "best_accuracy", "register_attack", "run_attack"]
