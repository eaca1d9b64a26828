"""Batched augmentations: pure functions of (x, generator) over a whole batch on its device.

x is float NCHW in [0, 1]. Random draws come from an explicit CPU `torch.Generator`, so a seeded
run makes the same draws on any device and a resumed run repeats them exactly.
Functions with a label argument (CutMix, MixUp) return soft targets and live in
`LABEL_AUGMENTATIONS`; the engine's loss handles both kinds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTATIONS: dict[str, Augmentation] = {}
# (x, y_soft, generator) -> (x, y_soft): mixes images and labels together.
LabelAugmentation = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
LABEL_AUGMENTATIONS: dict[str, LabelAugmentation] = {}


def register_augmentation(name: str, with_labels: bool = False):
    def deco(fn):
        (LABEL_AUGMENTATIONS if with_labels else AUGMENTATIONS)[name] = fn
        return fn
    return deco


def _rand(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen).to(device)


def batch_flip_lr(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    mask = _rand(len(x), gen, x.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def batch_crop(x: torch.Tensor, gen: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after zero padding (torchvision's RandomCrop(size, padding)), one gather."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    bidx = torch.arange(b, device=x.device)[:, None, None]
    return xp.permute(0, 2, 3, 1)[bidx, rows, cols].permute(0, 3, 1, 2).contiguous()


register_augmentation("flip")(batch_flip_lr)
register_augmentation("crop")(batch_crop)
