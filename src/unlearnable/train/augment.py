"""Batched augmentations: pure functions of (x, generator) over a whole batch on its device.

x is float NCHW in [0, 1]. Random draws come from an explicit CPU `torch.Generator`, so a seeded
run makes the same draws on any device and a resumed run repeats them exactly.
Functions with a label argument (CutMix, MixUp) return soft targets and live in
`LABEL_AUGMENTATIONS`; the engine's loss handles both kinds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTATIONS: dict[str, Augmentation] = {}
# (x, y_soft, generator) -> (x, y_soft): mixes images and labels together.
LabelAugmentation = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
LABEL_AUGMENTATIONS: dict[str, LabelAugmentation] = {}


def register_augmentation(name: str, with_labels: bool = False):
    """Register a batched augmentation under `name` for recipes to name (`with_labels`: it mixes labels
    too, as CutMix does)."""
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
# The released orthogonal_projection_step_2.py trains on tensors through RandomRotation(10),
# RandomAffine(0, shear=10, scale=(0.8, 1.2)), ColorJitter(0.2, 0.2, 0.2), RandomCrop(side,
# padding=4), RandomHorizontalFlip() in that order, then CutMix (beta 1, p 0.5) on the batch.
# Here: "rotate", "shear-scale", "color-jitter-per-image" (+ the engine's crop and flip, placed by
# naming them in `Recipe.augment`) and "cutmix", as whole-batch tensor ops with explicit
# generators. "affine" (rotation + shear + scale in one bilinear step) and "color-jitter" (one
# order per batch) are the approximations the preset used before, kept under their names.

def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, dtype=torch.float64) * (high - low) + low).to(device)


def _affine_sample(x: torch.Tensor, ang: torch.Tensor, sh: torch.Tensor, s: torch.Tensor,
                   mode: str) -> torch.Tensor:
    """Resample x (B, C, H, W) through one affine map per image about the image centre: rotation by
    `ang`, x-shear by `sh` (radians, float64, (B,)) and isotropic scale `s`; what moves in from
    outside is black (torchvision's fill=0). `mode`: "nearest" or "bilinear" (grid_sample's).
    The forward map is A = s * R(ang) @ [[1, tan(sh)], [0, 1]] in pixel units; grid_sample needs
    its inverse in normalized coordinates (so non-square images rotate without distortion), the
    grid torchvision's tensor `affine`/`rotate` build (pixel centres, align_corners=False).
    """
    b, _, h, w = x.shape
    cos, sin, tan = torch.cos(ang), torch.sin(ang), torch.tan(sh)
    # A = s * [[cos, cos*tan - sin], [sin, sin*tan + cos]]  (rotation times shear)
    a = torch.stack([torch.stack([cos, cos * tan - sin], -1),
                     torch.stack([sin, sin * tan + cos], -1)], -2) * s[:, None, None]
    inv = torch.linalg.inv(a)  # (B, 2, 2): output pixel -> input pixel
    # Pixel offsets from the centre -> normalized [-1, 1]: D = diag(2/w, 2/h); theta = D inv D^-1.
    d = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)
    theta_lin = inv * d[None, :, None] / d[None, None, :]
    theta = torch.cat([theta_lin, torch.zeros(b, 2, 1, dtype=torch.float64)], 2)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def batch_affine(x: torch.Tensor, gen: torch.Generator, degrees: float = 10.0, shear: float = 10.0,
                 scale: tuple[float, float] = (0.8, 1.2)) -> torch.Tensor:
    """Random rotation, x-shear and isotropic scale about the image centre, one per image, in one
    bilinear resampling (`_affine_sample`).

    Angles in degrees drawn uniformly from [-degrees, degrees] and [-shear, shear], the scale from
    `scale`: the released pipeline's rotation and affine map in one bilinear step. The `released`
    recipe instead rotates and then shears in two nearest-neighbour steps, as torchvision does
    (`batch_rotate`, `batch_shear_scale`); this one stays registered as "affine".
    """
    b = len(x)
    cpu = torch.device("cpu")
    ang = torch.deg2rad(_uniform(b, -degrees, degrees, gen, cpu))
    sh = torch.deg2rad(_uniform(b, -shear, shear, gen, cpu))
    s = _uniform(b, scale[0], scale[1], gen, cpu)
    return _affine_sample(x, ang, sh, s, "bilinear")


def batch_rotate(x: torch.Tensor, gen: torch.Generator, degrees: float = 10.0,
                 mode: str = "nearest") -> torch.Tensor:
    """torchvision's RandomRotation(degrees) on tensors: an angle uniform in [-degrees, degrees]
    per image, about the centre, same size, fill 0, nearest-neighbour resampling (its default)."""
    b = len(x)
    ang = torch.deg2rad(_uniform(b, -degrees, degrees, gen, torch.device("cpu")))
    zero = torch.zeros(b, dtype=torch.float64)
    return _affine_sample(x, ang, zero, torch.ones(b, dtype=torch.float64), mode)


def batch_shear_scale(x: torch.Tensor, gen: torch.Generator, shear: float = 10.0,
                      scale: tuple[float, float] = (0.8, 1.2), mode: str = "nearest") -> torch.Tensor:
    """torchvision's RandomAffine(0, shear=shear, scale=scale) on tensors: no rotation or
    translation, an x-shear uniform in [-shear, shear] degrees and a scale uniform in `scale` per
    image, about the centre, fill 0, nearest-neighbour resampling (its default). Whether a
    positive shear leans the same way as torchvision's does not matter: the range is symmetric."""
    b = len(x)
    cpu = torch.device("cpu")
    sh = torch.deg2rad(_uniform(b, -shear, shear, gen, cpu))
    s = _uniform(b, scale[0], scale[1], gen, cpu)
    return _affine_sample(x, torch.zeros(b, dtype=torch.float64), sh, s, mode)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (torchvision's rgb_to_grayscale), (B, 1, H, W); grey images pass through."""
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    wts = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * wts).sum(1, keepdim=True)


