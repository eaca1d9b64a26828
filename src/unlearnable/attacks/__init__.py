"""Attacks: ways to learn from a protected dataset anyway. One registry, `ATTACKS`."""

from . import adv_train, augmentation, coin, early_stop, mean_sub, ortho_proj, squeeze  # noqa: F401  (register)
from . import smooth, ueraser  # noqa: F401  (smoothing defences; UEraser with the kornia extra)
from . import dvae  # noqa: F401  (the purification family's trained purifier)
from .panel import by_promise, facts_of, level_cost, panel, promise
from .base import (
    ATTACKS, FAMILIES, AttackContext, AttackInfo, NoParams, best_accuracy, execute_attack, get_attack, ordered,
    register_attack,
)

__all__ = ["ATTACKS", "FAMILIES", "AttackContext", "AttackInfo", "NoParams", "best_accuracy", "get_attack", "ordered",
           "register_attack", "execute_attack", "panel", "level_cost", "by_promise", "facts_of", "promise"]
