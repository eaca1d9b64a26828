"""CUDA: convolution-based unlearnable datasets (Sadasivan et al., CVPR 2023).

"CUDA: Convolution-based Unlearnable Datasets", Vinu Sankar Sadasivan, Mahdi Soltanolkotabi,
Soheil Feizi, CVPR 2023, https://arxiv.org/abs/2303.04278 (code: vinusankars/Convolution-based-
Unlearnability, `final_filter_unlearnable.py`).

Threat model: the defender publishes its images blurred by a filter chosen per class; nothing
bounds x' - x in any l_p norm, so this is *not* an additive perturbation. Model-free.

What the released code does, and this module with it (facts, not code):
- per class, a k x k filter (k = 3) with entries uniform in [0, blur_parameter) (0.3), one entry
  at a uniform random position set to `center_parameter` (1.0); the same filter in every
  channel (a depthwise convolution), zero padding, no bias;
- each image is convolved with its class's filter and divided by its own maximum (over all
  channels), then scaled to 0..255, clipped and truncated to integers (`astype(uint8)`).
The filters are drawn from the seed (the original draws them from numpy's global generator).

Because x' is a transform of x, `info.additive` is False: the analyses of delta = x' - x
(separability of the perturbations, Orthogonal Projection's oracle) say they do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet
from .base import PoisonContext, PoisonOutput, register_poison

PAPER = ("Sadasivan et al., CUDA: Convolution-based Unlearnable Datasets, CVPR 2023, "
         "https://arxiv.org/abs/2303.04278")
CHUNK = 4096  # images per convolution: bounds the float copy of a large set


@dataclass
class CUDAParams:
    """Parameters of `cuda`: how the class filters are drawn; the defaults are the released code's
    (`final_filter_unlearnable.py`)."""

    blur_parameter: float = 0.3  # filter entries uniform in [0, blur_parameter)
    center_parameter: float = 1.0  # one entry per filter, at a random position, set to this
    center: bool = True  # False: no fixed entry (the original's center_parameter=None)
    kernel_size: int = 3  # the filters are kernel_size x kernel_size (odd, 1..15)

    def __post_init__(self) -> None:
        if not 0 < self.blur_parameter <= 10:
            raise ValueError(f"blur_parameter must be in (0, 10], got {self.blur_parameter}")
        if not 0 <= self.center_parameter <= 10:
            raise ValueError(f"center_parameter must be in [0, 10], got {self.center_parameter}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0 or self.kernel_size > 15:
            raise ValueError(f"kernel_size must be odd, 1..15, got {self.kernel_size}")


def class_filters(num_classes: int, params: CUDAParams, gen: torch.Generator) -> torch.Tensor:
    """(K, k, k) float64 filters: uniform entries, one set to `center_parameter` per class."""
    k = params.kernel_size
    w = torch.rand(num_classes, k, k, generator=gen, dtype=torch.float64) * params.blur_parameter
    if params.center:
        pos = torch.randint(0, k * k, (num_classes,), generator=gen)
        w.view(num_classes, -1)[torch.arange(num_classes), pos] = params.center_parameter
    return w


def convolve(images: np.ndarray, filters: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> uint8 NHWC: each image convolved with `filters[label]` (same filter in every
    channel, zero padding), divided by its maximum, scaled to 255 and truncated, as released."""
    n, h, w, c = images.shape
    k = filters.shape[-1]
    out = np.empty_like(images)
    lab = torch.from_numpy(labels)
    for s in range(0, n, CHUNK):
        x = torch.from_numpy(images[s:s + CHUNK]).permute(0, 3, 1, 2).double().div_(255)
        b = len(x)
        # One grouped convolution for the chunk: every (image, channel) plane is a group with
        # its class's filter.
        weight = filters[lab[s:s + b]].repeat_interleave(c, 0).unsqueeze(1)  # (b*c, 1, k, k)
        y = F.conv2d(x.reshape(1, b * c, h, w), weight, padding=k // 2, groups=b * c).view(b, c, h, w)
        peak = y.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)  # an all-black image stays black
        y = (y / peak * 255).clamp_(0, 255).floor_()
        out[s:s + b] = y.to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


@register_poison("cuda", CUDAParams, "class-wise",
                 "CUDA: each class's images convolved with its own random 3x3 blur filter (not additive)",
                 PAPER, model_based=False, additive=False)
def cuda(base: ImageSet, params: CUDAParams, ctx: PoisonContext) -> PoisonOutput:
    """Class-wise convolution (CUDA): each class's images blurred by that class's random filter.

    Paper: Sadasivan et al., CUDA: Convolution-based Unlearnable Datasets, CVPR 2023,
        https://arxiv.org/abs/2303.04278
    Threat model: the defender (the data owner) convolves each class's training images with that
        class's filter and renormalizes them (not additive: x' - x has no l_p bound); labels, test
        set and learner are out of its hands. No model; the filters are drawn from ctx.seed.
    Args:
        blur_parameter (0.3): filter entries uniform in [0, blur_parameter)
        center_parameter (1.0): one entry per filter, at a random position, set to this
        center (True): False = no fixed entry (the original's center_parameter=None)
        kernel_size (3): filters are kernel_size x kernel_size (odd, 1..15)
    Shapes: base images uint8 (N, H, W, C), any size and class count; filters (K, k, k), the same
        in every channel; returns PoisonOutput with images uint8 (N, H, W, C) aligned with base and
        an info dict with norm ("none"), additive (False), perturbation (the transform in words),
        filters and kernel_size.
    Example:
        unlearnable poison cuda --dataset fashion-mnist --out runs/cuda --seed 0
    """
    filters = class_filters(base.num_classes, params, ctx.generator())
    images = convolve(base.images, filters, base.labels)
    info = {
        "norm": "none", "additive": False,
        "perturbation": "convolution: x' = floor(255 * (f_y * x) / max(f_y * x)) with a "
                        "class-wise filter f_y; x' - x has no l_p bound",
        "filters": [[[round(float(v), 6) for v in row] for row in f] for f in filters],
        "kernel_size": params.kernel_size,
    }
    return PoisonOutput(images, info)
