"""COIN: train through random bilinear-interpolation corruption (Wang et al., AAAI 2025).

Aimed at convolution-based protections (CUDA and its kin), which survive JPEG and adversarial
training: resampling every pixel at a small random offset, a new field every epoch, breaks the
class-wise filters' exact pixel alignment while keeping the image. The corruption itself is the
batched `train.augment.batch_coin` (recipes name it `coin-s1` .. `coin-s7`).

    unlearnable attack coin runs/cuda --recipe fast --out runs/cuda-coin

Faithful to wxldragon/COIN's `train.py`: alpha from its severity list (default severity 4, alpha
2), offsets U(-alpha, alpha) per pixel shared by the channels, linear interpolation wrapping
as scipy's mode "wrap", after crop and flip, on the fly, training images only, uint8 truncation.
What differs, by design: the training recipe is the level's (as for every attack here), not the
original's ResNet-18 at lr 0.1 for 80 epochs without decay or schedule, so COIN is compared
with the other attacks at one budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.params import to_dict
from ..train.augment import COIN_ALPHAS
from .base import AttackContext, register_attack, train_and_evaluate


@dataclass
class CoinParams:
    """Parameters of the `coin` attack: the original's severity (1..7 picks alpha from 0.8 .. 3.2
    pixels; the default 4 is its alpha 2.0)."""

    severity: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.severity <= len(COIN_ALPHAS):
            raise ValueError(f"severity must be in 1..{len(COIN_ALPHAS)}, got {self.severity}")

    @property
    def alpha(self) -> float:
        """The largest offset, in pixels, along each axis."""
        return COIN_ALPHAS[self.severity - 1]


@register_attack("coin", "COIN: train through random bilinear-interpolation corruption (alpha 2 px)",
                 "Wang et al., AAAI 2025, https://arxiv.org/abs/2311.18403", params_cls=CoinParams,
                 # One resampling per batch: a gather and a few products, small beside a training step.
                 cost=1.1, prior=0.6, family="purification", order=74)
def coin_attack(ctx: AttackContext, p: CoinParams) -> dict[str, Any]:
    """Train through COIN's corruption: every training image resampled at random per-pixel offsets each epoch.

    Paper: Wang et al., "Corrupting Convolution-based Unlearnable Datasets with Pixel-based Image
        Transformations" (COIN), AAAI 2025, https://arxiv.org/abs/2311.18403; code wxldragon/COIN.
    Threat model: only the protected training set, trained through a random corruption; test inputs
        untouched (as the original).
    Args:
        severity (4): 1..7, alpha = 0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2 pixels (the original's list)
    Shapes: ctx.train images uint8 (N, H, W, C) with labels int64 (N,), corrupted per batch after crop
        and flip (float NCHW in [0, 1], same shape, on grey levels); returns a dict with test_accuracy
        (fraction, clean test set), test_loss, train_accuracy, seconds_train, attack_params and alpha.
    Example:
        unlearnable attack coin runs/cuda --recipe fast --out runs/cuda-coin
    """
    recipe = ctx.recipe.replace(augment=tuple(ctx.recipe.augment) + (f"coin-s{p.severity}",))
    _, out = train_and_evaluate(ctx, recipe=recipe)
    out["attack_params"] = to_dict(p)
    out["alpha"] = p.alpha
    return out