_JITTER = ("brightness", "contrast", "saturation")


def _jitter_one(x: torch.Tensor, name: str, f: torch.Tensor) -> torch.Tensor:
    """One of torchvision's colour adjustments with per-image factors f (B, 1, 1, 1), clamped to
    [0, 1] as torchvision clamps float images. Saturation is a no-op on one-channel images."""
    if name == "brightness":
        return (x * f).clamp(0, 1)
    if name == "contrast":
        m = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
        return (m + f * (x - m)).clamp(0, 1)
    if x.shape[1] == 3:
        g = _grey(x)
        return (g + f * (x - g)).clamp(0, 1)
    return x


def _jitter_factors(x: torch.Tensor, gen: torch.Generator, brightness: float, contrast: float,
                    saturation: float) -> dict[str, torch.Tensor]:
    b = len(x)
    return {name: _uniform(b, 1 - v, 1 + v, gen, x.device).to(x.dtype).view(-1, 1, 1, 1)
            for name, v in zip(_JITTER, (brightness, contrast, saturation))}


def batch_color_jitter(x: torch.Tensor, gen: torch.Generator, brightness: float = 0.2,
                       contrast: float = 0.2, saturation: float = 0.2) -> torch.Tensor:
    """torchvision ColorJitter(brightness, contrast, saturation): factors uniform in [1-v, 1+v]
    per image, the three applied in a random order drawn once per *batch*, clamped to [0, 1] after
    each. torchvision draws the order per call, i.e. per image: that is
    `batch_color_jitter_per_image`, which the `released` recipe uses; this one stays registered as
    "color-jitter".
    """
    factors = _jitter_factors(x, gen, brightness, contrast, saturation)
    for i in torch.randperm(3, generator=gen).tolist():
        x = _jitter_one(x, _JITTER[i], factors[_JITTER[i]])
    return x


def batch_color_jitter_per_image(x: torch.Tensor, gen: torch.Generator, brightness: float = 0.2,
                                 contrast: float = 0.2, saturation: float = 0.2) -> torch.Tensor:
    """torchvision ColorJitter(brightness, contrast, saturation) as it runs in a per-image
    pipeline: factors uniform in [1-v, 1+v] and an order of the three adjustments drawn for every
    image (torchvision draws a permutation per call), each clamped to [0, 1]. Batched: at each of
    the three positions every adjustment is computed for the whole batch and each image keeps the
    one its order puts there (three times the arithmetic of a fixed order, still cheap).
    """
    b = len(x)
    factors = _jitter_factors(x, gen, brightness, contrast, saturation)
    # A uniform permutation per image: the ranks of i.i.d. uniforms (torchvision: randperm per call).
    order = torch.rand(b, 3, generator=gen).argsort(1).to(x.device)
    for pos in range(3):
        out = x
        for i, name in enumerate(_JITTER):
            out = torch.where((order[:, pos] == i).view(-1, 1, 1, 1), _jitter_one(x, name, factors[name]), out)
        x = out
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
register_augmentation("rotate")(batch_rotate)
register_augmentation("shear-scale")(batch_shear_scale)
register_augmentation("color-jitter-per-image")(batch_color_jitter_per_image)
register_augmentation("cutmix", with_labels=True)(batch_cutmix)


