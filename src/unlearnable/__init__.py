"""unlearnable: does an unlearnable (protected) image dataset really protect?

Make protected datasets, import the published ones, audit what a network still learns from
them, and attack them. Implements Sandoval-Segura et al., "What Can We Learn from Unlearnable
Datasets?" (NeurIPS 2023, https://arxiv.org/abs/2305.19254).

    import unlearnable as ul
    ul.poison_dataset("regions", "fashion-mnist", "runs/regions", seed=0)
    report = ul.run_audit("runs/regions", "runs/regions-audit", ul.AuditConfig(level="quick"))
    print(report["verdict"]["overall"])
"""

from .analyses import dfr_curve, separability_of
from .attacks import ATTACKS, AttackContext, register_attack
from .auditor import AUDITS, AuditConfig, register_step, run_audit
from .core.errors import DataError, UnlearnableError
from .core.version import __version__
from .data import DATASETS, ImageSet, load_base, load_data, load_dataset_dir, save_dataset, to_uint8
from .imports import IMPORTERS, export_dataset, import_dataset
from .kinds import finetune_curve, run_all, run_attack
from .ladder import LEVELS, recipe_for
from .models import MODELS, Classifier, arch_signature, build_model, model_signature, register_model
from .poisons import POISONS, PoisonContext, make_poison, poison_dataset
from .reproduce import TABLES, ResultStore, build_grid, run_grid
from .runner import JOBS, register_job, run_jobs
from .train import RECIPES, Recipe, evaluate, fit, train_data, train_on
from .train.pgd import pgd

__all__ = [
    "__version__", "DataError", "UnlearnableError",
    "ATTACKS", "AttackContext", "pgd", "register_attack", "run_attack", "run_all",
    "AuditConfig", "run_audit", "AUDITS", "dfr_curve", "finetune_curve", "register_step", "separability_of",
    "LEVELS", "recipe_for", "JOBS", "register_job", "run_jobs",
    "DATASETS", "ImageSet", "load_base", "load_data", "load_dataset_dir", "save_dataset", "to_uint8",
    "IMPORTERS", "export_dataset", "import_dataset",
    "MODELS", "Classifier", "arch_signature", "build_model", "model_signature", "register_model",
    "POISONS", "PoisonContext", "make_poison", "poison_dataset",
    "TABLES", "ResultStore", "build_grid", "run_grid",
    "RECIPES", "Recipe", "evaluate", "fit", "train_data", "train_on",
]
