"""Augmentation defences: train through strong augmentation so the shortcut stops being one.

- `cutout` (DeVries & Taylor 2017, https://arxiv.org/abs/1708.04552): a square of half the image
  side zeroed at a random place.
- `mixup` (Zhang et al. ICLR 2018, https://arxiv.org/abs/1710.09412): convex mixes of pairs of
  images and labels, lambda ~ Beta(1, 1).
- `cutmix` (Yun et al. ICCV 2019) is registered with the engine's augmentations.
- `ueraser-lite`: after UEraser (Qin et al. 2023, https://arxiv.org/abs/2303.15127): plasma
  brightness/contrast, channel shuffle and a TrivialAugment-style op, with the loss taken on the
  worst of K augmented copies of each image (adversarial augmentation).

Every augmentation here is a pure batched function (x, gen) -> x on x's device; the random draws
come from the engine's per-epoch CPU generator, so runs are seeded and resume exactly.

    unlearnable attack ueraser-lite runs/ops --param repeats=5 --out runs/ops-ueraser
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._io import UnlearnableError
from .._params import from_params, to_dict
from ..train.augment import register_augmentation
from .base import AttackContext, register_attack, train_and_evaluate


def _u(shape: tuple[int, ...], gen: torch.Generator, device: torch.device, lo: float = 0.0,
       hi: float = 1.0) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * (hi - lo) + lo).to(device)


@register_augmentation("cutout")
def batch_cutout(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Zero a square of side H/2 centred at a uniform position (clipped at the borders)."""
    b, _, h, w = x.shape
    size = max(1, h // 2)
    cy = torch.randint(0, h, (b,), generator=gen).to(x.device)
    cx = torch.randint(0, w, (b,), generator=gen).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys - cy[:, None, None]).abs() <= size // 2) & ((xs - cx[:, None, None]).abs() <= size // 2)
    return x * (~inside)[:, None].to(x.dtype)


