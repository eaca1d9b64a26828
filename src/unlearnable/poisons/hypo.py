"""Hypocritical perturbations (HYPO): error-minimizing noise against a model trained on clean data.

"Better Safe Than Sorry: Preventing Delusive Adversaries with Adversarial Training", Lue Tao,
Lei Feng, Jinfeng Yi, Sheng-Jun Huang, Songcan Chen, NeurIPS 2021,
https://arxiv.org/abs/2102.04716 (code: TLMichael/Delusive-Adversary; APBench runs it as `hypo`).

Threat model: l_inf <= 8/255 per image (held on the stored uint8 images); the defender has a
crafting model trained on its clean data.

One descent, no bi-level loop: each image moves by 100 signed-gradient steps of eps/10
*down* the cross-entropy of its own label, from zero (no random start), projected to the ball
and to [0, 1] after every step. The crafting model is in eval mode and fixed. These are the
settings of APBench's `hypo` and of the authors' 2022 release (`--poison_type Hyp`); the 2021
release uses the same loop with an l2 ball. Crafting model: trained on the clean set with the
level's recipe for `epochs` (the 2022 release's crafting model: 10 epochs), or any checkpoint
of `unlearnable train` (`checkpoint=RUN_DIR`).

Units of resumable work: batches of `batch_size` images; the crafting model is trained first
(its own per-epoch resume in work_dir/crafting) and the finished uint8 images are the state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.imageset import ImageSet
from ..train.pgd import pgd
from .base import PoisonContext, PoisonOutput, apply_delta, check_bound, register_poison
from .crafting import (
    Resumable, begin_crafting, crafting_summary, default_arch, peak_memory, progress_bar, seed_global,
)
from .tap import clean_crafting_model

PAPER = ("Tao et al., Better Safe Than Sorry: Preventing Delusive Adversaries with Adversarial "
         "Training, NeurIPS 2021, https://arxiv.org/abs/2102.04716")
LEVEL_TABLE = {
    "paper": {"steps": 100, "step_ratio": 0.1, "epochs": 10, "batch_size": 256},
    "quick": {"steps": 20, "step_ratio": 0.25, "epochs": 2, "batch_size": 256},
    # A few steps of everything: enough for tests to see the mechanism.
    "tiny": {"steps": 3, "step_ratio": 0.5, "epochs": 1, "batch_size": 64},
}


@dataclass
class HYPOParams:
    """Parameters of `hypo`: the descent and its crafting model. eps, steps, step_ratio and epochs
    default (the paper row of LEVEL_TABLE for those at None) to APBench's and the 2022 release's."""

    eps: float = 8 / 255
    steps: int | None = None  # descent steps (paper 100)
    step_ratio: float | None = None  # step size in units of eps (paper 0.1: 0.8/255)
    arch: str = ""  # crafting model; "" = resnet18 on CUDA, convnet on CPU
    checkpoint: str = ""  # RUN_DIR of `unlearnable train` on clean data, or a weights .pt
    epochs: int | None = None  # crafting-model training when no checkpoint (paper 10)
    batch_size: int | None = None  # images per batch (a unit of resumable work; paper 256)

    def __post_init__(self) -> None:
        check_bound(self.eps)
        for k in ("steps", "batch_size", "epochs"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1")


def batched_images(base: ImageSet, ctx: PoisonContext, ck: Resumable, state: dict[str, Any] | None,
                   batch_size: int, desc: str, craft: Callable[[int, slice], np.ndarray]) -> np.ndarray:
    """uint8 NHWC images made `batch_size` at a time by `craft(batch_index, slice)`, resumed from
    `state` (what `crafting.begin_crafting` read) and saved to `ck` (the finished images are the state)."""
    n = len(base)
    out = np.empty_like(base.images)
    nb = math.ceil(n / batch_size)
    start = 0
    if state is not None:
        start = int(state["done"])
        out[: min(start * batch_size, n)] = state["images"].numpy()
    bar = progress_bar(ctx, nb, desc, start)
    try:
        for bi in range(start, nb):
            sl = slice(bi * batch_size, min((bi + 1) * batch_size, n))
            out[sl] = craft(bi, sl)
            bar.update(1)
            ck.step(bi + 1, lambda: {"done": bi + 1, "images": torch.from_numpy(out[: sl.stop].copy())})
    finally:
        bar.close()
    return out


@register_poison("hypo", HYPOParams, "sample-wise",
                 "Hypocritical perturbations: 100 PGD descent steps on the true label against a model "
                 "trained on clean data, l_inf 8/255",
                 PAPER, model_based=True, fills=LEVEL_TABLE)
def hypo(base: ImageSet, params: HYPOParams, ctx: PoisonContext) -> PoisonOutput:
    """Hypocritical (error-minimizing, fixed-model) perturbations, sample-wise, l_inf <= eps.

    Paper: Tao et al., Better Safe Than Sorry: Preventing Delusive Adversaries with Adversarial
        Training, NeurIPS 2021, https://arxiv.org/abs/2102.04716
    Threat model: as `tap`'s, with the loss descended instead of ascended: the data owner moves
        each stored uint8 training image within l_inf <= eps (8/255) against a model of its own on
        the clean data (or any checkpoint of `unlearnable train`); the learner, the labels and the
        test set are not its to choose.
    Args:
        eps (8/255): l_inf bound of the perturbation
        steps (level; paper 100): signed descent steps on the cross-entropy of the true label
        step_ratio (level; paper 0.1): step size in units of eps (0.8/255 at eps 8/255)
        arch (""): crafting model; "" = resnet18 on CUDA, convnet on CPU
        checkpoint (""): RUN_DIR of `unlearnable train` on clean data, or a weights .pt; "" = train
            the crafting model here
        epochs (level; paper 10): crafting-model training when no checkpoint (the level's recipe)
        batch_size (level; paper 256): images per batch (a unit of resumable work)
    Shapes: base images uint8 (N, H, W, C), any size and class count; returns PoisonOutput with
        images uint8 (N, H, W, C) aligned with base and an info dict with norm ("linf"), eps,
        device, arch, crafting (checkpoint or training record), level, effective_params,
        crafting_model (its loss and accuracy on clean and protected images), seconds_this_run and
        peak_memory.
    Example:
        unlearnable poison hypo --dataset fashion-mnist --param checkpoint=runs/clean --out runs/hypo
    """
    t0 = time.perf_counter()
    eff, dev, ck, state = begin_crafting("hypo", params, ctx, base)
    model, model_info = clean_crafting_model(base, params, eff, ctx, dev)
    model.eval()
    x, y = base.to_tensor(dev)
    eps, alpha = eff["eps"], eff["step_ratio"] * eff["eps"]

    def craft(bi: int, sl: slice) -> np.ndarray:
        seed_global(ctx.seed, 2, bi)
        xa = pgd(model, x[sl], y[sl], eps, alpha, eff["steps"], random_start=False, minimize=True)
        return apply_delta(x[sl].cpu(), (xa - x[sl]).cpu(), eps)

    out = batched_images(base, ctx, ck, state, eff["batch_size"], "hypo batches", craft)
    info = {
        "norm": "linf", "eps": eps, "device": str(dev),
        "arch": model_info.get("arch", params.arch or default_arch(dev)),
        "crafting": model_info, "level": ctx.level, "effective_params": eff,
        "crafting_model": crafting_summary(model, x, y, out, dev),
        "seconds_this_run": round(time.perf_counter() - t0, 3), "peak_memory": peak_memory(dev),
    }
    return PoisonOutput(out, info)
