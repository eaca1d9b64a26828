"""Smoothing defences: blur the training images (and optionally the test images), then train.

Simple baselines in the spirit of image shortcut squeezing (Liu et al., ICML 2023,
https://arxiv.org/abs/2301.13838): a low-pass filter removes high-frequency perturbations.
- `gaussian-smooth`: APBench's `--gaussian` defence is torchvision's GaussianBlur(3, sigma=0.1)
  on every training image; those are the defaults. At sigma 0.1 the off-centre weights of a
  3x3 kernel are exp(-50) ~ 2e-22, so APBench's setting leaves uint8 images unchanged: pass
  `sigma=1` (or more) for a blur that does something. The result records `changed_fraction`.
- `median-smooth`: the median over a k x k window (k = 3), per channel.
Both pad by reflection (torchvision's GaussianBlur does) and round back to grey levels.

    unlearnable attack gaussian-smooth runs/lsp --param sigma=1 --out runs/lsp-gauss
    unlearnable attack median-smooth runs/lsp --param test=true --out runs/lsp-median

Each filter is a pure function uint8 NHWC -> uint8 NHWC of the same shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import UnlearnableError
from .base import AttackContext, register_attack, train_transformed

CHUNK = 4096  # images per filtering pass: bounds the float copy of a large set


def gaussian_kernel1d(kernel_size: int, sigma: float) -> torch.Tensor:
    """torchvision's 1-D Gaussian: exp(-x^2 / 2 sigma^2) at x = -(k-1)/2 .. (k-1)/2, summing to 1."""
    x = torch.linspace(-(kernel_size - 1) / 2, (kernel_size - 1) / 2, kernel_size, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _check_kernel(kernel_size: int, h: int, w: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise UnlearnableError(f"kernel_size must be odd and >= 1, got {kernel_size}")
    if kernel_size // 2 >= min(h, w):
        raise UnlearnableError(f"kernel_size {kernel_size} is too large for {h}x{w} images")


def _chunks(images: np.ndarray, fn) -> np.ndarray:
    out = np.empty_like(images)
    for s in range(0, len(images), CHUNK):
        x = torch.from_numpy(images[s:s + CHUNK]).permute(0, 3, 1, 2).double()
        out[s:s + CHUNK] = fn(x).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def gaussian_blur(images: np.ndarray, kernel_size: int = 3, sigma: float = 0.1) -> np.ndarray:
    """Separable Gaussian blur of every channel, reflect padding, rounded to grey levels."""
    _check_kernel(kernel_size, *images.shape[1:3])
    k = gaussian_kernel1d(kernel_size, sigma)
    r = kernel_size // 2

    def fn(x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = F.pad(x, (r, r, r, r), mode="reflect")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return _chunks(images, fn)


def median_filter(images: np.ndarray, kernel_size: int = 3) -> np.ndarray:
    """The median of each k x k window (reflect padding), per channel."""
    _check_kernel(kernel_size, *images.shape[1:3])
    r = kernel_size // 2

    def fn(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        xp = F.pad(x, (r, r, r, r), mode="reflect")
        win = xp.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)  # (n, c, h, w, k, k)
        return win.reshape(n, c, h, w, -1).median(dim=-1).values
    return _chunks(images, fn)


@dataclass
class GaussianSmoothParams:
    """Parameters of the `gaussian-smooth` attack: the blur's kernel and sigma, and whether test inputs
    are blurred too. The defaults are APBench's `--gaussian` defence: GaussianBlur(3, sigma=0.1)."""

    kernel_size: int = 3  # APBench: GaussianBlur(3, sigma=0.1)
    sigma: float = 0.1
    test: bool = False  # also blur the test images (the attacker controls its inference)

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {self.kernel_size}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0, got {self.sigma}")


@dataclass
class MedianSmoothParams:
    """Parameters of the `median-smooth` attack: the window's side and whether test inputs are filtered
    too. The defaults, a 3 x 3 window on the training images only, are this module's own."""

    kernel_size: int = 3
    test: bool = False

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {self.kernel_size}")


@register_attack("gaussian-smooth", "Gaussian blur of the training images (APBench: 3x3, sigma 0.1)",
                 "APBench (Qin et al. 2023), https://arxiv.org/abs/2305.00349",
                 params_cls=GaussianSmoothParams, prior=0.6, family="smoothing", order=55, transforms_test=True,
                 # In an audit's panel: a blur that changes the images (APBench's sigma 0.1 does not),
                 # with the attacker's own test inputs blurred too (docs/attacks.md: CUDA 38 -> 62.6 %).
                 presets={lv: {"sigma": "1", "test": "true"} for lv in ("tiny", "quick", "paper")})
def gaussian_smooth_attack(ctx: AttackContext, p: GaussianSmoothParams) -> dict[str, Any]:
    """Blur every training image with a Gaussian (and, with test=true, the test images), then train.

    Paper: APBench (Qin et al. 2023), https://arxiv.org/abs/2305.00349, its `--gaussian` defence; in the
        spirit of Liu et al., ICML 2023, https://arxiv.org/abs/2301.13838.
    Threat model: only the protected training set, blurred; with test=true it blurs its own test inputs too.
    Args:
        kernel_size (3): the kernel's side, odd
        sigma (0.1): the Gaussian's standard deviation in pixels (APBench's 0.1 leaves uint8 images unchanged)
        test (False): also blur the test images (the attacker controls its inference)
    Shapes: ctx.train images uint8 (N, H, W, C), blurred in float and rounded back to uint8 of the
        same shape; the result is `train_transformed`'s (see `jpeg`).
    Example:
        unlearnable attack gaussian-smooth runs/lsp --param sigma=1.0 --param test=true
    """
    return train_transformed(ctx, lambda im: gaussian_blur(im, p.kernel_size, p.sigma), p)


@register_attack("median-smooth", "median filter of the training images (3x3)",
                 "after Liu et al. ICML 2023, https://arxiv.org/abs/2301.13838",
                 params_cls=MedianSmoothParams, prior=0.4, family="smoothing", order=56, transforms_test=True,
                 presets={lv: {"test": "true"} for lv in ("tiny", "quick", "paper")})
def median_smooth_attack(ctx: AttackContext, p: MedianSmoothParams) -> dict[str, Any]:
    """Replace every training pixel by the median of its window (and, with test=true, the test images'), then train.

    Paper: after Liu et al., "Image Shortcut Squeezing", ICML 2023, https://arxiv.org/abs/2301.13838.
    Threat model: only the protected training set, filtered; with test=true it filters its own test inputs too.
    Args:
        kernel_size (3): the window's side, odd
        test (False): also filter the test images (the attacker controls its inference)
    Shapes: ctx.train images uint8 (N, H, W, C), filtered per channel (uint8, same shape); the
        result is `train_transformed`'s (see `jpeg`).
    Example:
        unlearnable attack median-smooth runs/regions --param kernel_size=5 --recipe fast
    """
    return train_transformed(ctx, lambda im: median_filter(im, p.kernel_size), p)
