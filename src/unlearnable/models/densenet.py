"""CIFAR-style DenseNet-121, the released code's `densenet121`.

Huang et al., "Densely Connected Convolutional Networks" (CVPR 2017, arXiv 1608.06993), DenseNet-BC
in the CIFAR form the paper's released `utils_models.py` builds (`DenseNet121(num_classes)`, the
common pytorch-cifar definition): a 3x3 stride-1 stem to 2k = 64 channels (no 7x7/2 stem or
max-pool), dense blocks of [6, 12, 24, 16] bottleneck layers with growth rate k = 32, each
BN-ReLU-1x1 conv (4k) - BN-ReLU-3x3 conv (k) whose output is concatenated in front of its input,
transitions BN-ReLU-1x1 conv (compression 0.5) - 2x2 average pool, then BN-ReLU and a global
average pool -> 1024-d features, linear head. For 3x32x32 inputs and 10 classes it has 6,956,298
parameters (a 32x32 image goes 32-16-8-4 before the pool, as released).

    >>> model = build_model("densenet121", num_classes=10, in_channels=3, image_size=32)
    >>> model.features(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 1024])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import Classifier, register_model


class Bottleneck(nn.Module):
    """BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv to k; returns [new k channels, input]."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.body(x), x], 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv, then a 2x2 average pool when `pool` (dropped where the map is 1x1)."""

    def __init__(self, cin: int, cout: int, pool: bool):
        layers: list[nn.Module] = [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False)]
        super().__init__(*layers, *([nn.AvgPool2d(2)] if pool else []))


class DenseNet(Classifier):
    """DenseNet-BC of bottleneck layers.

    Args:
        num_classes: output classes (default 10).
        in_channels: image channels, 1 or 3 (default 3).
        image_size: (H, W) of the inputs (default (32, 32)); decides which transitions pool.
        blocks: bottleneck layers per dense block (default (6, 12, 24, 16) = DenseNet-121).
        growth: growth rate k (default 32).
        reduction: channel compression of each transition (default 0.5).
        mean, std: per-channel normalization applied inside the model (base-class defaults).
    Input (B, in_channels, H, W) in [0, 1]; `features` -> (B, feature_dim), 1024 for DenseNet-121.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: tuple[int, int] = (32, 32),
                 blocks: Sequence[int] = (6, 12, 24, 16), growth: int = 32, reduction: float = 0.5,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__(in_channels, mean, std)
        planes = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)]
        size = min(image_size)
        for i, n in enumerate(blocks):
            layers.append(nn.Sequential(*[Bottleneck(planes + j * growth, growth) for j in range(n)]))
            planes += n * growth
            if i < len(blocks) - 1:
                out = int(math.floor(planes * reduction))
                # A 28x28 map goes 28-14-7-3 like 32-16-8-4; an 8x8 one 8-4-2-1 and then keeps its
                # 1x1 map rather than pooling it to 0x0.
                layers.append(Transition(planes, out, pool=size >= 2))
                size = size // 2 if size >= 2 else size
                planes = out
        layers += [nn.BatchNorm2d(planes), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.feature_dim = planes
        self.head = nn.Linear(planes, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_model("densenet121")
def densenet121(**kw) -> DenseNet:
    """CIFAR-style DenseNet-121 (growth 32, blocks 6-12-24-16): 1024-d features."""
    return DenseNet(blocks=(6, 12, 24, 16), growth=32, **kw)
