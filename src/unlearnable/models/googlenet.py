"""CIFAR-style GoogLeNet (Inception v1) with BatchNorm.

Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015, arXiv 1409.4842), in the CIFAR form
used across the poisoning literature: the ImageNet stem (7x7/2 conv, pools, 3x3 convs) becomes one
3x3 conv to 192 channels, then Inception 3a-3b, pool, 4a-4e, pool, 5a-5b with the paper's branch
widths, global average pool -> 1024-d features, linear head. Every conv is followed by BatchNorm
and ReLU, and the 5x5 branch is two stacked 3x3 convs (same receptive field, fewer weights).
Auxiliary classifiers are left out: they exist to help 22-layer ImageNet training without BN.

    >>> model = build_model("googlenet", num_classes=10, in_channels=3, image_size=32)
    >>> model.features(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 1024])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import Classifier, register_model


def _conv(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Inception(nn.Module):
    """Four parallel branches concatenated on channels: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | pool-1x1."""

    def __init__(self, cin: int, n1: int, n3_reduce: int, n3: int, n5_reduce: int, n5: int, pool_proj: int):
        super().__init__()
        self.b1 = nn.Sequential(*_conv(cin, n1, 1))
        self.b3 = nn.Sequential(*_conv(cin, n3_reduce, 1), *_conv(n3_reduce, n3, 3))
        self.b5 = nn.Sequential(*_conv(cin, n5_reduce, 1), *_conv(n5_reduce, n5, 3), *_conv(n5, n5, 3))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *_conv(cin, pool_proj, 1))
        self.out_channels = n1 + n3 + n5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


# (n1, n3_reduce, n3, n5_reduce, n5, pool_proj) of Table 1 of the GoogLeNet paper; "M" a 3x3/2 pool.
INCEPTION_V1: tuple[tuple[int, ...] | str, ...] = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",                   # 3a 3b
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",               # 4a-4e
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),                  # 5a 5b
)


class GoogLeNet(Classifier):
    """CIFAR-style GoogLeNet.

    Args:
        num_classes: output classes (default 10).
        in_channels: image channels, 1 or 3 (default 3).
        image_size: (H, W) of the inputs (default (32, 32)); decides which pools are kept.
        stem_width: channels of the 3x3 stem conv (default 192, the input width of Inception 3a).
        mean, std: per-channel normalization applied inside the model (base-class defaults).
    Input (B, in_channels, H, W) in [0, 1]; `features` -> (B, 1024).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: tuple[int, int] = (32, 32),
                 stem_width: int = 192, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__(in_channels, mean, std)
        layers: list[nn.Module] = _conv(in_channels, stem_width, 3)
        cin, size = stem_width, min(image_size)
        for spec in INCEPTION_V1:
            if spec == "M":
                # 32-16-8 on CIFAR; a 1x1 map is not pooled further.
                if size > 1:
                    layers.append(nn.MaxPool2d(3, stride=2, padding=1))
                    size = (size + 1) // 2
                continue
            block = Inception(cin, *spec)
            layers.append(block)
            cin = block.out_channels
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.feature_dim = cin
        self.head = nn.Linear(cin, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_model("googlenet")
def googlenet(**kw) -> GoogLeNet:
    """CIFAR-style GoogLeNet (Inception v1, BatchNorm): 1024-d features."""
    return GoogLeNet(**kw)
