"""What an audit is asked to do (`AuditConfig`), and where the shared job cache is.

    AuditConfig(level="quick", attacks=("ortho-proj", "adv-train"), epochs=9)

The recipe every training of the audit uses is the ladder's for the level (`recipe_for`),
adapted to the audited data's facts (no flip on digits): `record(row)` is what results.json
keeps, the recipes as they trained.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attacks import ATTACKS, panel
from ..core.errors import UnlearnableError
from ..core.files import refuse_dangling
from ..core.stats import check_seeds
from ..core.registry import lookup_all
from ..ladder import recipe_for
from ..train.recipe import Recipe
from .steps import Row
from .verdict import Thresholds


def cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The shared job cache: `cache`, else $UNLEARNABLE_CACHE, else ~/.cache/unlearnable. One
    that cannot be a directory (a file, a link to nothing) is a one-line error naming where the
    path came from."""
    env = os.environ.get("UNLEARNABLE_CACHE")
    if cache:
        path, source = Path(cache), "--cache"
    elif env:
        path, source = Path(env), "UNLEARNABLE_CACHE"
    else:
        path, source = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unlearnable", \
            "the default cache (set UNLEARNABLE_CACHE or --cache)"
    refuse_dangling(path, source)
    if path.exists() and not path.is_dir():
        raise UnlearnableError(f"{path}: the shared cache ({source}) is not a directory; name a directory")
    return path


@dataclass
class AuditConfig:
    """The audit's settings: architecture, ladder level, seed, `epochs` (overrides the level's for
    every training, attacks included), `attacks` (overrides the level's panel, and all of them
    run; the panel stops at its first break unless `exhaustive`), the verdict's
    thresholds, the device, and how DFR fits its head (`dfr_procedure`, `dfr_indices`: an .npy of
    indices into the clean training set, as the released files give them)."""

    arch: str = "convnet"
    level: str = "quick"  # tiny | quick | paper (unlearnable.ladder)
    seed: int = 0
    epochs: int | None = None
    attacks: tuple[str, ...] | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    device: str = "auto"
    dfr_procedure: str = "paper"  # paper | released (analyses/dfr.py)
    dfr_indices: str | None = None
    # The level's panel is tried one attack at a time, stopping at the first break, unless this
    # is set; attacks the user names (`attacks`) all run.
    exhaustive: bool = False
    # The decisive trainings (the clean reference, standard training, the attack whose figure
    # decided) rerun on this many seeds in all (seed, seed + 1, ...): their figures become means.
    seeds: int = 1

    def __post_init__(self) -> None:
        check_seeds(self.seeds)

    @property
    def sequential(self) -> bool:
        """Whether the audit stops at the first attack that breaks the protection."""
        return self.attacks is None and not self.exhaustive

    def recipe(self, attack: str | None = None) -> Recipe:
        """The ladder's recipe of this audit's trainings (or of `attack`'s) at its level and
        epochs, before the data's facts adapt it (`Row.recipe` is what trains)."""
        return recipe_for(self.level, attack=attack, epochs=self.epochs)

    def attack_list(self) -> tuple[str, ...]:
        """The attacks this audit runs (checked against the registry), without "none" (the
        protected training itself)."""
        names = self.attacks if self.attacks is not None else panel(self.level)
        lookup_all(ATTACKS, names, "attack")
        return tuple(a for a in names if a != "none")

    def record(self, row: Row) -> dict[str, Any]:
        """The settings as results.json keeps them: with the recipe, and each attack's own where it
        differs, as they train on the audited data (`Row.recipe`)."""
        d = dataclasses.asdict(self)
        base = row.recipe()
        d["recipe"] = base
        d["attacks"] = list(self.attack_list())
        d["attack_recipes"] = {a: r for a in self.attack_list() if (r := row.recipe(a)) != base}
        d["model_signature"] = row.model
        return d
