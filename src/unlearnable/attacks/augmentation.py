"""Augmentation defences: train through strong augmentation so the shortcut stops being one.

- `cutout` (DeVries & Taylor 2017, https://arxiv.org/abs/1708.04552): a square of half the image
  side zeroed at a random place.
- `mixup` (Zhang et al. ICLR 2018, https://arxiv.org/abs/1710.09412): convex mixes of pairs of
  images and labels, lambda ~ Beta(1, 1).
- `cutmix` (Yun et al. ICCV 2019, https://arxiv.org/abs/1905.04899): a box pasted from another
  image of the batch, labels mixed by its area (beta 1, p 0.5).
- `ueraser-lite`: after UEraser (Qin et al. 2023, https://arxiv.org/abs/2303.15127): plasma
  brightness/contrast, channel shuffle and a TrivialAugment-style op, with the loss taken on the
  worst of K augmented copies of each image (adversarial augmentation).

The augmentations themselves are pure batched functions in `unlearnable.train.augment` (recipes
name them); here they become attacks: training through them is the attacker's move.

    unlearnable attack ueraser-lite runs/ops --param repeats=5 --out runs/ops-ueraser
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.params import to_dict
from ..train.augment import ueraser_augment
from ..train.pgd import soft_cross_entropy
from .base import AttackContext, NoParams, register_attack, train_and_evaluate


@dataclass
class UEraserParams:
    """Parameters of the `ueraser-lite` attack: how many augmented copies the worst-of-K loss takes.

    The default K = 5 is UEraser's (Qin et al. 2023), as APBench runs it (`ueraser.py`).
    """

    repeats: int = 5  # K augmented copies per image; the loss is the worst of them

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError("repeats must be >= 1")


def worst_of_k_loss(repeats: int):
    """A `BatchLoss`: per image, the highest loss over `repeats` augmented copies."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        xs = torch.cat([ueraser_augment(x, gen) for _ in range(repeats)])
        logits = model(xs)
        ys = torch.cat([y] * repeats)
        per = soft_cross_entropy(logits, ys, reduction="none")
        worst = per.view(repeats, len(x)).max(0).values
        return worst.mean(), logits[: len(x)]
    return loss


def _augmentation_attack(name: str):
    """An attack that trains with the recipe's augmentations plus `name` (cutout, cutmix or mixup)."""

    def attack(ctx: AttackContext, params: NoParams) -> dict[str, Any]:
        """Train through the recipe's augmentations plus the factory's `name` (cutout, cutmix or mixup).

        Paper: cutout: DeVries & Taylor 2017, https://arxiv.org/abs/1708.04552; cutmix: Yun et al., ICCV 2019,
            https://arxiv.org/abs/1905.04899; mixup: Zhang et al., ICLR 2018, https://arxiv.org/abs/1710.09412.
        Threat model: only the protected training set, trained through one more augmentation; test inputs
            untouched.
        Args: none (`NoParams`); the augmentation's own settings are fixed: cutout zeroes a square of half the
            side, cutmix uses beta 1 and p 0.5, mixup lambda ~ Beta(1, 1).
        Shapes: ctx.train images uint8 (N, H, W, C) with labels int64 (N,), augmented per batch while training
            (cutmix and mixup mix the labels into soft ones); returns a dict with test_accuracy (fraction,
            clean test set), test_loss, train_accuracy and seconds_train.
        Example:
            unlearnable attack cutout runs/lsp --recipe fast --out runs/lsp-cutout
            unlearnable attack cutmix runs/lsp --recipe fast --out runs/lsp-cutmix
            unlearnable attack mixup runs/lsp --recipe fast --out runs/lsp-mixup
        """
        recipe = ctx.recipe.replace(augment=tuple(ctx.recipe.augment) + (name,))
        return train_and_evaluate(ctx, recipe=recipe)[1]
    return attack


for _order, _name, _prior, _summary, _paper in (
    (70, "cutout", 0.3, "Cutout augmentation (a square of half the side zeroed)",
     "DeVries & Taylor 2017, https://arxiv.org/abs/1708.04552"),
    (71, "cutmix", 0.4, "CutMix augmentation (beta 1, p 0.5)", "Yun et al. ICCV 2019, https://arxiv.org/abs/1905.04899"),
    (72, "mixup", 0.3, "MixUp augmentation (alpha 1)", "Zhang et al. ICLR 2018, https://arxiv.org/abs/1710.09412"),
):
    register_attack(_name, _summary, _paper, prior=_prior, family="augmentation",
                    order=_order)(_augmentation_attack(_name))


@register_attack("ueraser-lite", "plasma, channel shuffle and TrivialAugment, loss on the worst of K copies",
                 "after Qin et al. 2023, https://arxiv.org/abs/2303.15127", params_cls=UEraserParams,
                 # K augmented copies per step: about K forward and backward passes.
                 cost=lambda p: p.repeats * 1.5, prior=0.5, family="augmentation", order=80)
def ueraser_attack(ctx: AttackContext, p: UEraserParams) -> dict[str, Any]:
    """Train through plasma, channel shuffle and TrivialAugment, on the worst of K augmented copies of each image.

    Paper: after UEraser, Qin et al. 2023, https://arxiv.org/abs/2303.15127 (a dependency-free approximation,
        not comparable with APBench's run: that is the `ueraser` attack).
    Threat model: only the protected training set, trained through adversarial augmentation; test inputs
        untouched.
    Args:
        repeats (5): K augmented copies per image; the loss is the worst of them
    Shapes: ctx.train images uint8 (N, H, W, C) with labels int64 (N,), augmented K times per batch while
        training; returns a dict with test_accuracy (fraction, clean test set), test_loss, train_accuracy,
        seconds_train and attack_params.
    Example:
        unlearnable attack ueraser-lite runs/lsp --recipe fast --out runs/lsp-ueraser-lite
    """
    _, out = train_and_evaluate(ctx, batch_loss=worst_of_k_loss(p.repeats))
    out["attack_params"] = to_dict(p)
    return out
