"""Training: recipes, the loop, its files on disk, batched augmentation, PGD and the
adversarial-training losses, and run directories.

    recipe.py      Recipe, RECIPES, get_recipe
    loop.py        fit, evaluate, batches (the whole dataset as one tensor on the device)
    checkpoint.py  per-epoch weights, last.pt (resume), metrics.jsonl, save_state / load_state
    optim.py       make_optimizer: SGD or Adam without weight decay on BatchNorm and biases
    augment.py     batched augmentations (crop, flip, CutMix, ...) as pure functions
    pgd.py         pgd, fgsm_rs, adversarial_loss (PGD, FGSM-RS, Free), pgd_accuracy
    run.py         RunSpec, train_on, train_data, load_run: a training run directory
"""

from .augment import AUGMENTATIONS, LABEL_AUGMENTATIONS, batch_crop, batch_flip_lr, register_augmentation
from .checkpoint import checkpoint_paths, load_weights
from .loop import FitResult, evaluate, fit
from .recipe import RECIPES, Recipe, get_recipe
from .run import RunSpec, as_tensors, load_run, spec_for, train_data, train_on

__all__ = [
    "AUGMENTATIONS", "LABEL_AUGMENTATIONS", "batch_crop", "batch_flip_lr", "register_augmentation",
    "checkpoint_paths", "load_weights", "FitResult", "evaluate", "fit", "RECIPES", "Recipe", "get_recipe",
    "RunSpec", "as_tensors", "load_run", "spec_for", "train_data", "train_on",
]
