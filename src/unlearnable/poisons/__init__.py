"""Poisons: make protected ("unlearnable") datasets. One registry, `POISONS`, name -> `PoisonInfo`.

    from unlearnable.poisons import make_poison, poison_dataset, POISONS
    protected = make_poison("regions", clean_train, {"p": "4"}, seed=0)
    poison_dataset("ar", "fashion-mnist", "data/fmnist-ar", seed=0)

Each module here registers its method: model-free ones (random-noise, regions, lsp, ops, ar,
cuda) and model-based ones (em, ops-em, tap, rem, ntga, hypo, entf), which declare
`model_based=True`. Every method runs at a rung of `unlearnable.ladder.LEVELS`
(`PoisonContext(level="tiny")` for tests): the level fills the parameters left unset.
"""

from . import ar, lsp, noise, ops  # noqa: F401  (each module registers its poison)
from . import em, ntga, ops_em, rem, tap  # noqa: F401  (model-based poisons)
from . import cuda, entf, hypo  # noqa: F401  (the field's other poisons: docs/poisons.md)
from .base import (
    POISONS, PoisonContext, PoisonInfo, PoisonOutput, apply_delta, get_poison, make_poison, perturb_chunks,
    poisoned_mask, register_poison,
)
from .make import default_work_dir, poison_dataset, stored_poisoned_mask

__all__ = [
    "POISONS", "PoisonContext", "PoisonInfo", "PoisonOutput", "apply_delta", "default_work_dir", "get_poison",
    "make_poison", "perturb_chunks", "poison_dataset", "poisoned_mask", "register_poison",
    "stored_poisoned_mask",
]
