"""The compute ladder: `tiny | quick | paper`, the one per-level table every method's row
belongs to, and the one function that turns a level (plus overrides such as `--epochs`) into a
training recipe.

    from unlearnable.ladder import PerLevel, level, recipe_for
    level("quick").dfr_n                              # 2000
    recipe_for("paper", attack="adv-train", epochs=2)  # the adv recipe, 2 epochs, milestones rescaled
    recipe_for(preset="released", epochs=10)           # a named recipe preset, rescaled the same way
    PerLevel({"tiny": {"k": "100"}}, default={})       # a method's row: what it takes at each level

Every orchestrator asks here: the audit, the reproduction grids, the CLI's `--recipe/--epochs`
and the crafting of model-based poisons (`PoisonContext.level`). `paper` is the paper's protocol
(section 4.2 and App. A); `quick` is sized for 2 CPU cores; `tiny` for tests and trying things.

A method's own settings per level (an attack's recipe and parameter presets, a model-based
poison's level-scaled parameters, the detector's and fine-tuning's budgets) are rows of this one
table: `PerLevel` values on the method's registry entry. An attack registers its rows here too
(`register_attack_row`), so `recipe_for(level, attack=NAME)` needs no import of the attacks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .core.errors import UnlearnableError
from .core.registry import lookup
from .train.recipe import Recipe, get_recipe

LEVELS = ("tiny", "quick", "paper")

T = TypeVar("T")
_MISSING: Any = object()


def check_level(name: str) -> str:
    """`name` if it is a rung of the ladder, else a one-line error naming the rungs."""
    if name not in LEVELS:
        raise UnlearnableError(f"level must be one of {', '.join(LEVELS)}, got {name!r}")
    return name


class PerLevel(Mapping[str, T], Generic[T]):
    """A value for each rung of the ladder: one method's (or one analysis') row of the table.

    Without `default` every level must be given (a model-based poison's level-scaled parameters:
    each rung decides every field left unset); with one, the levels not given take it (an
    attack's presets: most levels run its defaults). A level that is not a rung is a one-line
    error, when the row is made and when it is read. Iterating gives the levels given.
    """

    def __init__(self, values: Mapping[str, T] | None = None, default: T = _MISSING):
        values = dict(values or {})
        bad = sorted(set(values) - set(LEVELS))
        if bad:
            raise ValueError(f"unknown levels {bad} (the ladder's: {', '.join(LEVELS)})")
        if default is _MISSING and set(values) != set(LEVELS):
            raise ValueError(f"a value for every level is needed, missing {sorted(set(LEVELS) - set(values))}")
        self._values, self._default = values, default

    def __getitem__(self, name: str) -> T:
        check_level(name)
        if name in self._values:
            return self._values[name]
        if self._default is _MISSING:
            raise KeyError(name)
        return self._default

    def get(self, name: str, default: Any = None) -> Any:
        """The value given for level `name`, else `default` (not the row's own default)."""
        return self._values.get(name, default)

    def __contains__(self, name: object) -> bool:
        """Whether a value is given for `name` (what iterating lists), never an error."""
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        extra = "" if self._default is _MISSING else f", default={self._default!r}"
        return f"PerLevel({self._values!r}{extra})"


@dataclass(frozen=True)
class Panel:
    """Which attacks an audit at a level tries, as a rule over the attack registry (no hand
    list: a newly registered attack joins by its family and cost). `families`: the families
    drawn from (None: every one); `per_family`: how many members of each, strongest first by
    the registry's `prior` (None: all); `max_cost`: only members that cost at most this many of
    the level's standard trainings there (None: any). The rule is applied by
    `attacks.panel(level)`, which knows the registry."""

    families: tuple[str, ...] | None = None
    per_family: int | None = None
    max_cost: float | None = None


@dataclass(frozen=True)
class Level:
    """What one rung of the ladder spends on each analysis."""

    name: str
    recipe: str  # the recipe preset of every training (an attack may name its own per level)
    epochs: int | None  # None: the preset's own
    dfr_n: int  # clean training images for the DFR head
    separability_steps: int  # L-BFGS steps
    separability_repeats: int  # repeats for the images (Table 6 uses 10)
    separability_n: int | None  # a seeded subset for separability; None: all
    panel: Panel  # the audit's attacks, by family (`attacks.panel`)
    # Evaluations per L-BFGS step and early stop: the released script's 20 and none at `paper`.
    separability_max_iter: int = 20
    separability_early_stop: bool = False
    # When an attack's training measures the clean test set (`Recipe.evaluate`): it reports the
    # last epoch's figure only. `paper` keeps "epoch", so its recorded results keep their identity.
    attack_evaluate: str = "epoch"


# The families a worst case is made of (`attacks.FAMILIES` less the baseline and the oracle).
DEFENCE_FAMILIES = ("projection", "adversarial-training", "squeezing", "smoothing", "augmentation",
                    "purification", "early-stopping")

LADDER: PerLevel[Level] = PerLevel({
    # Every attack that applies, the oracles (upper bounds, skipped without the base) included.
    "paper": Level("paper", "paper", None, 5000, 500, 10, None, Panel()),
    # For 2 CPU cores: 3 epochs of the fast recipe; per family its strongest member (the
    # registry's prior, measured: docs/attacks.md) among those costing at most 3 standard
    # trainings here (D-VAE's ~60 and UEraser's 7.5 are `paper`'s or `--attacks`).
    "quick": Level("quick", "fast", 3, 2000, 100, 1, 10000, Panel(DEFENCE_FAMILIES, 1, 3.0),
                   separability_max_iter=1, separability_early_stop=True, attack_evaluate="last"),
    # Seconds, for tests and trying the tool out: three cheap families.
    "tiny": Level("tiny", "tiny", None, 300, 20, 1, 2000, Panel(("projection", "squeezing", "smoothing"), 1, 1.1),
                  separability_max_iter=1, separability_early_stop=True, attack_evaluate="last"),
})


def level(name: str | Level) -> Level:
    """The rung `name` (a `Level` passes through), or a one-line error naming the known ones."""
    if isinstance(name, Level):
        return name
    return lookup(LADDER, name, "level")


def next_level(name: str) -> str | None:
    """The rung above `name` (where a protection that did not take effect should be judged
    again), or None at the top."""
    i = LEVELS.index(check_level(name))
    return LEVELS[i + 1] if i + 1 < len(LEVELS) else None


@dataclass(frozen=True)
class AttackRow:
    """An attack's row of the table: `recipe`, the recipe preset it trains with at a level instead
    of the level's (adversarial training at `paper`: the 100-epoch "adv"); `params`, the
    `--param` strings it takes at a level unless given (`tiny` is what the tests run)."""

    recipe: PerLevel[str | None] = field(default_factory=lambda: PerLevel(default=None))
    params: PerLevel[dict[str, str]] = field(default_factory=lambda: PerLevel(default={}))


ATTACK_ROWS: dict[str, AttackRow] = {}


def register_attack_row(name: str, row: AttackRow) -> None:
    """Put attack `name`'s row in the table (the attack registry does, for every attack)."""
    ATTACK_ROWS[name] = row


def attack_row(name: str) -> AttackRow:
    """Attack `name`'s row, or a one-line error naming the known attacks."""
    return lookup(ATTACK_ROWS, name, "attack")


def recipe_for(level_name: str | Level | None = None, *, preset: str | None = None, attack: str | None = None,
               own: str | None = None, epochs: int | None = None, batch_size: int | None = None,
               lr: float | None = None) -> Recipe:
    """The recipe of a training at ladder level `level_name` (or of the named `preset`).

    `attack`: an attack whose row names its own preset for this level takes that preset, and
    then the level's epochs do not apply to it; so does `own`, a preset a method names itself
    (EntF's adversarially trained reference model at `paper`). An explicit `epochs` applies to
    every recipe. A step schedule keeps its milestones at the same fractions of the run. An
    attack's recipe evaluates the clean test set as the level's `attack_evaluate` says (the
    standard and clean trainings keep every epoch's figure: DFR's figure and the reproduced
    Fig. 2 draw that curve).
    """
    if (level_name is None) == (preset is None):
        raise UnlearnableError("recipe_for: give a ladder level or a recipe preset, not both")
    if epochs is not None and epochs < 1:
        raise UnlearnableError(f"--epochs must be at least 1, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise UnlearnableError(f"--batch-size must be at least 1, got {batch_size}")
    if lr is not None and not lr > 0:
        raise UnlearnableError(f"--lr must be positive, got {lr}")
    if preset is not None:
        r = get_recipe(preset)
    else:
        lv = level(level_name)
        if attack is not None:
            own = own or attack_row(attack).recipe[lv.name]
        r = get_recipe(own or lv.recipe)
        if epochs is None and own is None:
            epochs = lv.epochs
        if attack is not None and attack != "none":
            r = r.replace(evaluate=lv.attack_evaluate)
    if epochs is not None:
        r = r.with_epochs(epochs)
    kw: dict[str, Any] = {}
    if batch_size is not None:
        kw["batch_size"] = batch_size
    if lr is not None:
        kw["lr"] = lr
    return r.replace(**kw) if kw else r
