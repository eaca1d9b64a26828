"""Attacks: ways to learn from a protected dataset anyway. One registry, `ATTACKS`."""

from .base import ATTACKS, AttackContext, AttackInfo, best_accuracy, register_attack, run_attack

__all__ = ["ATTACKS", "AttackContext", "AttackInfo", "best_accuracy", "register_attack", "run_attack"]