# --- Augmentation defences (Cutout, MixUp, UEraser's ops): recipes name them in `augment` --------
# Cutout: DeVries & Taylor 2017, https://arxiv.org/abs/1708.04552. MixUp: Zhang et al. ICLR 2018,
# https://arxiv.org/abs/1710.09412. Plasma, channel shuffle and TrivialAugment (Mueller & Hutter,
# ICCV 2021) as UEraser (Qin et al. 2023, https://arxiv.org/abs/2303.15127) combines them.

def _u(shape: tuple[int, ...], gen: torch.Generator, device: torch.device, lo: float = 0.0,
       hi: float = 1.0) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * (hi - lo) + lo).to(device)


def batch_cutout(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Zero a square of side H/2 centred at a uniform position (clipped at the borders)."""
    b, _, h, w = x.shape
    size = max(1, h // 2)
    cy = torch.randint(0, h, (b,), generator=gen).to(x.device)
    cx = torch.randint(0, w, (b,), generator=gen).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys - cy[:, None, None]).abs() <= size // 2) & ((xs - cx[:, None, None]).abs() <= size // 2)
    return x * (~inside)[:, None].to(x.dtype)


def batch_mixup(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each image with a partner from the same batch; Beta(1, 1) is uniform."""
    b = len(x)
    lam = _u((b,), gen, x.device)
    perm = torch.randperm(b, generator=gen).to(x.device)
    xm = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm]
    ym = lam.view(-1, 1) * y + (1 - lam.view(-1, 1)) * y[perm]
    return xm, ym


def plasma(b: int, h: int, w: int, gen: torch.Generator, device: torch.device,
           roughness: torch.Tensor) -> torch.Tensor:
    """Fractal noise in [0, 1] (b, 1, h, w): octaves of bilinearly upsampled random grids whose
    amplitude falls by `roughness` (per sample) each octave, like diamond-square plasma."""
    field = torch.zeros(b, 1, h, w, device=device)
    amp = torch.ones(b, 1, 1, 1, device=device)
    total = torch.zeros_like(amp)
    for octave in range(max(1, int(math.log2(max(h, w))))):
        n = 2 ** (octave + 1)
        grid = torch.rand(b, 1, n, n, generator=gen).to(device)
        field += amp * F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)
        total += amp
        amp = amp * roughness.view(-1, 1, 1, 1)
    field = field / total
    lo = field.amin((2, 3), keepdim=True)
    hi = field.amax((2, 3), keepdim=True)
    return (field - lo) / (hi - lo).clamp_min(1e-6)


