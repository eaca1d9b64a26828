"""Training recipes: one dataclass of hyperparameters, its named presets, and the rules that
adapt a recipe to a run's length and to its data.

    RECIPES["paper"]                       # the paper's section 4.2 recipe (40 epochs, SGD 0.9, ...)
    get_recipe("adv").with_epochs(20)      # milestones 75/90 of 100 become 15/18 of 20
    recipe.for_data(hflip=False, crop_padding=1)

Which recipe a training at a ladder level uses is the ladder's to say (`unlearnable.ladder`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from ..core.errors import UnlearnableError
from ..core.registry import lookup
from .optim import OPTIMIZERS

EVALUATE = ("epoch", "last")


@dataclass
class Recipe:
    """Hyperparameters of one training run. Defaults: the paper's section 4.2 recipe.

    The random crop (`crop_padding`) and flip come before the `augment` names unless `augment`
    names "crop" or "flip": then each runs at its place there, still as the recipe's fields and
    the data's facts allow (the released pipeline: rotate, shear-scale, jitter, crop, flip).
    `optimizer` "sgd" uses `momentum`/`nesterov`; "adam" uses torch's Adam with its default betas
    (0.9, 0.999) and `weight_decay` as an L2 term, as the released ViT training does.
    """

    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step | constant
    milestones: tuple[int, ...] = ()  # epochs at which "step" multiplies the lr by gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    crop_padding: int = 4  # 0 disables the random crop
    flip: bool = True
    augment: tuple[str, ...] = ()  # extra names from AUGMENTATIONS / LABEL_AUGMENTATIONS
    label_smoothing: float = 0.0
    eval_batch_size: int = 1000
    optimizer: str = "sgd"  # sgd | adam
    # When fit measures the clean test set: after every epoch ("epoch", the curve Fig. 2 and DFR
    # draw) or after the last one only ("last": what an attack reports; no effect on training).
    evaluate: str = "epoch"

    def __post_init__(self) -> None:
        # Every construction, replace() and from_dict() passes here, so the Python API refuses
        # what the CLI refuses: a batch size of 0 divides by zero, a nan lr trains a chance-level
        # model without an error, a negative epoch count trains nothing.
        def integer(v: object) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def finite(v: object) -> bool:
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

        rules = (
            ("epochs", integer(self.epochs) and self.epochs >= 1, "an integer >= 1"),
            ("batch_size", integer(self.batch_size) and self.batch_size >= 1, "an integer >= 1"),
            ("eval_batch_size", integer(self.eval_batch_size) and self.eval_batch_size >= 1, "an integer >= 1"),
            ("crop_padding", integer(self.crop_padding) and self.crop_padding >= 0, "an integer >= 0"),
            ("lr", finite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("momentum", finite(self.momentum) and 0 <= self.momentum < 1, "a finite number in [0, 1)"),
            ("weight_decay", finite(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0"),
            ("gamma", finite(self.gamma) and self.gamma > 0, "a finite number > 0"),
            ("warmup_epochs", finite(self.warmup_epochs) and self.warmup_epochs >= 0, "a finite number >= 0"),
            ("label_smoothing", finite(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             "a finite number in [0, 1)"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            ("evaluate", self.evaluate in EVALUATE, " or ".join(map(repr, EVALUATE))),
        )
        for name, ok, rule in rules:
            if not ok:
                raise UnlearnableError(f"recipe: {name} must be {rule}, got {getattr(self, name)!r}")

    def replace(self, **kw: Any) -> Recipe:
        return dataclasses.replace(self, **kw)

    def with_epochs(self, epochs: int) -> Recipe:
        """The same recipe over `epochs`; a step schedule keeps its milestones at the same
        fractions of the run (75 and 90 of 100 epochs become 15 and 18 of 20; at least 1)."""
        if epochs < 1:
            raise UnlearnableError(f"epochs must be at least 1, got {epochs}")
        if epochs == self.epochs:
            return self
        kw: dict[str, Any] = {"epochs": epochs}
        if self.milestones:
            kw["milestones"] = tuple(max(1, round(m * epochs / self.epochs)) for m in self.milestones)
        return self.replace(**kw)

    def for_data(self, hflip: bool, crop_padding: int) -> Recipe:
        """This recipe on images whose label survives a mirror only if `hflip` and a shift of at
        most `crop_padding` pixels (`unlearnable.data.facts_for`): what a run trains and records.
        Applying it twice changes nothing."""
        flip, padding = self.flip and hflip, min(self.crop_padding, crop_padding)
        if (flip, padding) == (self.flip, self.crop_padding):
            return self
        return self.replace(flip=flip, crop_padding=padding)

    def lr_at(self, t: float) -> float:
        """Learning rate at fractional epoch t (a pure function, so resume needs no scheduler)."""
        if self.warmup_epochs and t < self.warmup_epochs:
            return self.lr * t / self.warmup_epochs
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * min(t / max(self.epochs, 1), 1.0)))
        if self.schedule == "step":
            return self.lr * self.gamma ** sum(t >= m for m in self.milestones)
        if self.schedule == "constant":
            return self.lr
        raise UnlearnableError(f"unknown lr schedule {self.schedule!r} (cosine, step, constant)")

    def evaluates_after(self, epoch: int) -> bool:
        """Whether fit measures the test set after `epoch` (1-based)."""
        return self.evaluate == "epoch" or epoch >= self.epochs

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        d["augment"] = list(self.augment)
        # The default is left out so that every run, job key and audit recorded before the
        # option existed keeps its identity (from_dict fills it in again).
        if d["evaluate"] == "epoch":
            del d["evaluate"]
        if d["optimizer"] == "sgd":
            del d["optimizer"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        d = dict(d)
        d["milestones"] = tuple(d.get("milestones", ()))
        d["augment"] = tuple(d.get("augment", ()))
        return cls(**d)


# The released orthogonal_projection_step_2.py's training pipeline, in its order (torchvision's
# RandomRotation, RandomAffine, ColorJitter, RandomCrop, RandomHorizontalFlip; CutMix per batch).
RELEASED_AUGMENT = ("rotate", "shear-scale", "color-jitter-per-image", "crop", "flip", "cutmix")

RECIPES: dict[str, Recipe] = {
    # Section 4.2 / App. A.1: SGD 0.9, wd 5e-4, lr 0.1 cosine, batch 128, 40 epochs, crop + flip.
    "paper": Recipe(),
    # For 2 CPU cores: a few epochs with larger batches; what the `quick` level uses.
    "fast": Recipe(epochs=8, batch_size=256, lr=0.05, warmup_epochs=0.5),
    # For a few thousand small images (digits, subsets in tests): small batches, few epochs.
    "tiny": Recipe(epochs=4, batch_size=64, lr=0.05, warmup_epochs=0.5),
    # The released orthogonal-projection step 2: 50 epochs, wd 1e-4, lr x0.1 at 25 and 37, its
    # augmentation pipeline in its order, then CutMix.
    "released": Recipe(epochs=50, weight_decay=1e-4, schedule="step", milestones=(25, 37),
                       augment=RELEASED_AUGMENT),
    # The same step for a ViT as released: Adam lr 1e-3, betas (0.9, 0.999), wd 5e-5, 5 warm-up
    # epochs, then cosine; batch 128, 50 epochs, the same augmentations (docs/models.md).
    "vit-released": Recipe(epochs=50, lr=1e-3, optimizer="adam", weight_decay=5e-5, warmup_epochs=5.0,
                           augment=RELEASED_AUGMENT),
    # Adversarial training baseline (section 4.4.2): 100 epochs, lr x0.1 at 75 and 90.
    "adv": Recipe(epochs=100, schedule="step", milestones=(75, 90)),
    # APBench's train.py (the `ueraser` attack at `paper`): 200 epochs,
    # MultiStepLR(milestones=[100, 200, 300], gamma=0.5).
    "apbench": Recipe(epochs=200, schedule="step", milestones=(100,), gamma=0.5),
}


def get_recipe(name: str) -> Recipe:
    """The registered recipe preset `name`, or a one-line error naming the known ones."""
    return lookup(RECIPES, name, "recipe")
