"""The attacks an audit tries at a ladder level, derived from the registry by family and cost,
and the order a sequential audit tries them in.

    panel("quick")        # per family its strongest member costing <= 3 standard trainings there
    level_cost("dvae", "quick")   # in standard trainings of the level's recipe
    by_promise(["jpeg", "ortho-proj"], "quick")   # highest prior per unit of cost first
    by_promise(names, "quick", facts_of(manifest))  # the prior sharpened by the set's facts

A worst case needs every family tried: the level's `ladder.Panel` names the families, how many
members of each and the cost cap; the registry's facts (family, prior, cost, presets, recipe)
decide the members. A newly registered attack joins by its family with no other edit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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


def facts_of(manifest: Mapping[str, Any] | None) -> frozenset[str]:
    """What a protected set's manifest says that changes which defence is likely to work: its
    kind ("kind:class-wise" / "kind:sample-wise"), the norm of its bound ("norm:linf", "norm:l2",
    "norm:l0", "norm:none") and whether it is additive ("additive"). Empty for an unknown set."""
    m = manifest or {}
    facts = set()
    if isinstance(m.get("kind"), str):
        facts.add(f"kind:{m['kind']}")
    bound = m.get("bound")
    if isinstance(bound, Mapping) and isinstance(bound.get("norm"), str):
        facts.add(f"norm:{bound['norm']}")
    if m.get("additive") is True:
        facts.add("additive")
    return frozenset(facts)


def promise(name: str, level_name: str, facts: Iterable[str] = ()) -> float:
    """Expected success per unit of cost: the prior, times the attack's `suits` multiplier of
    each fact of the set, over its cost at the level."""
    info = ATTACKS[name]
    p = info.prior
    for f in facts:
        p *= info.suits.get(f, 1.0)
    return p / max(level_cost(name, level_name), 1e-9)


def by_promise(names: Iterable[str], level_name: str, facts: Iterable[str] = ()) -> list[str]:
    """`names` in the order a sequential audit tries them: `promise` (the registry's prior,
    sharpened by the set's `facts`, over `level_cost`), then the display order."""
    names, facts = list(names), frozenset(facts)
    rank = {n: i for i, n in enumerate(ordered(names))}
    return sorted(names, key=lambda n: (-promise(n, level_name, facts), rank[n]))