@register_augmentation("mixup", with_labels=True)
def batch_mixup(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each image with a partner from the same batch; Beta(1, 1) is uniform."""
    b = len(x)
    lam = _u((b,), gen, x.device)
    perm = torch.randperm(b, generator=gen).to(x.device)
    xm = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm]
    ym = lam.view(-1, 1) * y + (1 - lam.view(-1, 1)) * y[perm]
    return xm, ym


def plasma(b: int, h: int, w: int, gen: torch.Generator, device: torch.device,
           roughness: torch.Tensor) -> torch.Tensor:
    """Fractal noise in [0, 1] (b, 1, h, w): octaves of bilinearly upsampled random grids whose
    amplitude falls by `roughness` (per sample) each octave, like diamond-square plasma."""
    field = torch.zeros(b, 1, h, w, device=device)
    amp = torch.ones(b, 1, 1, 1, device=device)
    total = torch.zeros_like(amp)
    for octave in range(max(1, int(math.log2(max(h, w))))):
        n = 2 ** (octave + 1)
        grid = torch.rand(b, 1, n, n, generator=gen).to(device)
        field += amp * F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)
        total += amp
        amp = amp * roughness.view(-1, 1, 1, 1)
    field = field / total
    lo = field.amin((2, 3), keepdim=True)
    hi = field.amax((2, 3), keepdim=True)
    return (field - lo) / (hi - lo).clamp_min(1e-6)


@register_augmentation("plasma")
def batch_plasma(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Plasma brightness then plasma contrast, each on half the batch."""
    b, c, h, w = x.shape
    rough = _u((b,), gen, x.device, 0.1, 0.7)
    field = plasma(b, h, w, gen, x.device, rough)
    use_b = (_u((b,), gen, x.device) < 0.5).view(-1, 1, 1, 1)
    x = torch.where(use_b, x + (field - 0.5) * _u((b, 1, 1, 1), gen, x.device, 0.0, 1.0), x)
    field2 = plasma(b, h, w, gen, x.device, rough)
    use_c = (_u((b,), gen, x.device) < 0.5).view(-1, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = torch.where(use_c, (x - mean) * (0.5 + field2) + mean, x)
    return x.clamp(0, 1)


@register_augmentation("channel-shuffle")
def batch_channel_shuffle(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random permutation of the channels per image, for half the batch (no-op on 1 channel)."""
    b, c = x.shape[:2]
    if c == 1:
        return x
    perm = torch.rand(b, c, generator=gen).argsort(1).to(x.device)
    keep = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    perm = torch.where(keep[:, None], torch.arange(c, device=x.device).expand(b, c), perm)
    return x.gather(1, perm[:, :, None, None].expand_as(x))


# TrivialAugment (Mueller & Hutter ICCV 2021): one op per image with a uniform magnitude.
_TRIVIAL_OPS = ("identity", "rotate", "shear", "translate", "brightness", "contrast",
                "solarize", "posterize", "autocontrast", "sharpness")


@register_augmentation("trivial")
def batch_trivial_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b, c, h, w = x.shape
    dev = x.device
    op = torch.randint(0, len(_TRIVIAL_OPS), (b,), generator=gen).to(dev)
    mag = _u((b,), gen, dev)
    sign = torch.where(_u((b,), gen, dev) < 0.5, -1.0, 1.0)
    # Geometric ops: one affine grid for the whole batch (identity rows for the other ops).
    angle = torch.where(op == 1, sign * mag * math.radians(30), torch.zeros_like(mag))
    shear = torch.where(op == 2, sign * mag * 0.3, torch.zeros_like(mag))
    shift = torch.where(op == 3, sign * mag * 0.3 * 2, torch.zeros_like(mag))  # grid units
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin + shear, shift], 1),
                         torch.stack([sin, cos, torch.zeros_like(mag)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = mag.view(-1, 1, 1, 1)
    s = sign.view(-1, 1, 1, 1)
    opv = op.view(-1, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    levels = 2 ** (8 - (m * 4).round())  # posterize to 4..8 bits
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    x = torch.where(opv == 4, x + s * m * 0.9 * 0.5, x)
    x = torch.where(opv == 5, (x - mean) * (1 + s * m * 0.9) + mean, x)
    x = torch.where(opv == 6, torch.where(x >= 1 - m, 1 - x, x), x)
    x = torch.where(opv == 7, torch.floor(x * 255 / levels) * levels / 255, x)
    x = torch.where(opv == 8, (x - lo) / (hi - lo).clamp_min(1e-6), x)
    x = torch.where(opv == 9, x + s * m * (x - blur), x)
    return x.clamp(0, 1)


def ueraser_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return batch_trivial_augment(batch_channel_shuffle(batch_plasma(x, gen), gen), gen)


@dataclass
class UEraserParams:
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
        if ys.dtype == torch.int64:
            per = F.cross_entropy(logits, ys, reduction="none")
        else:
            per = -(ys * F.log_softmax(logits, 1)).sum(1)
        worst = per.view(repeats, len(x)).max(0).values
        return worst.mean(), logits[: len(x)]
    return loss


def _augmentation_attack(name: str):
    """An attack that trains with the recipe's augmentations plus `name`."""

    def attack(ctx: AttackContext, params: dict[str, str]) -> dict[str, Any]:
        if params:
            raise UnlearnableError(f"attack {name!r} takes no parameters, got {sorted(params)}")
        recipe = ctx.recipe.replace(augment=tuple(ctx.recipe.augment) + (name,))
        return train_and_evaluate(ctx, recipe=recipe)[1]
    return attack


for _name, _summary, _paper in (
    ("cutout", "Cutout augmentation (a square of half the side zeroed)",
     "DeVries & Taylor 2017, https://arxiv.org/abs/1708.04552"),
    ("cutmix", "CutMix augmentation (beta 1, p 0.5)", "Yun et al. ICCV 2019, https://arxiv.org/abs/1905.04899"),
    ("mixup", "MixUp augmentation (alpha 1)", "Zhang et al. ICLR 2018, https://arxiv.org/abs/1710.09412"),
):
    register_attack(_name, _summary, _paper)(_augmentation_attack(_name))


@register_attack("ueraser-lite", "plasma, channel shuffle and TrivialAugment, loss on the worst of K copies",
                 "after Qin et al. 2023, https://arxiv.org/abs/2303.15127")
def ueraser_attack(ctx: AttackContext, params: dict[str, str]) -> dict[str, Any]:
    p = from_params(UEraserParams, params)
    _, out = train_and_evaluate(ctx, batch_loss=worst_of_k_loss(p.repeats))
    out["attack_params"] = to_dict(p)
    return out
