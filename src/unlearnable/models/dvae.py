"""The disentangling VAE of D-VAE (Yu et al., ICML 2024): the network, not a classifier.

Read from yuyi-sd/D-VAE (`models/ResNet.py`, class ResNetDVAE with `stem_end_block=7`,
`latent_dim=256`, and the flags of its published commands: `--use_y --spatial_emb`, which
store False and True):

    encoder     the CIFAR ResNet-18 stem (3x3 conv, BN, ReLU), layer1, layer2's first block:
                (B, C, H, W) -> (B, 2w, ceil(H/2), ceil(W/2)), w = 64
    latent      1x1 convs to mu and log-variance of 4w = 256 channels at every position; a
                sample z = mu + sigma * eps, mapped back to 2w channels by a 1x1 conv
    decoder     ConvT(2w, w, 4, s2, p1), ConvT(w, w, 3, p1), IN, ReLU, ConvT(w, w/2, 3, p1), IN,
                ReLU, ConvT(w/2, C, 3, p1), sigmoid: the reconstruction
    decoder_p   the same layers without the sigmoid, fed z plus a learned class embedding of
                (2w, ceil(H/2), ceil(W/2)) per class: the perturbation the model explains away

    net = DVAE(channels=3, num_classes=10, image_size=(32, 32))
    rec, mu, log_var, perturbation = net(x, y)      # x (B, C, H, W) in [0, 1], y (B,) int64

The sizes follow the image: a 28x28 image has a 14x14 latent; an odd side is cropped back after
the decoder's doubling. `width` scales every layer (the original's 64); the ladder's `quick`
preset uses a narrower one on CPU (a named option, `attacks.dvae.DVAEParams.width`).
The ResNet's classifier branch, whose logits the original computes but never trains, is left out.
"""

from __future__ import annotations

import torch
from torch import nn

from .resnet import BasicBlock


def _decoder(width: int, channels: int, sigmoid: bool) -> nn.ModuleList:
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
        nn.ConvTranspose2d(width, width, 3, padding=1), nn.InstanceNorm2d(width), nn.ReLU(),
        nn.ConvTranspose2d(width, width // 2, 3, padding=1), nn.InstanceNorm2d(width // 2), nn.ReLU(),
        nn.ConvTranspose2d(width // 2, channels, 3, padding=1),
    ]
    if sigmoid:
        layers.append(nn.Sigmoid())
    return nn.ModuleList(layers)


class DVAE(nn.Module):
    """D-VAE's network for (channels, image_size) images of `num_classes` classes.

    Args:
        channels: image channels (1 or 3).
        num_classes: classes of the class embedding.
        image_size: (H, W).
        width: the stem's channels (default 64, the original's); the latent has 4 * width.
    forward(x, y, generator=None) -> (reconstruction in [0, 1], mu, log_var, perturbation), each
    image-shaped but mu and log_var (B, 4 * width, ceil(H/2), ceil(W/2)); the latent sample draws
    from `generator` when given (purification), else from torch's global one (training, seeded
    per epoch by the loop).
    """

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int], width: int = 64):
        super().__init__()
        if width < 2 or width % 2:
            raise ValueError(f"width must be an even number >= 2, got {width}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.latent_hw = ((self.image_size[0] + 1) // 2, (self.image_size[1] + 1) // 2)
        self.width = width
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), BasicBlock(width, width, 1), BasicBlock(width, width, 1),
                                  BasicBlock(width, 2 * width, 2))
        self.fc_mu = nn.Conv2d(2 * width, 4 * width, 1)
        self.fc_var = nn.Conv2d(2 * width, 4 * width, 1)
        self.post_conv = nn.Conv2d(4 * width, 2 * width, 1)
        self.decoder = _decoder(width, channels, sigmoid=True)
        self.decoder_p = _decoder(width, channels, sigmoid=False)
        self.emb_p = nn.Embedding(num_classes, 2 * width * self.latent_hw[0] * self.latent_hw[1])

    def _decode(self, layers: nn.ModuleList, z: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            z = layer(z)
        return z[..., :self.image_size[0], :self.image_size[1]]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_var) of the latent at every position of the halved map."""
        h = self.stem(x)
        return self.fc_mu(h), self.fc_var(h)

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        mu, log_var = self.encode(x)
        std = torch.exp(0.5 * log_var)
        if generator is None:
            eps = torch.randn_like(std)
        else:
            eps = torch.randn(std.shape, generator=generator, dtype=std.dtype).to(std.device)
        z = self.post_conv(mu + eps * std)
        emb = self.emb_p(y).view(len(y), 2 * self.width, *self.latent_hw)
        return self._decode(self.decoder, z), mu, log_var, self._decode(self.decoder_p, z + emb)