def batch_plasma(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Plasma brightness then plasma contrast, each on half the batch."""
    b, c, h, w = x.shape
    rough = _u((b,), gen, x.device, 0.1, 0.7)
    field = plasma(b, h, w, gen, x.device, rough)
    use_b = (_u((b,), gen, x.device) < 0.5).view(-1, 1, 1, 1)
    x = torch.where(use_b, x + (field - 0.5) * _u((b, 1, 1, 1), gen, x.device, 0.0, 1.0), x)
    field2 = plasma(b, h, w, gen, x.device, rough)
    use_c = (_u((b,), gen, x.device) < 0.5).view(-1, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = torch.where(use_c, (x - mean) * (0.5 + field2) + mean, x)
    return x.clamp(0, 1)


def batch_channel_shuffle(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random permutation of the channels per image, for half the batch (no-op on 1 channel)."""
    b, c = x.shape[:2]
    if c == 1:
        return x
    perm = torch.rand(b, c, generator=gen).argsort(1).to(x.device)
    keep = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    perm = torch.where(keep[:, None], torch.arange(c, device=x.device).expand(b, c), perm)
    return x.gather(1, perm[:, :, None, None].expand_as(x))


# TrivialAugment (Mueller & Hutter ICCV 2021): one op per image with a uniform magnitude.
_TRIVIAL_OPS = ("identity", "rotate", "shear", "translate", "brightness", "contrast",
                "solarize", "posterize", "autocontrast", "sharpness")


def batch_trivial_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One TrivialAugment-style op per image (rotate, shear, translate, brightness, ...) at a random
    strength."""
    b, c, h, w = x.shape
    dev = x.device
    op = torch.randint(0, len(_TRIVIAL_OPS), (b,), generator=gen).to(dev)
    mag = _u((b,), gen, dev)
    sign = torch.where(_u((b,), gen, dev) < 0.5, -1.0, 1.0)
    # Geometric ops: one affine grid for the whole batch (identity rows for the other ops).
    angle = torch.where(op == 1, sign * mag * math.radians(30), torch.zeros_like(mag))
    shear = torch.where(op == 2, sign * mag * 0.3, torch.zeros_like(mag))
    shift = torch.where(op == 3, sign * mag * 0.3 * 2, torch.zeros_like(mag))  # grid units
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin + shear, shift], 1),
                         torch.stack([sin, cos, torch.zeros_like(mag)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = mag.view(-1, 1, 1, 1)
    s = sign.view(-1, 1, 1, 1)
    opv = op.view(-1, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    levels = 2 ** (8 - (m * 4).round())  # posterize to 4..8 bits
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    x = torch.where(opv == 4, x + s * m * 0.9 * 0.5, x)
    x = torch.where(opv == 5, (x - mean) * (1 + s * m * 0.9) + mean, x)
    x = torch.where(opv == 6, torch.where(x >= 1 - m, 1 - x, x), x)
    x = torch.where(opv == 7, torch.floor(x * 255 / levels) * levels / 255, x)
    x = torch.where(opv == 8, (x - lo) / (hi - lo).clamp_min(1e-6), x)
    x = torch.where(opv == 9, x + s * m * (x - blur), x)
    return x.clamp(0, 1)


def ueraser_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """UEraser-lite's augmentation: plasma brightness and contrast, channel shuffle, then a
    TrivialAugment-style op."""
    return batch_trivial_augment(batch_channel_shuffle(batch_plasma(x, gen), gen), gen)


register_augmentation("cutout")(batch_cutout)
register_augmentation("mixup", with_labels=True)(batch_mixup)
register_augmentation("plasma")(batch_plasma)
register_augmentation("channel-shuffle")(batch_channel_shuffle)
register_augmentation("trivial")(batch_trivial_augment)


# --- COIN (Wang et al., AAAI 2025, https://arxiv.org/abs/2311.18403; code wxldragon/COIN) -----
# Its `COIN_trans` (train.py): per pixel an offset (dy, dx) ~ U(-alpha, alpha)^2, one field per
# image shared by its channels, the image resampled there by linear interpolation
# (scipy.ndimage.map_coordinates, order 1, mode "wrap"), clipped to [0, 1], scaled by 255 and cast
# to uint8 (truncated); on the fly after crop and flip, every epoch anew; training images only.
COIN_ALPHAS = (0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2)  # its `--severity` 1..7; the default 4 is alpha 2


def _wrap(t: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scipy's mode "wrap" for `n` samples: a coordinate outside [0, n - 1] moves by the period
    n - 1 (the last sample and the first overlap, as scipy documents it), one inside stays, so it
    falls between two valid indices i0 and i0 + 1."""
    if n == 1:
        z = torch.zeros_like(t, dtype=torch.long)
        return z, z, torch.zeros_like(t)
    p = n - 1
    t = torch.where((t < 0) | (t > p), t - p * torch.floor(t / p), t)
    i0 = torch.floor(t).clamp_(max=p - 1)
    return i0.long(), i0.long() + 1, t - i0


def coin_resample(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """x (NCHW float) sampled at (row + dy, column + dx), dy and dx (N, H, W): bilinear, wrapping
    as scipy's map_coordinates(order=1, mode="wrap") does (tests/attacks/test_coin.py compares)."""
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[None, :, None] + dy
    cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, None, :] + dx
    r0, r1, fr = _wrap(rows, h)
    c0, c1, fc = _wrap(cols, w)
    flat = x.reshape(b, c, h * w)

    def at(r: torch.Tensor, cc: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, (r * w + cc).view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)

    fr, fc = fr[:, None], fc[:, None]
    return ((1 - fr) * ((1 - fc) * at(r0, c0) + fc * at(r0, c1))
            + fr * ((1 - fc) * at(r1, c0) + fc * at(r1, c1)))


def batch_coin(x: torch.Tensor, gen: torch.Generator, alpha: float = 2.0) -> torch.Tensor:
    """COIN's corruption of a batch: a fresh U(-alpha, alpha) offset field per image, bilinear
    resampling with wrap-around, then the original's uint8 truncation (1e-6 of slack, so a grey
    level that float rounding puts a hair below itself is not cut to the next one down)."""
    b, _, h, w = x.shape
    d = ((torch.rand(b, 2, h, w, generator=gen, dtype=torch.float64) * 2 - 1) * alpha).to(x.device)
    out = coin_resample(x.double(), d[:, 0], d[:, 1]).clamp_(0, 1)
    return (torch.floor(out * 255 + 1e-6) / 255).to(x.dtype)


for _s, _a in enumerate(COIN_ALPHAS, start=1):
    register_augmentation(f"coin-s{_s}")(lambda x, gen, _a=_a: batch_coin(x, gen, _a))
