"""unlearnable: does an unlearnable (protected) image dataset really protect?

Make protected datasets, import the published ones, audit what a network still learns from
them, and attack them. Implements Sandoval-Segura et al., "What Can We Learn from Unlearnable
Datasets?" (NeurIPS 2023, arXiv 2305.19254).
"""

__version__ = "0.1.0"

from ._io import DataError, UnlearnableError  # noqa: E402
from .data import (  # noqa: E402
    DATASETS, ImageSet, load_base, load_data, load_dataset_dir, save_dataset, to_uint8,
)
from .models import MODELS, Classifier, build_model  # noqa: E402
from .train import RECIPES, Recipe, evaluate, fit, train_data, train_on  # noqa: E402

__all__ = [
    "__version__", "DataError", "UnlearnableError",
    "DATASETS", "ImageSet", "load_base", "load_data", "load_dataset_dir", "save_dataset", "to_uint8",
    "MODELS", "Classifier", "build_model",
    "RECIPES", "Recipe", "evaluate", "fit", "train_data", "train_on",
]
