"""LSP: synthetic linearly separable perturbations (Yu et al., KDD 2022).

"Availability Attacks Create Shortcuts", Da Yu, Huishuai Zhang, Wei Chen, Jian Yin, Tie-Yan Liu,
KDD 2022, https://arxiv.org/abs/2111.00898.

Threat model: the defender adds a sample-wise perturbation to each training image; no model, no
optimization: the perturbations are drawn from K well separated Gaussian clusters (one per class)
in a low-dimensional patch space, so they form a linearly separable shortcut.

How the original makes them (its `synthetic_perturbations/cifar_train.py`, defaults kept here):
sklearn `make_classification(n_features=m, n_informative=m, n_clusters_per_class=1,
class_sep=10, flip_y=0)` with m = (32/8)^2 * 3 = 48, i.e. each class a centre at a distinct
vertex of the hypercube {-10, +10}^m and each sample centre + N(0, I) @ A_k with a random
A_k ~ U(-1, 1)^(m x m) per class; the m values are laid out on a 4x4 grid per channel, each
repeated over an 8x8 patch, and each sample scaled to ||delta||_2 = sqrt(d) * 6/255 (d = C*H*W).
Here the grid follows the image size (4x4 for images >= 16 px, else 2x2; near-equal patches when
the size is not divisible: 28 -> 7-px patches, 8x8 digits -> 2x2 grid of 4-px patches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import UnlearnableError
from ..data.imageset import ImageSet
from .base import (
    PoisonContext, PoisonOutput, check_bound, perturb_chunks, register_poison, scale_to_norm, upsample_grid,
)


@dataclass
class LSPParams:
    """Parameters of `lsp`: the l2 size, the clusters' separation and layout; the defaults are the
    original's (`synthetic_perturbations/cifar_train.py`)."""

    eps: float = 6 / 255  # per-pixel scale of the l2 bound: ||delta||_2 = sqrt(C*H*W) * eps
    class_sep: float = 10.0  # centres at +-class_sep per coordinate (sklearn's class_sep)
    grid: int = 0  # patches per side; 0 = from the image size (4 for >= 16 px, else 2)
    random_covariance: bool = True  # sklearn's per-cluster random linear map A_k ~ U(-1, 1)

    def __post_init__(self) -> None:
        check_bound(self.eps)
        if self.class_sep <= 0:
            raise ValueError(f"class_sep must be positive, got {self.class_sep}")
        if self.grid < 0:
            raise ValueError(f"grid must be >= 0 (0 = automatic), got {self.grid}")


def lsp_grid(h: int, w: int, grid: int = 0) -> int:
    """Patches per side: the requested `grid`, or 4 (2 for images under 16 px)."""
    g = grid or (4 if min(h, w) >= 16 else 2)
    if g > min(h, w):
        raise UnlearnableError(f"lsp: grid {g} is larger than the image ({h}x{w})")
    return g


def cluster_centres(k: int, m: int, sep: float, rng: np.random.Generator) -> np.ndarray:
    """K distinct hypercube vertices in {-sep, +sep}^m (Gaussian centres if 2^m < K)."""
    if m < 63 and k > 2 ** m:
        # Too few vertices for distinct centres; Gaussian centres are still separable w.h.p.
        return rng.standard_normal((k, m)) * sep
    chosen: dict[bytes, np.ndarray] = {}
    while len(chosen) < k:
        v = rng.integers(0, 2, size=(k, m), dtype=np.int8)
        for row in v:
            chosen.setdefault(row.tobytes(), row)
            if len(chosen) == k:
                break
    return (np.stack(list(chosen.values())).astype(np.float64) * 2 - 1) * sep


@register_poison(
    "lsp", LSPParams, "sample-wise",
    "synthetic linearly separable noise: class clusters on a patch grid, ||delta||_2 = sqrt(d)*6/255",
    "Yu et al., Availability Attacks Create Shortcuts, KDD 2022, https://arxiv.org/abs/2111.00898",
    model_based=False,
)
def lsp(base: ImageSet, params: LSPParams, ctx: PoisonContext) -> PoisonOutput:
    """Linearly separable perturbations: per sample a draw from its class's cluster, upsampled.

    Paper: Yu et al., Availability Attacks Create Shortcuts, KDD 2022, https://arxiv.org/abs/2111.00898
    Threat model: the defender (the data owner) adds a sample-wise perturbation to every training
        image, ||delta||_2 = sqrt(C*H*W) * eps (held up to rounding on the stored uint8 images);
        labels, test set and learner are out of its hands. No model; every draw comes from ctx.seed.
    Args:
        eps (6/255): per-pixel scale of the l2 bound, ||delta||_2 = sqrt(C*H*W) * eps
        class_sep (10.0): cluster centres at +-class_sep per coordinate (sklearn's class_sep)
        grid (0): patches per side; 0 = from the image size (4 for images >= 16 px, else 2)
        random_covariance (True): per-class random linear map A_k ~ U(-1, 1) of the draws
            (sklearn's); False = identity covariance
    Shapes: base images uint8 (N, H, W, C) of at least grid x grid pixels, any class count;
        draws (N, C, g, g) -> delta (N, C, H, W) (Fashion-MNIST: a 4x4 grid of 7-px patches);
        returns PoisonOutput with images uint8 (N, H, W, C) aligned with base and an info dict
        with norm ("l2"), l2 (the bound), grid, patch_px and num_values (C*g*g).
    Example:
        unlearnable poison lsp --dataset fashion-mnist --out runs/lsp --seed 0
    """
    c, h, w = base.chw
    g = lsp_grid(h, w, params.grid)
    m = c * g * g
    k = base.num_classes
    rng = np.random.default_rng([ctx.seed, 2])
    centres = torch.from_numpy(cluster_centres(k, m, params.class_sep, rng)).float()
    maps = (torch.from_numpy(rng.uniform(-1, 1, size=(k, m, m))).float() if params.random_covariance
            else torch.eye(m).expand(k, m, m))
    z = torch.randn(len(base), m, generator=ctx.generator())
    labels = torch.from_numpy(base.labels)
    draws = torch.empty_like(z)
    for cls in range(k):  # a loop over classes, each a single matmul over its samples
        idx = torch.nonzero(labels == cls).squeeze(1)
        if len(idx):
            draws[idx] = z[idx] @ maps[cls] + centres[cls]
    bound = math.sqrt(c * h * w) * params.eps
    grid_values = draws.view(-1, c, g, g)

    def delta(sl: slice, x: torch.Tensor) -> torch.Tensor:
        return scale_to_norm(upsample_grid(grid_values[sl], (h, w)), "l2", bound)

    images = perturb_chunks(base, delta)
    return PoisonOutput(images, {
        "norm": "l2", "l2": bound, "grid": [g, g],
        "patch_px": [h / g, w / g], "num_values": m,
    })
