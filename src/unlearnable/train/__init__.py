"""The training engine and run directories."""

from .augment import AUGMENTATIONS, LABEL_AUGMENTATIONS, batch_crop, batch_flip_lr, register_augmentation
from .engine import (
    RECIPES, FitResult, Recipe, checkpoint_paths, evaluate, fit, get_recipe, load_weights, pick_device,
)
from .run import RunSpec, as_tensors, load_run, spec_for, train_data, train_on

__all__ = [
    "AUGMENTATIONS", "LABEL_AUGMENTATIONS", "batch_crop", "batch_flip_lr", "register_augmentation",
    "RECIPES", "FitResult", "Recipe", "checkpoint_paths", "evaluate", "fit", "get_recipe",
    "load_weights", "pick_device", "RunSpec", "as_tensors", "load_run", "spec_for", "train_data",
    "train_on",
]
