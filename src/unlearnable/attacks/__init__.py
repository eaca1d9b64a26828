"""Attacks: ways to learn from a protected dataset anyway. One registry, `ATTACKS`."""

from . import adv_train, augmentation, coin, early_stop, mean_sub, ortho_proj, squeeze  # noqa: F401  (register)
from . import smooth, ueraser  # noqa: F401  (smoothing defences; UEraser with the kornia extra)
from .base import (
    ATTACKS, AttackContext, AttackInfo, NoParams, best_accuracy, execute_attack, get_attack, ordered,
    register_attack,
)

__all__ = ["ATTACKS", "AttackContext", "AttackInfo", "NoParams", "best_accuracy", "get_attack", "ordered",
           "register_attack", "execute_attack"]
