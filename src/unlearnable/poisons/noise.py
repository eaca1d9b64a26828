"""Class-wise noise without a model: Random Noise and Regions-p.

Both are the paper's class-wise baselines (Sandoval-Segura et al., NeurIPS 2023,
https://arxiv.org/abs/2305.19254, Tables 1-3): one fixed +-eps pattern per class, added to every
image of that class. They protect well against standard training (a network learns the pattern,
not the images) and are the easiest to break (orthogonal projection, adversarial training).

Threat model: the defender controls the training images, not the labels, the test set or the
learner; the bound is l_inf <= eps (8/255 by default), held on the stored uint8 images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.errors import UnlearnableError
from ..data.imageset import ImageSet
from .base import PoisonContext, PoisonOutput, check_bound, perturb_chunks, register_poison, upsample_grid

PAPER = "Sandoval-Segura et al., What Can We Learn from Unlearnable Datasets? NeurIPS 2023, " \
        "https://arxiv.org/abs/2305.19254"


def distinct_signs(k: int, shape: tuple[int, ...], g: torch.Generator) -> tuple[torch.Tensor, bool]:
    """(K, *shape) Bernoulli(0.5) signs in {-1, +1}, redrawn so no two classes share a pattern.

    Two classes with one pattern would be one shortcut for two labels. Regions-4 on grey images
    has only 2^4 = 16 patterns, so 10 classes would collide almost surely; the original's RGB
    (2^12) rarely did. With fewer patterns than classes, duplicates are unavoidable: the second
    value says whether all patterns are distinct.
    """
    signs = torch.randint(0, 2, (k, *shape), generator=g)
    bits = math.prod(shape)
    if bits < 63 and 2 ** bits < k:
        return signs.float().mul_(2).sub_(1), False
    seen: set[bytes] = set()
    for i in range(k):  # a loop over classes; expected redraws are few while 2^bits >= k
        while (key := signs[i].numpy().tobytes()) in seen:
            signs[i] = torch.randint(0, 2, shape, generator=g)
        seen.add(key)
    return signs.float().mul_(2).sub_(1), True


@dataclass
class RandomNoiseParams:
    """Parameters of `random-noise`: the pattern's l_inf size; the default is the paper's (8/255)."""

    eps: float = 8 / 255  # l_inf bound; each value of the pattern is +eps or -eps

    def __post_init__(self) -> None:
        check_bound(self.eps)


@register_poison("random-noise", RandomNoiseParams, "class-wise",
                 "class-wise i.i.d. Bernoulli(0.5) per pixel and channel, scaled to +-eps (8/255)",
                 f"{PAPER} (class-wise Random Noise baseline)", model_based=False)
def random_noise(base: ImageSet, params: RandomNoiseParams, ctx: PoisonContext) -> PoisonOutput:
    """Class-wise Random Noise: per class one pattern delta_k in {-eps, +eps}^(C x H x W).

    Paper: Sandoval-Segura et al., What Can We Learn from Unlearnable Datasets?, NeurIPS 2023,
        https://arxiv.org/abs/2305.19254 (the class-wise Random Noise baseline)
    Threat model: the defender (the data owner) adds its class's pattern to every training image,
        within l_inf <= eps (8/255) on the stored uint8 images; labels, test set and learner are
        out of its hands. No model; every draw comes from ctx.seed.
    Args:
        eps (8/255): l_inf bound; each value of a pattern is +eps or -eps (Bernoulli(0.5) signs,
            redrawn so that no two classes share a pattern)
    Shapes: base images uint8 (N, H, W, C), any size and class count; patterns (K, C, H, W);
        returns PoisonOutput with images uint8 (N, H, W, C) aligned with base and an info dict
        with norm ("linf"), eps and pattern_shape ([K, C, H, W]).
    Example:
        unlearnable poison random-noise --dataset fashion-mnist --out runs/random-noise --seed 0
    """
    c, h, w = base.chw
    g = ctx.generator()
    signs, _ = distinct_signs(base.num_classes, (c, h, w), g)
    patterns = signs * params.eps
    labels = torch.from_numpy(base.labels)
    images = perturb_chunks(base, lambda sl, x: patterns[labels[sl]], linf=params.eps)
    return PoisonOutput(images, {"norm": "linf", "eps": params.eps,
                                 "pattern_shape": [base.num_classes, c, h, w]})


@dataclass
class RegionsParams:
    """Parameters of `regions`: the number of regions and the l_inf size; the defaults are the
    paper's Regions-4 at 8/255."""

    p: int = 4  # number of regions: a sqrt(p) x sqrt(p) grid ("Regions-4"); 16 also common
    eps: float = 8 / 255

    def __post_init__(self) -> None:
        r = math.isqrt(self.p) if self.p > 0 else 0
        if self.p < 1 or r * r != self.p:
            raise ValueError(f"p must be a perfect square (1, 4, 9, 16, ...), got {self.p}")
        check_bound(self.eps)


@register_poison("regions", RegionsParams, "class-wise",
                 "class-wise sqrt(p) x sqrt(p) grid of regions, each a constant +-eps per channel (Regions-p)",
                 f"{PAPER} (Regions-4 baseline)", model_based=False)
def regions(base: ImageSet, params: RegionsParams, ctx: PoisonContext) -> PoisonOutput:
    """Regions-p: per class, p vectors of C signs (Bernoulli) scaled to +-eps, one per region.

    Paper: the Regions-4 baseline of Sandoval-Segura et al., NeurIPS 2023, https://arxiv.org/abs/2305.19254
    Threat model: as `random-noise`'s (a class pattern added within l_inf <= eps on the stored
        uint8 images, no model, every sign drawn from ctx.seed).
    Args:
        p (4): number of regions, a perfect square: the image is cut into a sqrt(p) x sqrt(p)
            grid of near-equal regions (exactly 16x16 patches for p=4 on 32x32; 14x14 on 28x28;
            sizes differ by at most a pixel when not divisible); 16 is also common
        eps (8/255): l_inf bound; each region is a constant +eps or -eps per channel
    Shapes: base images uint8 (N, H, W, C) of at least sqrt(p) x sqrt(p) pixels, any class count;
        signs (K, C, r, r), r = sqrt(p); returns PoisonOutput with images uint8 (N, H, W, C)
        aligned with base and an info dict with norm ("linf"), eps, grid ([r, r]),
        distinct_patterns (False when 2^(C*p) < K forced two classes to share one) and signs.
    Example:
        unlearnable poison regions --dataset fashion-mnist --out runs/regions --seed 0
    """
    c, h, w = base.chw
    r = math.isqrt(params.p)
    if r > min(h, w):
        raise UnlearnableError(f"regions: p={params.p} needs images of at least {r}x{r}, got {h}x{w}")
    g = ctx.generator()
    signs, distinct = distinct_signs(base.num_classes, (c, r, r), g)
    patterns = upsample_grid(signs * params.eps, (h, w))
    labels = torch.from_numpy(base.labels)
    images = perturb_chunks(base, lambda sl, x: patterns[labels[sl]], linf=params.eps)
    return PoisonOutput(images, {
        "norm": "linf", "eps": params.eps, "grid": [r, r], "distinct_patterns": distinct,
        # Small enough to keep: the whole class-wise pattern as signs per (class, channel, region).
        "signs": signs.to(torch.int8).tolist(),
    })
