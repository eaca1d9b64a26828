"""Entangled features (EntF): poisons made to survive adversarial training (Wen et al., ICLR 2023).

"Is Adversarial Training Really a Silver Bullet for Mitigating Data Poisoning?", Rui Wen,
Zhengyu Zhao, Zhuoran Liu, Michael Backes, Tianhao Wang, Yang Zhang, ICLR 2023,
https://openreview.net/forum?id=zKvm1ETDOq (code: WenRuiUSTC/EntF).

Threat model: l_inf <= 8/255 per image (held on the stored uint8 images); the defender
trains a *reference model adversarially* on its clean data and knows its feature space.

What the released code does, and this module with it (facts, not code):
1. Reference model: adversarial training with an l_inf 4/255 PGD adversary (10 steps of
   2/255), SGD lr 0.1, momentum 0.9, wd 5e-4, batch 128, 100 epochs with lr x0.1 at 75 and 90
   (this package's `adv` recipe).
2. Centroids: per class, the mean penultimate feature of the clean training images (eval mode).
3. Perturbation: 300 signed-gradient steps of 0.05 * eps (0.4/255) on an MSE objective in
   feature space, through differentiable random crop and flip, from a Gaussian start clipped
   to the ball. `mode=push` (the release's default recipe) pushes each sample's features away
   from its own class centroid; `mode=pull` pulls them to the nearest centroid of another class
   (recomputed at every step from the current features).
The release sweeps the whole set once per step (batch 128); the reference model is fixed and in
eval mode, so samples do not interact and running all steps on one batch before the next is
the same optimization (only the augmentation draws differ).

Units of resumable work: batches of `batch_size` images; the reference model is trained first
(per-epoch resume in work_dir/reference) and the finished uint8 images are the state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet
from ..ladder import recipe_for
from ..train import batch_crop, batch_flip_lr, fit
from ..train.loop import crop_padding_for
from ..train.pgd import adversarial_loss
from .base import PoisonContext, PoisonOutput, apply_delta, check_bound, get_poison, register_poison
from .crafting import (
    begin_crafting, crafting_model, crafting_summary, default_arch, peak_memory, seed_global, unit_generator,
)
from .hypo import batched_images
from .tap import clean_crafting_model

PAPER = ("Wen et al., Is Adversarial Training Really a Silver Bullet for Mitigating Data Poisoning?, "
         "ICLR 2023, https://openreview.net/forum?id=zKvm1ETDOq")
# The reference model's adversarial training at `paper`: the adv recipe (100 epochs, steps at 75, 90).
REFERENCE_RECIPE = {"paper": "adv"}


@dataclass
class EntFParams:
    """Parameters of `entf`: the feature-space perturbation and the adversarially trained reference
    model. The defaults, with the paper row of LEVEL_TABLE for the fields left at None, are the
    released code's."""

    mode: str = "push"  # push (away from the own centroid; the release's default) | pull
    eps: float = 8 / 255
    steps: int | None = None  # signed steps per sample (paper 300)
    step_ratio: float | None = None  # step in units of eps (paper 0.05)
    augment: bool = True  # differentiable random crop + flip inside every step
    ref_eps: float = 4 / 255  # the reference model's adversary
    ref_alpha: float = 2 / 255  # its step size
    ref_steps: int | None = None  # paper 10
    epochs: int | None = None  # reference-model training (paper 100, the `adv` recipe)
    arch: str = ""  # reference model; "" = resnet18 on CUDA, convnet on CPU
    checkpoint: str = ""  # an adversarially trained RUN_DIR or weights .pt instead of training one
    batch_size: int | None = None  # images per batch (a unit of resumable work; paper 128)

    def __post_init__(self) -> None:
        if self.mode not in ("push", "pull"):
            raise ValueError(f"mode must be push or pull, got {self.mode!r}")
        check_bound(self.eps)
        check_bound(self.ref_eps, "ref_eps")
        for k in ("steps", "ref_steps", "epochs", "batch_size"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1")


# Fields left at None take these values at each ladder level. epochs / ref_steps: the reference
# model's adversarial training (paper: the `adv` recipe's 100 epochs, a 10-step adversary).
# steps / step_ratio: the perturbation's signed steps.
LEVEL_TABLE = {
    "paper": {"steps": 300, "step_ratio": 0.05, "epochs": 100, "ref_steps": 10, "batch_size": 128},
    "quick": {"steps": 30, "step_ratio": 0.15, "epochs": 3, "ref_steps": 3, "batch_size": 256},
    "tiny": {"steps": 3, "step_ratio": 0.5, "epochs": 1, "ref_steps": 1, "batch_size": 64},
}


def reference_model(base: ImageSet, params: EntFParams, eff: dict[str, Any], ctx: PoisonContext,
                    dev: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The adversarially trained reference model: loaded from `checkpoint`, or trained here."""
    if params.checkpoint:
        return clean_crafting_model(base, params, eff, ctx, dev)
    rec = recipe_for(ctx.level, own=get_poison("entf").recipes[ctx.level], epochs=eff["epochs"])
    adv = {"eps": eff["ref_eps"], "steps": eff["ref_steps"], "alpha": eff["ref_alpha"]}
    model = crafting_model(base, params.arch or default_arch(dev), dev, ctx.seed)
    out = Path(ctx.work_dir) / "reference" if ctx.work_dir is not None else None
    res = fit(model, (base.uint8_tensor(), torch.from_numpy(base.labels)), None, rec, ctx.seed,
              out_dir=out, device=dev, progress=ctx.progress, save_checkpoints=False,
              batch_loss=adversarial_loss(**adv), desc="entf: adversarially trained reference model")
    return model, {"adversarially_trained": {"recipe": rec.to_dict(), **adv, "train_accuracy": res.train_accuracy}}


@torch.no_grad()
def class_centroids(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, k: int,
                    batch_size: int = 500) -> torch.Tensor:
    """(K, D): each class's mean feature (eval mode); a class without samples gets zeros."""
    model.eval()
    feats = torch.cat([model.features(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])
    sums = torch.zeros(k, feats.shape[1], device=feats.device).index_add_(0, y, feats)
    counts = torch.bincount(y, minlength=k).clamp_min(1).unsqueeze(1)
    return sums / counts


def targets_for(feats: torch.Tensor, y: torch.Tensor, centroids: torch.Tensor, mode: str) -> torch.Tensor:
    """Each sample's target centroid: its own (push) or the nearest of another class (pull)."""
    if mode == "push":
        return centroids[y]
    dist = torch.cdist(feats, centroids)
    dist[torch.arange(len(y)), y] = float("inf")
    return centroids[dist.argmin(1)]


def feature_distances(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, centroids: torch.Tensor,
                      batch_size: int = 500) -> dict[str, float]:
    """Mean distance of x's features to their own class centroid and to the nearest other one."""
    own, other = [], []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            f = model.features(x[s:s + batch_size])
            yb = y[s:s + batch_size]
            own.append((f - centroids[yb]).norm(dim=1))
            other.append((f - targets_for(f, yb, centroids, "pull")).norm(dim=1))
    return {"to_own_centroid": float(torch.cat(own).mean()),
            "to_nearest_other_centroid": float(torch.cat(other).mean())}


@register_poison("entf", EntFParams, "sample-wise",
                 "Entangled features: push features from their class centroid (or pull to another's) "
                 "of an adversarially trained model, l_inf 8/255",
                 PAPER, model_based=True, fills=LEVEL_TABLE, recipes=REFERENCE_RECIPE)
def entf(base: ImageSet, params: EntFParams, ctx: PoisonContext) -> PoisonOutput:
    """EntF-push (default) or EntF-pull: features moved relative to class centroids, sample-wise.

    Paper: Wen et al., Is Adversarial Training Really a Silver Bullet for Mitigating Data Poisoning?,
        ICLR 2023, https://openreview.net/forum?id=zKvm1ETDOq
    Threat model: the defender (the data owner) perturbs every training image within l_inf <= eps
        (8/255) on the stored uint8 images, in the feature space of its own adversarially trained
        reference model (trained here on the clean data, or a given checkpoint); labels, test set
        and learner are out of its hands.
    Args:
        mode ("push"): push = away from the own class centroid (the release's default) | pull =
            to the nearest centroid of another class
        eps (8/255): l_inf bound of the perturbation
        steps (level; paper 300): signed steps per sample
        step_ratio (level; paper 0.05): step size in units of eps
        augment (True): differentiable random crop + flip inside every step
        ref_eps (4/255): l_inf radius of the reference model's PGD adversary
        ref_alpha (2/255): its step size
        ref_steps (level; paper 10): its steps
        epochs (level; paper 100): reference-model training (the `adv` recipe at paper)
        arch (""): reference model; "" = resnet18 on CUDA, convnet on CPU
        checkpoint (""): an adversarially trained RUN_DIR or weights .pt instead of training one
        batch_size (level; paper 128): images per batch (a unit of resumable work)
    Shapes: base images uint8 (N, H, W, C), any size and class count; centroids (K, D) of the
        reference model's D features; returns PoisonOutput with images uint8 (N, H, W, C) aligned
        with base and an info dict with norm ("linf"), eps, mode, device, arch, reference
        (checkpoint or training record), level, effective_params, features (distances to the
        centroids, clean and protected), crafting_model (its loss and accuracy on clean and
        protected images), seconds_this_run and peak_memory.
    Example:
        unlearnable poison entf --dataset fashion-mnist --level quick --param mode=pull --out runs/entf
    """
    t0 = time.perf_counter()
    eff, dev, ck, state = begin_crafting("entf", params, ctx, base)
    model, model_info = reference_model(base, params, eff, ctx, dev)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = base.to_tensor(dev)
    centroids = class_centroids(model, x, y, base.num_classes)
    eps, alpha = eff["eps"], eff["step_ratio"] * eff["eps"]
    pad = crop_padding_for(4, x.shape[-1])

    def craft(bi: int, sl: slice) -> np.ndarray:
        g = unit_generator(ctx.seed, 2, bi)
        seed_global(ctx.seed, 2, bi)
        xb, yb = x[sl], y[sl]
        d = (torch.randn(xb.shape, generator=g).to(dev) * eps).clamp(-eps, eps)
        d = (xb + d).clamp(0, 1) - xb
        for _ in range(eff["steps"]):
            d.requires_grad_(True)
            xin = xb + d
            if params.augment:
                xin = batch_crop(batch_flip_lr(xin, g), g, pad)
            f = model.features(xin)
            loss = F.mse_loss(f, targets_for(f.detach(), yb, centroids, params.mode))
            if params.mode == "push":
                loss = -loss
            (grad,) = torch.autograd.grad(loss, d)
            with torch.no_grad():
                d = (d - alpha * grad.sign()).clamp(-eps, eps)
                d = (xb + d).clamp(0, 1) - xb
        return apply_delta(xb.cpu(), d.detach().cpu(), eps)

    out = batched_images(base, ctx, ck, state, eff["batch_size"], f"entf-{params.mode} batches", craft)
    xp = torch.from_numpy(out).permute(0, 3, 1, 2).float().div(255).to(dev)
    info = {
        "norm": "linf", "eps": eps, "mode": params.mode, "device": str(dev),
        "arch": model_info.get("arch", params.arch or default_arch(dev)), "reference": model_info,
        "level": ctx.level, "effective_params": eff,
        "features": {"clean": feature_distances(model, x, y, centroids),
                     "protected": feature_distances(model, xp, y, centroids)},
        "crafting_model": crafting_summary(model, x, y, out, dev),
        "seconds_this_run": round(time.perf_counter() - t0, 3), "peak_memory": peak_memory(dev),
    }
    for p in model.parameters():
        p.requires_grad_(True)
    return PoisonOutput(out, info)
