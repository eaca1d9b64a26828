"""Class-mean subtraction: the baseline the paper shows does *not* work (App. A.4.4).

Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?", NeurIPS 2023,
App. A.4.4 (arXiv:2305.19254, https://arxiv.org/abs/2305.19254).

Threat model: as Orthogonal Projection, the attacker has only the protected training set.
A class-wise perturbation delta_k is part of the mean image of class k, so subtracting each
class's mean image removes it exactly (up to clipping), but it also removes the class's average
appearance, which is real signal; and it cannot be undone at test time, where the label (hence
the mean to subtract) is unknown. So there is no transformed-test figure:
`test_accuracy_transformed_test` is None.

Rescaling back to [0, 1] (param `mode`):
  * "global-mean" (default): x - mean_{y} + mean_all, clamped to [0, 1]. Every class then has
    the dataset's mean image, and pixel statistics stay those of natural images, so the
    model's built-in normalization and the recipe still fit.
  * "affine": (x - mean_{y} + 1) / 2, which maps [-1, 1] onto [0, 1] without clipping: lossless,
    but halves the contrast.

    from unlearnable.attacks.mean_sub import subtract_class_means
    x_s = subtract_class_means(protected.uint8_tensor(), torch.from_numpy(protected.labels), 10)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import UnlearnableError
from ..core.params import to_dict
from ..viz.plots import plot_weight_rows
from .base import AttackContext, register_attack, train_and_evaluate

MODES = ("global-mean", "affine")


@torch.no_grad()
def class_means(x: torch.Tensor, y: torch.Tensor, num_classes: int, chunk: int = 8192) -> torch.Tensor:
    """(K, C, H, W) float64 mean image of each class of x (uint8 or [0, 1] float, (N, C, H, W)).
    A class without samples gets the mean of all images."""
    sums = torch.zeros(num_classes, *x.shape[1:], dtype=torch.float64)
    for s in range(0, len(x), chunk):
        xc = x[s:s + chunk].to(torch.float64)
        sums.index_add_(0, y[s:s + chunk], xc / 255 if x.dtype == torch.uint8 else xc)
    counts = torch.bincount(y, minlength=num_classes).to(torch.float64)
    overall = sums.sum(0) / max(len(x), 1)
    means = sums / counts.clamp(min=1).view(-1, *([1] * (x.ndim - 1)))
    means[counts == 0] = overall
    return means


@torch.no_grad()
def subtract_class_means(x: torch.Tensor, y: torch.Tensor, num_classes: int, mode: str = "global-mean",
                         chunk: int = 8192) -> torch.Tensor:
    """x - mean_{y}, brought back into [0, 1] by `mode` (see the module docstring).

    x: (N, C, H, W) uint8 or float in [0, 1]; y: (N,) int64. Returns a new float32 tensor
    (one copy of the data; the means are K images).
    """
    if mode not in MODES:
        raise UnlearnableError(f"mean-sub: unknown mode {mode!r} (known: {', '.join(MODES)})")
    means = class_means(x, y, num_classes, chunk)
    counts = torch.bincount(y, minlength=num_classes).to(torch.float64)
    overall = (means * counts.view(-1, *([1] * (x.ndim - 1)))).sum(0) / max(len(x), 1)
    out = torch.empty(x.shape, dtype=torch.float32)
    for s in range(0, len(x), chunk):
        xc = x[s:s + chunk].to(torch.float64)
        if x.dtype == torch.uint8:
            xc /= 255
        xc -= means[y[s:s + chunk]]
        out[s:s + chunk] = (xc + overall).clamp_(0, 1) if mode == "global-mean" else (xc + 1) / 2
    return out


@dataclass
class MeanSubParams:
    """Parameters of the `mean-sub` attack: how the result is brought back into [0, 1] (`mode`:
    "global-mean", the default, or "affine"; see the module docstring) and images per pass (`chunk`)."""

    mode: str = "global-mean"
    chunk: int = 8192

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r} (known: {', '.join(MODES)})")


@register_attack("mean-sub", "subtract each class's mean image, then train (the paper's failing baseline)",
                 "Sandoval-Segura et al., NeurIPS 2023, App. A.4.4, arXiv:2305.19254", params_cls=MeanSubParams,
                 prior=0.2, family="projection", order=30, artifacts={"class_means": "class_means.png"})
def mean_sub(ctx: AttackContext, p: MeanSubParams) -> dict[str, Any]:
    """Subtract each class's mean image from its training images, then train on the result.

    Paper: Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?", NeurIPS 2023, App. A.4.4,
        https://arxiv.org/abs/2305.19254 (the baseline the paper shows does not work).
    Threat model: only the protected training set, as Orthogonal Projection; it cannot transform test inputs,
        whose label (hence the mean to subtract) is unknown.
    Args:
        mode ("global-mean"): back into [0, 1] by "global-mean" (add the overall mean, clamp) or "affine" ((x + 1) / 2)
        chunk (8192): images per pass
    Shapes: ctx.train images uint8 (N, H, W, C) with labels int64 (N,), trained on as float32 (N, C, H, W) in
        [0, 1]; returns a dict with test_accuracy (fraction, clean test set), test_loss, train_accuracy,
        seconds_train, test_accuracy_transformed_test (None), params_resolved and seconds_transform; writes
        class_means.png.
    Example:
        unlearnable attack mean-sub runs/lsp --recipe fast --out runs/lsp-mean-sub
    """
    ds = ctx.train
    x, y = ds.uint8_tensor(), torch.from_numpy(ds.labels)
    t0 = time.perf_counter()
    x_s = subtract_class_means(x, y, ds.num_classes, p.mode, p.chunk)
    seconds_transform = time.perf_counter() - t0
    # What was subtracted, relative to the average image: the analogue of ortho-proj's weights.png.
    means = class_means(x, y, ds.num_classes, p.chunk)
    plot_weight_rows((means - means.mean(0)).flatten(1).numpy(), ds.chw, ds.classes,
                     ctx.out_dir / "class_means.png", "class mean minus overall mean (min-max scaled)")
    _, trained = train_and_evaluate(ctx, (x_s, y))
    # No transformed-test figure: the class mean to subtract from a test image depends on its
    # (unknown) label.
    return {**trained, "test_accuracy_transformed_test": None, "params_resolved": to_dict(p),
            "seconds_transform": round(seconds_transform, 3)}
