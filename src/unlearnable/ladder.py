"""The compute ladder: `tiny | quick | paper`, and the one function that turns a level (plus
overrides such as `--epochs`) into a training recipe.

    from unlearnable.ladder import level, recipe_for
    level("quick").dfr_n                              # 2000
    recipe_for("paper", attack="adv-train", epochs=2)  # the adv recipe, 2 epochs, milestones rescaled
    recipe_for(preset="released", epochs=10)           # a named recipe preset, rescaled the same way

Every orchestrator asks here: the audit, the reproduction grids, the CLI's `--recipe/--epochs`
and the crafting of model-based poisons (`PoisonContext.level`). `paper` is the paper's protocol
(section 4.2 and App. A); `quick` is sized for 2 CPU cores; `tiny` for tests and trying things.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .core.errors import UnlearnableError
from .core.registry import lookup
from .train.recipe import Recipe, get_recipe

LEVELS = ("tiny", "quick", "paper")


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
    attacks: tuple[str, ...]  # the audit's default attacks
    # Evaluations per L-BFGS step and early stop: the released script's 20 and none at `paper`.
    separability_max_iter: int = 20
    separability_early_stop: bool = False
    # When an attack's training measures the clean test set (`Recipe.evaluate`): it reports the
    # last epoch's figure only. `paper` keeps "epoch", so its recorded results keep their identity.
    attack_evaluate: str = "epoch"


LADDER: dict[str, Level] = {
    # ortho-proj-oracle: the learned projection's upper bound beside it (skipped without the base).
    "paper": Level("paper", "paper", None, 5000, 500, 10, None,
                   ("adv-train", "ortho-proj", "ortho-proj-oracle", "mean-sub", "jpeg", "bit-depth", "grayscale")),
    # For 2 CPU cores: 3 epochs of the fast recipe. The attacks are the paper's Table 3 columns,
    # which between them break every poison of that table except OPS+EM; the squeezing defences
    # and class-mean subtraction (one training each) are `paper`'s or `--attacks` (issue 21:
    # docs/benchmarks.md, audit cost).
    "quick": Level("quick", "fast", 3, 2000, 100, 1, 10000, ("ortho-proj", "adv-train"),
                   separability_max_iter=1, separability_early_stop=True, attack_evaluate="last"),
    # Seconds, for tests and trying the tool out.
    "tiny": Level("tiny", "tiny", None, 300, 20, 1, 2000, ("ortho-proj", "mean-sub", "jpeg"),
                  separability_max_iter=1, separability_early_stop=True, attack_evaluate="last"),
}


def level(name: str) -> Level:
    return lookup(LADDER, name, "level")


def recipe_for(level_name: str | None = None, *, preset: str | None = None, attack: str | None = None,
               epochs: int | None = None, batch_size: int | None = None, lr: float | None = None) -> Recipe:
    """The recipe of a training at ladder level `level_name` (or of the named `preset`).

    `attack`: an attack whose registry entry names its own preset for this level (adversarial
    training at `paper` trains 100 epochs with steps at 75 and 90) takes that preset, and then the
    level's epochs do not apply to it; an explicit `epochs` applies to every recipe. A step
    schedule keeps its milestones at the same fractions of the run. An attack's recipe evaluates
    the clean test set as the level's `attack_evaluate` says (the standard and clean trainings
    keep every epoch's figure: DFR's figure and the reproduced Fig. 2 draw that curve).
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
        own = _attack_preset(attack, lv.name)
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


def _attack_preset(attack: str | None, level_name: str) -> str | None:
    if attack is None:
        return None
    from .attacks import get_attack

    return get_attack(attack).recipes.get(level_name)
