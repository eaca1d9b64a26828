"""A small ConvNet for CPU work: about a minute per Fashion-MNIST epoch on 2 cores."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import Classifier, register_model


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ConvNet(Classifier):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: tuple[int, int] = (32, 32),
                 width: int = 32, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__(in_channels, mean, std)
        w = width
        # Pooling only while the map is large enough, so 8x8 digits and 32x32 CIFAR both work.
        layers: list[nn.Module] = [_block(in_channels, w)]
        size = min(image_size)
        for cin, cout in ((w, 2 * w), (2 * w, 4 * w)):
            if size >= 8:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            layers.append(_block(cin, cout))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.feature_dim = 4 * w
        self.head = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_model("convnet")
def convnet(**kw) -> ConvNet:
    return ConvNet(**kw)
