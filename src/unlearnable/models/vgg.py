"""VGG-16 with BatchNorm, really 16 weight layers; VGG-19 as the released code builds it.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(ICLR 2015, arXiv 1409.1556), configuration D: 13 3x3 convolutions (each followed by BatchNorm,
Ioffe & Szegedy 2015, so the paper's lr-0.1 SGD recipe trains it) and 3 fully connected layers,
the last being `head`. The CIFAR form: after the five pools a 32x32 image is 1x1x512, so the
classifier is 512-512-512-K rather than ImageNet's 25088-4096-4096-1000. The released research
code's "vgg16" built VGG-11 (8 convolutions); this one is configuration D.

`vgg19` is configuration E (16 convolutions with BatchNorm) with the released code's CIFAR
classifier, one linear layer on the pooled 512 channels (the common pytorch-cifar `VGG('VGG19')`
that its `utils_models.py` builds): 17 weight layers, `features` = the 512 pooled channels. Its
convolutions have no bias: the released ones do, but the BatchNorm after each cancels it in
training (5,504 fewer parameters, the same functions).

    >>> model = build_model("vgg16", num_classes=10, in_channels=3, image_size=32)
    >>> sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    16
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import Classifier, register_model

# Configuration D of the VGG paper: output channels of each 3x3 conv, "M" a 2x2 max-pool.
CONFIG_D: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                   512, 512, 512, "M", 512, 512, 512, "M")
# Configuration E (VGG-19): four convs in each of the last three stages.
CONFIG_E: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                   512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class VGG(Classifier):
    """VGG with BatchNorm after every conv and a classifier of `hidden_layers` + 1 linear layers.

    Args:
        num_classes: output classes (default 10).
        in_channels: image channels, 1 or 3 (default 3).
        image_size: (H, W) of the inputs (default (32, 32)); decides which pools are kept.
        config: conv widths and "M" pools (default configuration D = VGG-16).
        hidden: width of the hidden fully connected layers (default 512).
        hidden_layers: hidden fully connected layers before `head` (default 2; 0: `head` reads
            the pooled conv channels directly, as the released `vgg19`).
        dropout: dropout before each hidden fully connected layer (default 0.0). The VGG paper
            used 0.5; we default to none because BatchNorm already regularizes and dropout draws
            from torch's global RNG, which the engine does not checkpoint, so a resumed run would
            no longer be bit-identical to an uninterrupted one.
        mean, std: per-channel normalization applied inside the model (base-class defaults).
    Input (B, in_channels, H, W) in [0, 1]; `features` -> (B, hidden), the last hidden layer, or
    the pooled conv channels without hidden layers.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: tuple[int, int] = (32, 32),
                 config: Sequence[int | str] = CONFIG_D, hidden: int = 512, hidden_layers: int = 2,
                 dropout: float = 0.0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__(in_channels, mean, std)
        layers: list[nn.Module] = []
        cin, size = in_channels, min(image_size)
        for v in config:
            if v == "M":
                # A 28x28 map would go 14-7-3-1-0 and an 8x8 one 4-2-1-0: drop the pools that
                # would empty the map; the global average pool below makes the rest 1x1.
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            layers += [nn.Conv2d(cin, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                       nn.ReLU(inplace=True)]
            cin = int(v)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.conv = nn.Sequential(*layers)
        fc: list[nn.Module] = []
        for _ in range(hidden_layers):
            fc += ([nn.Dropout(dropout)] if dropout > 0 else []) + [nn.Linear(cin, hidden), nn.ReLU(inplace=True)]
            cin = hidden
        self.classifier = nn.Sequential(*fc)
        self.feature_dim = cin
        self.head = nn.Linear(cin, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(x))


@register_model("vgg16")
def vgg16(**kw) -> VGG:
    """VGG-16 (configuration D, BatchNorm): 13 conv + 3 linear layers, 512-d features."""
    return VGG(config=CONFIG_D, **kw)


@register_model("vgg19")
def vgg19(**kw) -> VGG:
    """VGG-19 (configuration E, BatchNorm) with the released code's one-layer CIFAR classifier:
    16 conv + 1 linear layers, 512-d features."""
    return VGG(config=CONFIG_E, hidden_layers=0, **kw)
