"""unlearnable: does an unlearnable (protected) image dataset really protect?

Make protected datasets, import the published ones, audit what a network still learns from
them, and attack them. Implements Sandoval-Segura et al., "What Can We Learn from Unlearnable
Datasets?" (NeurIPS 2023, https://arxiv.org/abs/2305.19254).

    import unlearnable as ul
    ul.poison_dataset("regions", "fashion-mnist", "runs/regions", seed=0)
    report = ul.run_audit("runs/regions", "runs/regions-audit", ul.AuditConfig(level="quick"))
    print(report["verdict"]["overall"])
"""

from .core.errors import DataError, UnlearnableError  # noqa: E402
from .core.version import __version__  # noqa: E402
from .attacks import ATTACKS, AttackContext, register_attack, run_attack  # noqa: E402
from .auditor import AuditConfig, run_audit  # noqa: E402
from .analyses import AUDITS, dfr_curve, register_step, separability_of  # noqa: E402
from .data import (  # noqa: E402
    DATASETS, ImageSet, load_base, load_data, load_dataset_dir, save_dataset, to_uint8,
)
from .imports import IMPORTERS, export_dataset, import_dataset  # noqa: E402
from .models import MODELS, Classifier, arch_signature, build_model, model_signature, register_model  # noqa: E402
from .poisons import POISONS, PoisonContext, make_poison, poison_dataset  # noqa: E402
from .ladder import LEVELS, recipe_for  # noqa: E402
from .reproduce import TABLES, ResultStore, build_grid, run_grid  # noqa: E402
from .runner import JOBS, register_job, run_jobs  # noqa: E402
from .runner import kinds as _kinds  # noqa: E402,F401  (the built-in job kinds: JOBS is complete on import)
from .train import RECIPES, Recipe, evaluate, fit, train_data, train_on  # noqa: E402
from .train.pgd import pgd  # noqa: E402

__all__ = [
    "__version__", "DataError", "UnlearnableError",
    "ATTACKS", "AttackContext", "pgd", "register_attack", "run_attack",
    "AuditConfig", "run_audit", "AUDITS", "dfr_curve", "register_step", "separability_of",
    "LEVELS", "recipe_for", "JOBS", "register_job", "run_jobs",
    "DATASETS", "ImageSet", "load_base", "load_data", "load_dataset_dir", "save_dataset", "to_uint8",
    "IMPORTERS", "export_dataset", "import_dataset",
    "MODELS", "Classifier", "arch_signature", "build_model", "model_signature", "register_model",
    "POISONS", "PoisonContext", "make_poison", "poison_dataset",
    "TABLES", "ResultStore", "build_grid", "run_grid",
    "RECIPES", "Recipe", "evaluate", "fit", "train_data", "train_on",
]
