"""CIFAR-style ResNet-18, the paper's RN-18.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016, arXiv 1512.03385), in the
CIFAR form every unlearnable-examples paper trains: a 3x3 stride-1 stem with no max-pool (the
ImageNet 7x7/2 stem + pool would leave a 32x32 image 8x8 before the first block), BasicBlocks
[2, 2, 2, 2] of widths 64-128-256-512, global average pool -> 512-d features, linear head.
For 3x32x32 inputs and 10 classes it has 11,173,962 parameters.

    >>> model = build_model("resnet18", num_classes=10, in_channels=3, image_size=32)
    >>> model(torch.rand(4, 3, 32, 32)).shape
    torch.Size([4, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import Classifier, register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(Classifier):
    """CIFAR-style ResNet of BasicBlocks; `blocks` per stage, stage widths `widths`.

    Args:
        num_classes: output classes (default 10).
        in_channels: image channels, 1 or 3 (default 3).
        image_size: (H, W) of the inputs (default (32, 32)); only decides the strides.
        blocks: BasicBlocks per stage (default (2, 2, 2, 2) = ResNet-18).
        widths: channels per stage (default (64, 128, 256, 512)).
        mean, std: per-channel normalization applied inside the model (base-class defaults).
    Input (B, in_channels, H, W) in [0, 1]; `features` -> (B, widths[-1]).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: tuple[int, int] = (32, 32),
                 blocks: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__(in_channels, mean, std)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        cin, size = widths[0], min(image_size)
        for i, (n, w) in enumerate(zip(blocks, widths)):
            # Downsample at stages 2-4 as on CIFAR, but only while the map is still larger than
            # 1x1: an 8x8 digit goes 8-4-2-1 exactly as a 32x32 image goes 32-16-8-4.
            stride = 2 if i > 0 and size > 1 else 1
            if stride == 2:
                size = (size + 1) // 2  # a 3x3 conv with padding 1 and stride 2 rounds up
            layers = [BasicBlock(cin, w, stride)] + [BasicBlock(w, w, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = widths[-1]
        self.head = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))


@register_model("resnet18")
def resnet18(**kw) -> ResNet:
    """CIFAR-style ResNet-18 (the paper's RN-18): 512-d features."""
    return ResNet(blocks=(2, 2, 2, 2), **kw)
