"""The attacks an audit tries at a ladder level, derived from the registry by family and cost,
and the order a sequential audit tries them in.

    panel("quick")        # per family its strongest member costing <= 3 standard trainings there
    level_cost("dvae", "quick")   # in standard trainings of the level's recipe
    by_promise(["jpeg", "ortho-proj"], "quick")   # highest prior per unit of cost first

A worst case needs every family tried: the level's `ladder.Panel` names the families, how many
members of each and the cost cap; the registry's facts (family, prior, cost, presets, recipe)
decide the members. A newly registered attack joins by its family with no other edit.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..ladder import level as get_level, recipe_for
from .base import ATTACKS, get_attack, ordered


def level_cost(name: str, level_name: str, epochs: int | None = None) -> float:
    """Attack `name`'s cost at a level in standard trainings of the level's recipe: its cost
    with the level's presets, times its own recipe's epochs over the level's."""
    info = get_attack(name)
    own = recipe_for(level_name, attack=name, epochs=epochs).epochs
    return info.cost_of(info.preset(level_name), own) * own / max(recipe_for(level_name, epochs=epochs).epochs, 1)


def panel(level_name: str) -> tuple[str, ...]:
    """The attacks of the level's panel (`ladder.Panel`), in the registry's display order."""
    rule = get_level(level_name).panel
    chosen: list[str] = []
    families = rule.families if rule.families is not None else sorted({i.family for i in ATTACKS.values()})
    for fam in families:
        members = [n for n, i in ATTACKS.items() if i.family == fam and n != "none"
                   and (rule.max_cost is None or level_cost(n, level_name) <= rule.max_cost)]
        # Strongest first; the cheaper of two equally strong; then the name, so the choice is stable.
        members.sort(key=lambda n: (-ATTACKS[n].prior, level_cost(n, level_name), n))
        chosen += members if rule.per_family is None else members[:rule.per_family]
    return tuple(ordered(chosen))


def by_promise(names: Iterable[str], level_name: str) -> list[str]:
    """`names` in the order a sequential audit tries them: expected success per unit of cost
    (the registry's prior over `level_cost`), then the display order."""
    names = list(names)
    rank = {n: i for i, n in enumerate(ordered(names))}
    return sorted(names, key=lambda n: (-ATTACKS[n].prior / max(level_cost(n, level_name), 1e-9), rank[n]))
