"""OPS: the one-pixel shortcut (Wu et al., ICLR 2023).

"One-Pixel Shortcut: on the Learning Preference of Deep Neural Networks", Shutong Wu, Sizhe Chen,
Cihang Xie, Xiaolin Huang, ICLR 2023, https://arxiv.org/abs/2205.12141.

Threat model: the defender sets one pixel (all channels) of every training image to a corner
colour in {0, 1}^C, the same (position, colour) for the whole class. Unbounded in l_inf (a pixel
jumps to 0 or 1), tiny in l_0; no model. Known to survive adversarial training.

The search ("boundary pixel value search", as in the original's `pixel_search`): for class k,
every position p and corner colour b, D = |b - x_p| over the class's images and channels;
score(p, b) = mean(D) / std(D) (population std over images x channels), maximized. Classes are
searched in order 0..K-1 and a (position, colour) pair taken by an earlier class is excluded, so
no two classes share both position and colour (the original gives taken pairs score 0).

Vectorized: only the per-position, per-channel mean and variance of the class's pixels are
needed. With m_c = mean_n x_c and v_c = var_n x_c, for colour b the D of channel c has mean
b_c ? 1 - m_c : m_c and variance v_c, so over images x channels
    mean(D) = mean_c mu_c,   var(D) = mean_c v_c + var_c mu_c   (law of total variance),
for all H*W*2^C candidates at once, in float64. A candidate with std 0 and mean > 0 (the pixel
is constant in the class and the colour differs from it) scores +inf: a perfect shortcut.
Ties (common on Fashion-MNIST's constant black borders) go to the first candidate in row-major
position order, then colour index (bit c of the index is channel C-1-c, so 0 = black and
2^C - 1 = white): deterministic, so the seed plays no part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import UnlearnableError
from ..data.imageset import ImageSet
from .base import PoisonContext, PoisonOutput, register_poison


@dataclass
class OPSParams:
    """Parameters of `ops`: none, as the original's one-pixel version has none."""

    pass  # the original has no parameters for the one-pixel (sparsity 1) version


def corner_colours(c: int) -> torch.Tensor:
    """(2^C, C) float64 corner colours; row i has channel j = bit (C-1-j) of i (the original's order)."""
    i = torch.arange(2 ** c).unsqueeze(1)
    shifts = torch.arange(c - 1, -1, -1).unsqueeze(0)
    return ((i >> shifts) & 1).double()


def ops_scores(x: torch.Tensor) -> torch.Tensor:
    """mean/std scores (H*W, 2^C) of every (position, corner colour) for one class's images.

    x: float (n, C, H, W) in [0, 1]. Returns float64; +inf where std is 0 and mean > 0.
    """
    n, c, h, w = x.shape
    xd = x.double().reshape(n, c, h * w)
    m = xd.mean(0).T  # (HW, C)
    v = xd.var(0, unbiased=False).T  # (HW, C): two-pass, exactly 0 for a constant pixel
    b = corner_colours(c)  # (2^C, C)
    mu = torch.where(b.bool().unsqueeze(0), 1 - m.unsqueeze(1), m.unsqueeze(1))  # (HW, 2^C, C)
    mean = mu.mean(-1)
    var = v.mean(-1, keepdim=True) + mu.var(-1, unbiased=False)
    std = var.clamp_min(0).sqrt()
    score = mean / std
    return torch.where(std > 0, score, torch.where(mean > 0, torch.inf, 0.0))


@register_poison(
    "ops", OPSParams, "class-wise",
    "one-pixel shortcut: per class the (position, corner colour) maximizing mean/std of "
    "|colour - pixel|; unbounded",
    "Wu et al., One-Pixel Shortcut: on the Learning Preference of Deep Neural Networks, "
    "ICLR 2023, https://arxiv.org/abs/2205.12141",
    uses_seed=False, model_based=False,
)
def ops(base: ImageSet, params: OPSParams, ctx: PoisonContext) -> PoisonOutput:
    """One-pixel shortcut: set one pixel (all channels) per image to its class's corner colour.

    Paper: Wu et al., One-Pixel Shortcut: on the Learning Preference of Deep Neural Networks,
        ICLR 2023, https://arxiv.org/abs/2205.12141
    Threat model: the defender (the data owner) sets one pixel of every training image to a corner
        colour in {0, 255}^C, the same (position, colour) for the whole class: l_0 = 1 pixel,
        unbounded in l_inf; labels, test set and learner are out of its hands. No model, and
        deterministic: the seed plays no part.
    Args: none (OPSParams has no fields).
    Shapes: base images uint8 (N, H, W, C), any size and class count with H*W*2^C >= K (always
        true for real images); scores (H*W, 2^C) per class; returns PoisonOutput with images
        uint8 (N, H, W, C) aligned with base, differing from it in at most one pixel per image,
        and an info dict with norm ("l0"), pixels_per_image (1) and pixels (per class its row,
        col, colour and score, "inf" for a perfect shortcut; None for a class without images).
    Example:
        unlearnable poison ops --dataset fashion-mnist --out runs/ops --seed 0
    """
    c, h, w = base.chw
    k = base.num_classes
    if h * w * 2 ** c < k:
        raise UnlearnableError(f"ops: {h}x{w}x{c} images have only {h * w * 2 ** c} "
                               f"(position, colour) pairs for {k} classes")
    taken = torch.zeros(h * w, 2 ** c, dtype=torch.bool)
    colours = corner_colours(c)
    images = base.images.copy()
    pixels = []
    for cls in range(k):
        idx = np.flatnonzero(base.labels == cls)
        if len(idx) == 0:
            pixels.append(None)  # no image of this class: nothing to mark, nothing taken
            continue
        x = torch.from_numpy(base.images[idx]).permute(0, 3, 1, 2).float().div_(255)
        s = ops_scores(x).masked_fill_(taken, -torch.inf)
        flat = int(torch.argmax(s))  # first maximum: the documented tie rule
        pos, col = divmod(flat, 2 ** c)
        taken[pos, col] = True
        r, q = divmod(pos, w)
        value = (colours[col] * 255).to(torch.uint8).numpy()
        images[idx, r, q, :] = value
        pixels.append({"row": r, "col": q, "colour": value.tolist(), "score": _json_score(float(s[pos, col]))})
    return PoisonOutput(images, {"norm": "l0", "pixels_per_image": 1, "pixels": pixels})


def _json_score(v: float) -> float | str:
    return v if np.isfinite(v) else "inf"  # JSON has no Infinity
