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
    hp, wp = h + 2 * padding, w + 2 * padding
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
    # Flat offsets into each padded plane: one gather over contiguous memory, shared by channels.
    rows = dy[:, None, None] + torch.arange(h, device=x.device)[None, :, None]
    cols = dx[:, None, None] + torch.arange(w, device=x.device)[None, None, :]
    flat = (rows * wp + cols).view(b, 1, h * w).expand(b, c, h * w)
    return xp.reshape(b, c, hp * wp).gather(2, flat).view(b, c, h, w)


register_augmentation("flip")(batch_flip_lr)
register_augmentation("crop")(batch_crop)


# --- The released orthogonal-projection recipe's augmentations (the "released" preset) --------
# torchvision's RandomAffine(degrees=10, shear=10, scale=(0.8, 1.2)), ColorJitter(0.2, 0.2, 0.2)
# and CutMix (beta 1, p 0.5), rewritten as whole-batch tensor ops with explicit generators.

def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, dtype=torch.float64) * (high - low) + low).to(device)


def batch_affine(x: torch.Tensor, gen: torch.Generator, degrees: float = 10.0, shear: float = 10.0,
                 scale: tuple[float, float] = (0.8, 1.2)) -> torch.Tensor:
    """Random rotation, x-shear and isotropic scale about the image centre, one per image.

    Angles in degrees drawn uniformly from [-degrees, degrees] and [-shear, shear], the scale from
    `scale`; areas moved in from outside are black (torchvision's fill=0). Bilinear resampling via
    one `affine_grid` + `grid_sample` for the whole batch. The forward map is
    A = s * R(angle) @ [[1, tan(shear)], [0, 1]] in pixel units; grid_sample needs its inverse,
    expressed in normalized coordinates (so non-square images rotate without distortion).
    """
    b, _, h, w = x.shape
    ang = torch.deg2rad(_uniform(b, -degrees, degrees, gen, torch.device("cpu")))
    sh = torch.deg2rad(_uniform(b, -shear, shear, gen, torch.device("cpu")))
    s = _uniform(b, scale[0], scale[1], gen, torch.device("cpu"))
    cos, sin, tan = torch.cos(ang), torch.sin(ang), torch.tan(sh)
    # A = s * [[cos, cos*tan - sin], [sin, sin*tan + cos]]  (rotation times shear)
    a = torch.stack([torch.stack([cos, cos * tan - sin], -1),
                     torch.stack([sin, sin * tan + cos], -1)], -2) * s[:, None, None]
    inv = torch.linalg.inv(a)  # (B, 2, 2): output pixel -> input pixel
    # Pixel offsets from the centre -> normalized [-1, 1]: D = diag(2/w, 2/h); theta = D inv D^-1.
    d = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)
    theta_lin = inv * d[None, :, None] / d[None, None, :]
    theta = torch.cat([theta_lin, torch.zeros(b, 2, 1, dtype=torch.float64)], 2)
    grid = torch.nn.functional.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (torchvision's rgb_to_grayscale), (B, 1, H, W); grey images pass through."""
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    wts = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * wts).sum(1, keepdim=True)


def batch_color_jitter(x: torch.Tensor, gen: torch.Generator, brightness: float = 0.2,
                       contrast: float = 0.2, saturation: float = 0.2) -> torch.Tensor:
    """torchvision ColorJitter(brightness, contrast, saturation): factors uniform in [1-v, 1+v]
    per image, the three applied in a random order drawn once per batch, clamped to [0, 1] after
    each (as torchvision does). Saturation is a no-op on one-channel images.
    """
    b = len(x)
    factors = {name: _uniform(b, 1 - v, 1 + v, gen, x.device).to(x.dtype).view(-1, 1, 1, 1)
               for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation))}
    order = torch.randperm(3, generator=gen).tolist()
    for i in order:
        name = ("brightness", "contrast", "saturation")[i]
        f = factors[name]
        if name == "brightness":
            x = (x * f).clamp(0, 1)
        elif name == "contrast":
            m = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
            x = (m + f * (x - m)).clamp(0, 1)
        elif x.shape[1] == 3:
            g = _grey(x)
            x = (g + f * (x - g)).clamp(0, 1)
    return x


def batch_cutmix(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, beta: float = 1.0,
                 prob: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al., ICCV 2019, arXiv:1905.04899) as its reference code applies it: with
    probability `prob` per batch, one box of area fraction 1 - lam (lam ~ Beta(beta, beta)) is
    pasted from a shuffled copy of the batch; soft labels are mixed by the exact pasted area.
    y is (B, K) soft labels.
    """
    b, _, h, w = x.shape
    if torch.rand((), generator=gen).item() >= prob:
        return x, y
    if beta == 1.0:
        lam = torch.rand((), generator=gen, dtype=torch.float64).item()
    else:  # a Beta draw seeded from the generator, so the run stays reproducible
        import numpy as np
        lam = float(np.random.default_rng(int(torch.randint(0, 2**62, (), generator=gen))).beta(beta, beta))
    perm = torch.randperm(b, generator=gen).to(x.device)
    cut = (1.0 - lam) ** 0.5
    ch, cw = int(h * cut), int(w * cut)
    cy = int(torch.randint(0, h, (), generator=gen))
    cx = int(torch.randint(0, w, (), generator=gen))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x = x.clone()
    x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam_exact = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return x, lam_exact * y + (1.0 - lam_exact) * y[perm]


register_augmentation("affine")(batch_affine)
register_augmentation("color-jitter")(batch_color_jitter)
register_augmentation("cutmix", with_labels=True)(batch_cutmix)
