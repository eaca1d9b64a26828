"""Adversarial Poisoning (TAP): error-maximizing, class-targeted PGD (Fowl et al., NeurIPS 2021).

"Adversarial Examples Make Strong Poisons", Liam Fowl, Micah Goldblum, Ping-yeh Chiang, Jonas
Geiping, Wojciech Czaja, Tom Goldstein, NeurIPS 2021, https://arxiv.org/abs/2106.10807.

Threat model: l_inf <= 8/255 per image (held on the stored uint8 images); the defender has a
crafting model trained on the clean data (or any checkpoint of `unlearnable train`).

As the original (lhfowl/adversarial_poisons, `anneal.py --recipe targeted --attackoptim PGD`):
each image is pushed toward class (y + 1) mod K (targeted, the default; `targeted=false` ascends
the loss of y instead) by 250 signed steps of 0.05 * eps (tau) from a Gaussian start
(N(0, eps^2) clipped to the ball, the original's `--init randn`), in batches of 512, with a
differentiable random flip and shift inside every step, the crafting model in eval mode. Of 8
restarts of the whole set the original keeps the *one* whose mean (augmented) objective over the
batches is lowest (`select=trial`); `select=sample` keeps, per image, the restart with the lowest
un-augmented objective. Differences kept: the objective of a restart is measured after its last
step (the original sums the losses seen during the last step); the shift is an integer crop of
the zero-padded image (4 px at 32 px) where the original resamples bilinearly by up to the same
distance.

Units of resumable work: (restart, batch) pairs, restart by restart; the crafting model is
trained first (its own per-epoch resume in work_dir/crafting); the state is the best finished
uint8 images so far, the current restart's, and their objectives.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UnlearnableError
from ..data.imageset import ImageSet
from ..ladder import recipe_for
from ..train import batch_crop, batch_flip_lr, checkpoint_paths, fit, load_run, load_weights
from ..train.loop import crop_padding_for
from ..train.pgd import pgd
from .base import PoisonContext, PoisonOutput, apply_delta, check_bound, register_poison
from .crafting import (
    begin_crafting, crafting_model, crafting_summary, default_arch, peak_memory, progress_bar, seed_global,
    unit_generator,
)

PAPER = "Fowl et al., Adversarial Examples Make Strong Poisons, NeurIPS 2021, https://arxiv.org/abs/2106.10807"
SUMMARY = ("Adversarial Poisoning: error-maximizing PGD toward (y+1) mod K against a model trained on "
           "clean data, l_inf 8/255, restarts, differentiable augmentation")
# Fields left at None take these values at each ladder level. epochs: of the crafting model on
# clean data, trained with the level's recipe (the paper's section 4.2 recipe: 40).
LEVEL_TABLE = {
    "paper": {"steps": 250, "step_ratio": 0.05, "restarts": 8, "epochs": 40, "batch_size": 512},
    "quick": {"steps": 20, "step_ratio": 0.1, "restarts": 1, "epochs": 3, "batch_size": 256},
    # A few steps of everything: enough for tests to see the mechanism.
    "tiny": {"steps": 3, "step_ratio": 0.05, "restarts": 2, "epochs": 1, "batch_size": 64},
}


@dataclass
class TAPParams:
    """Parameters of `tap`: the PGD attack and its crafting model. The defaults, with the paper row
    of LEVEL_TABLE for the fields left at None, are the original's (`anneal.py`, targeted PGD)."""

    eps: float = 8 / 255
    steps: int | None = None  # PGD steps (paper 250)
    step_ratio: float | None = None  # step size in units of eps (paper 0.05)
    restarts: int | None = None  # random restarts, lowest loss kept (paper 8)
    targeted: bool = True  # toward (y + 1) mod K; false: maximize the loss of y
    augment: bool = True  # differentiable random flip + crop inside each PGD step
    arch: str = ""  # crafting model; "" = resnet18 on CUDA, convnet on CPU
    checkpoint: str = ""  # RUN_DIR of `unlearnable train` on clean data, or a weights .pt
    epochs: int | None = None  # crafting-model training when no checkpoint (paper recipe, 40)
    batch_size: int | None = None  # images per PGD batch (a unit of resumable work; the original's 512)
    select: str = "trial"  # trial: the restart with the lowest mean objective (the original) | sample
    start: str = "randn"  # randn: N(0, eps^2) clipped (the original's --init) | uniform in the ball

    def __post_init__(self) -> None:
        check_bound(self.eps)
        if self.select not in ("trial", "sample"):
            raise ValueError(f"select must be trial or sample, got {self.select!r}")
        if self.start not in ("randn", "uniform"):
            raise ValueError(f"start must be randn or uniform, got {self.start!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


class Augmented(nn.Module):
    """model(crop(flip(x))) with fresh draws from `gen` at every call; differentiable in x."""

    def __init__(self, model: nn.Module, gen: torch.Generator):
        super().__init__()
        self.model, self.gen = model, gen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = batch_flip_lr(x, self.gen)
        return self.model(batch_crop(x, self.gen, crop_padding_for(4, x.shape[-1])))


def clean_crafting_model(base: ImageSet, params: TAPParams, eff: dict[str, Any], ctx: PoisonContext,
                         dev: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The crafting model: loaded from `params.checkpoint`, or trained on the clean `base`."""
    if params.checkpoint:
        path = Path(params.checkpoint)
        if path.is_dir():
            spec, _ = load_run(path)
            if (spec.num_classes, spec.in_channels, tuple(spec.image_size)) != \
                    (base.num_classes, base.channels, tuple(base.image_size)):
                raise UnlearnableError(f"{path}: model for {spec.in_channels}x{spec.image_size} images "
                                       f"of {spec.num_classes} classes does not fit this dataset")
            ckpts = checkpoint_paths(path)
            if not ckpts:
                raise UnlearnableError(f"{path}: no checkpoints in this run directory")
            model = crafting_model(base, spec.arch, dev, ctx.seed)
            load_weights(model, ckpts[-1][1])
            return model.to(dev), {"checkpoint": str(ckpts[-1][1].resolve()), "arch": spec.arch}
        model = crafting_model(base, params.arch or default_arch(dev), dev, ctx.seed)
        load_weights(model, path)
        return model.to(dev), {"checkpoint": str(path.resolve())}
    recipe = recipe_for(ctx.level, epochs=eff["epochs"])
    model = crafting_model(base, params.arch or default_arch(dev), dev, ctx.seed)
    out = Path(ctx.work_dir) / "crafting" if ctx.work_dir is not None else None
    res = fit(model, (base.uint8_tensor(), torch.from_numpy(base.labels)), None, recipe, ctx.seed,
              out_dir=out, device=dev, progress=ctx.progress, save_checkpoints=False,
              desc="tap: crafting model on clean data")
    return model, {"trained_on_clean": {"recipe": recipe.to_dict(), "train_accuracy": res.train_accuracy}}


@register_poison("tap", TAPParams, "sample-wise", SUMMARY, PAPER, model_based=True, paper_name="ap",
                 fills=LEVEL_TABLE)
def tap(base: ImageSet, params: TAPParams, ctx: PoisonContext) -> PoisonOutput:
    """Targeted adversarial poisoning (TAP): per image, PGD toward class (y + 1) mod K, sample-wise.

    Paper: Fowl et al., Adversarial Examples Make Strong Poisons, NeurIPS 2021,
        https://arxiv.org/abs/2106.10807
    Threat model: the defender (the data owner) perturbs every training image within l_inf <= eps
        (8/255) on the stored uint8 images, against its own crafting model trained on the clean
        data (or any checkpoint of `unlearnable train`); labels, test set and learner are out of
        its hands.
    Args:
        eps (8/255): l_inf bound of the perturbation
        steps (level; paper 250): PGD steps
        step_ratio (level; paper 0.05): PGD step size in units of eps
        restarts (level; paper 8): random restarts of the whole set; see select
        targeted (True): toward (y + 1) mod K; False = maximize the loss of y
        augment (True): differentiable random flip + crop inside each PGD step
        arch (""): crafting model; "" = resnet18 on CUDA, convnet on CPU
        checkpoint (""): RUN_DIR of `unlearnable train` on clean data, or a weights .pt; "" = train
            the crafting model here
        epochs (level; paper 40): crafting-model training when no checkpoint (the level's recipe)
        batch_size (level; paper 512): images per PGD batch (a unit of resumable work)
        select ("trial"): trial = the restart with the lowest mean objective (the original) |
            sample = per image, the restart with the lowest un-augmented objective
        start ("randn"): randn = N(0, eps^2) clipped to the ball (the original's --init) | uniform
            in the ball
    Shapes: base images uint8 (N, H, W, C), any size and class count; x (N, C, H, W); returns
        PoisonOutput with images uint8 (N, H, W, C) aligned with base and an info dict with norm
        ("linf"), eps, targeted, device, arch, crafting (checkpoint or training record), level,
        effective_params, restart_objectives, select, crafting_model (its loss and accuracy on
        clean and protected images), seconds_this_run and peak_memory.
    Example:
        unlearnable poison tap --dataset fashion-mnist --out runs/tap --seed 0
    """
    t0 = time.perf_counter()
    eff, dev, ck, state = begin_crafting("tap", params, ctx, base)
    model, model_info = clean_crafting_model(base, params, eff, ctx, dev)
    model.eval()
    x, y = base.to_tensor(dev)
    n, k = len(x), base.num_classes
    eps, alpha = eff["eps"], eff["step_ratio"] * eff["eps"]
    bs = eff["batch_size"]
    nb, restarts = math.ceil(n / bs), eff["restarts"]
    per_sample = params.select == "sample"
    # Restart by restart over the whole set: `best` holds the images of the best restart so far
    # (per image with select=sample), `cur` the current restart's batches.
    best, cur = base.images.copy(), np.empty_like(base.images)
    best_obj = torch.full((n,) if per_sample else (), math.inf, dtype=torch.float64)
    cur_obj = torch.zeros(n, dtype=torch.float64)
    scores = torch.full((restarts,), math.nan, dtype=torch.float64)  # each restart's mean objective
    unit = 0
    if state is not None:
        unit = int(state["done"])
        best[:], cur[:] = state["best"].numpy(), state["cur"].numpy()
        best_obj, cur_obj, scores = state["best_obj"], state["cur_obj"], state["scores"]

    def state_fn() -> dict[str, Any]:
        return {"done": unit, "best": torch.from_numpy(best.copy()), "cur": torch.from_numpy(cur.copy()),
                "best_obj": best_obj.clone(), "cur_obj": cur_obj.clone(), "scores": scores.clone()}

    bar = progress_bar(ctx, restarts * nb, "tap (restart, batch)", unit)
    try:
        while unit < restarts * nb:
            r, bi = divmod(unit, nb)
            sl = slice(bi * bs, min((bi + 1) * bs, n))
            xb, yb = x[sl], y[sl]
            target = (yb + 1) % k if params.targeted else None
            g = unit_generator(ctx.seed, 2, bi, r)
            seed_global(ctx.seed, 2, bi, r)
            fwd = Augmented(model, g) if params.augment else model
            if params.start == "randn":
                init = (torch.randn(xb.shape, generator=g) * eps).clamp(-eps, eps).to(dev)
            else:
                init = ((torch.rand(xb.shape, generator=g) * 2 - 1) * eps).to(dev)
            xa = pgd(fwd, xb, yb, eps, alpha, eff["steps"], targeted=target, delta_init=init)
            with torch.no_grad():
                # The objective the restart is judged by: the original's is the augmented
                # target loss, averaged over batches; per image, the un-augmented one.
                logits = model(xa) if per_sample else fwd(xa)
                obj = (F.cross_entropy(logits, target, reduction="none") if target is not None
                       else -F.cross_entropy(logits, yb, reduction="none"))
            cur[sl] = apply_delta(xb.cpu(), (xa - xb).cpu(), eps)
            cur_obj[sl] = obj.double().cpu()
            unit += 1
            if bi == nb - 1:  # a restart finished: keep it where it is better
                scores[r] = torch.stack([cur_obj[i * bs:(i + 1) * bs].mean() for i in range(nb)]).mean()
                if per_sample:
                    better = cur_obj < best_obj
                    best[better.numpy()] = cur[better.numpy()]
                    best_obj = torch.where(better, cur_obj, best_obj)
                elif scores[r] < best_obj:
                    best[:], best_obj = cur, scores[r].clone()
            bar.update(1)
            bar.set_postfix(restart=r, objective=f"{float(obj.mean()):.3f}")
            ck.step(unit, state_fn)
    finally:
        bar.close()
    out = best
    info = {
        "norm": "linf", "eps": eps, "targeted": params.targeted, "device": str(dev),
        "arch": model_info.get("arch", params.arch or default_arch(dev)), "crafting": model_info,
        "level": ctx.level, "effective_params": eff,
        "restart_objectives": [float(v) for v in scores], "select": params.select,
        "crafting_model": crafting_summary(model, x, y, out, dev),
        "seconds_this_run": round(time.perf_counter() - t0, 3), "peak_memory": peak_memory(dev),
    }
    return PoisonOutput(out, info)
