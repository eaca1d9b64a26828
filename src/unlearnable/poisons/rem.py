"""Robust Unlearnable Examples (REM): robust error-minimizing noise (Fu et al., ICLR 2022).

"Robust Unlearnable Examples: Protecting Data Against Adversarial Learning", Shaopeng Fu,
Fengxiang He, Yang Liu, Li Shen, Dacheng Tao, ICLR 2022, https://arxiv.org/abs/2203.14533.

Threat model: l_inf <= 8/255 defensive noise per image (held on the stored uint8 images),
meant to survive adversarial training with a smaller radius (4/255).

Min-min-max, as the released generator (fshp971/robust-unlearnable-examples,
`generate_robust_em.py` with `scripts/cifar10/gen_rem.sh`) runs it: for `train_steps` SGD steps
(batch 128, lr 0.1 x0.1 every `lr_decay_steps`, momentum 0.9, weight decay 5e-4 on every
parameter) the crafting model is adversarially trained on T(x + delta_def) + delta_adv,
delta_adv an inner PGD adversary (4/255, 10 steps of 0.8/255, uniform random start), T a random
crop + flip; every `perturb_freq` steps (the script leaves it at 1: every step) the current
batch's delta_def is regenerated and stored rounded to grey levels (the original keeps it as
int8). The defender: from a uniform random start in the 8/255 ball, 10 signed descent steps of
1.6/255 on the loss of the adversarial examples, the gradient summed over 5 draws of T
(expectation over transformations); delta_def is projected onto the ball only (x + delta is
clipped when used). At the end delta_def is regenerated for the whole set with the final model:
that is the published noise. (The original's final pass reuses its drop-last loader, so the
images of the last partial batch keep their training-time noise; here every image is
regenerated.)

Units of resumable work: `perturb_freq` training steps each, then batches of the final pass.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.imageset import ImageSet
from ..train import batch_crop, batch_flip_lr
from ..train.loop import crop_padding_for
from ..train.pgd import pgd
from .base import PoisonContext, PoisonOutput, apply_delta, register_poison
from .crafting import (
    begin_crafting, cpu_state, crafting_model, crafting_summary, default_arch, device_of, peak_memory,
    progress_bar, seed_global, sgd, unit_generator,
)

# Fields left at None take these values at each ladder level.
LEVEL_TABLE = {
    "paper": {"train_steps": 5000, "samples": 5, "def_steps": 10, "def_alpha": 1.6 / 255,
              "adv_steps": 10, "adv_alpha": 0.8 / 255, "perturb_freq": 1, "batch_size": 128},
    # Same radii, fewer steps of proportionally larger size, 2 EOT draws.
    "quick": {"train_steps": 100, "samples": 2, "def_steps": 5, "def_alpha": 3.2 / 255,
              "adv_steps": 3, "adv_alpha": 2 / 255, "perturb_freq": 10, "batch_size": 128},
    # A few steps of everything (the paper's step sizes): enough for tests to see the mechanism.
    "tiny": {"train_steps": 4, "samples": 2, "def_steps": 2, "def_alpha": 1.6 / 255,
             "adv_steps": 1, "adv_alpha": 0.8 / 255, "perturb_freq": 2, "batch_size": 64},
}


PAPER = ("Fu et al., Robust Unlearnable Examples: Protecting Data Against Adversarial Learning, ICLR 2022, "
         "https://arxiv.org/abs/2203.14533")
SUMMARY = ("Robust Unlearnable Examples: min-min-max error-minimizing noise 8/255 against a 4/255 adversary, "
           "expectation over 5 augmentations")


@dataclass
class REMParams:
    """Parameters of `rem`: the defensive noise, the inner adversary and the crafting model's
    training. The defaults, with the paper row of LEVEL_TABLE for the fields left at None, are the
    released generator's (`scripts/cifar10/gen_rem.sh`)."""

    eps: float = 8 / 255  # defensive noise radius
    adv_eps: float = 4 / 255  # inner adversary radius
    def_steps: int | None = None  # paper 10
    def_alpha: float | None = None  # paper 1.6/255
    adv_steps: int | None = None  # paper 10
    adv_alpha: float | None = None  # paper 0.8/255
    samples: int | None = None  # EOT draws of the augmentation (paper 5)
    train_steps: int | None = None  # crafting-model SGD steps (paper 5000)
    perturb_freq: int | None = None  # regenerate the batch's noise every this many steps (paper 1)
    batch_size: int | None = None  # paper 128
    lr: float = 0.1
    lr_decay_steps: int = 2000  # lr x0.1 every this many steps
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True  # T = random crop + flip (false: identity, one sample suffices)
    random_start: bool = True  # defender and adversary start uniform in their balls (the script's)
    decay_all: bool = True  # weight decay on every parameter (false: not on BatchNorm and biases)
    arch: str = ""  # crafting model; "" = resnet18 on CUDA, convnet on CPU

    def __post_init__(self) -> None:
        if not 0 < self.eps <= 1 or not 0 <= self.adv_eps <= 1:
            raise ValueError("eps must be in (0, 1] and adv_eps in [0, 1]")
        if any(v is not None and v < 1 for v in (self.perturb_freq, self.batch_size)):
            raise ValueError("perturb_freq and batch_size must be at least 1")


def _transform(x: torch.Tensor, gen: torch.Generator, augment: bool) -> torch.Tensor:
    if not augment:
        return x
    return batch_crop(batch_flip_lr(x, gen), gen, crop_padding_for(4, x.shape[-1]))


def defend(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eff: dict[str, Any],
           gen: torch.Generator, augment: bool = True, random_start: bool = True) -> torch.Tensor:
    """Robust error-minimizing delta (B, C, H, W) for a batch: min over delta of
    E_T max_{|adv| <= adv_eps} CE(model(T(x + delta) + adv), y). Model in eval mode.
    `random_start`: delta and each inner adversary start uniform in their balls (the original)."""
    model.eval()
    delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eff["eps"]).to(x.device) if random_start \
        else torch.zeros_like(x)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(eff["def_steps"]):
            grad = torch.zeros_like(x)
            for _ in range(eff["samples"]):
                d = delta.detach().requires_grad_(True)
                xt = _transform((x + d).clamp(0, 1), gen, augment)
                adv = pgd(model, xt.detach(), y, eff["adv_eps"], eff["adv_alpha"], eff["adv_steps"],
                          random_start=random_start, gen=gen) - xt.detach() if eff["adv_steps"] > 0 else 0
                loss = F.cross_entropy(model(xt + adv), y)
                grad += torch.autograd.grad(loss, d)[0]
            delta = (delta - eff["def_alpha"] * grad.sign()).clamp(-eff["eps"], eff["eps"])
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return delta.detach()


@register_poison("rem", REMParams, "sample-wise", SUMMARY, PAPER, model_based=True, fills=LEVEL_TABLE)
def rem(base: ImageSet, params: REMParams, ctx: PoisonContext) -> PoisonOutput:
    """Robust error-minimizing noise (REM): min-min-max noise meant to survive adversarial training.

    Paper: Fu et al., Robust Unlearnable Examples: Protecting Data Against Adversarial Learning,
        ICLR 2022, https://arxiv.org/abs/2203.14533
    Threat model: the defender (the data owner) perturbs every training image within l_inf <= eps
        (8/255) on the stored uint8 images, crafting the noise with its own adversarially trained
        model (ctx.device, resumable in ctx.work_dir), meant to survive adversarial training with
        a smaller radius (adv_eps, 4/255); labels, test set and learner are out of its hands.
    Args:
        eps (8/255): l_inf radius of the defensive noise
        adv_eps (4/255): l_inf radius of the inner adversary
        def_steps (level; paper 10): the defender's signed descent steps
        def_alpha (level; paper 1.6/255): the defender's step size
        adv_steps (level; paper 10): the inner adversary's PGD steps
        adv_alpha (level; paper 0.8/255): the inner adversary's step size
        samples (level; paper 5): draws of the augmentation per defender step (expectation over
            transformations)
        train_steps (level; paper 5000): crafting-model SGD steps
        perturb_freq (level; paper 1): regenerate the current batch's noise every this many steps
        batch_size (level; paper 128): crafting batches
        lr (0.1): the crafting model's SGD learning rate
        lr_decay_steps (2000): lr x0.1 every this many steps
        momentum (0.9): its SGD momentum
        weight_decay (5e-4): its weight decay (see decay_all)
        augment (True): T = random crop + flip; False = identity (one sample suffices)
        random_start (True): defender and adversary start uniform in their balls (the script's)
        decay_all (True): weight decay on every parameter (False: not on BatchNorm and biases)
        arch (""): crafting model; "" = resnet18 on CUDA, convnet on CPU
    Shapes: base images uint8 (N, H, W, C), any size and class count; x (N, C, H, W); returns
        PoisonOutput with images uint8 (N, H, W, C) aligned with base and an info dict with norm
        ("linf"), eps, adv_eps, arch, device, level, effective_params, crafting_model (its loss and
        accuracy on clean and protected images), seconds_this_run and peak_memory.
    Example:
        unlearnable poison rem --dataset fashion-mnist --out runs/rem --seed 0
    """
    t0 = time.perf_counter()
    arch = params.arch or default_arch(device_of(ctx))
    eff, dev, ck, state = begin_crafting("rem", params, ctx, base, extra={"arch": arch})
    x, y = base.to_tensor(dev)
    n = len(x)
    bs = min(eff["batch_size"], n)
    freq = eff["perturb_freq"]
    spe = n // bs  # the released loader drops the last partial batch
    model = crafting_model(base, arch, dev, ctx.seed)
    opt = sgd(model, params.lr, params.momentum, params.weight_decay, decay_all=params.decay_all)
    noise = torch.zeros_like(x)
    periods = math.ceil(eff["train_steps"] / freq)
    nb = math.ceil(n / bs)
    out = np.empty_like(base.images)
    unit = 0
    if state is not None:
        unit = int(state["unit"])
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        noise = state["noise"].to(dev)
        out[:] = state["images"].numpy()

    def state_fn() -> dict[str, Any]:
        return {"unit": unit, "model": cpu_state(model), "optimizer": cpu_state(opt),
                "noise": noise.cpu(), "images": torch.from_numpy(out.copy())}

    bar = progress_bar(ctx, periods + nb, "rem (train, then final noise)", unit)
    loss = acc = float("nan")
    try:
        while unit < periods:
            for step in range(unit * freq, min((unit + 1) * freq, eff["train_steps"])):
                g = unit_generator(ctx.seed, 4, step)
                seed_global(ctx.seed, 4, step)
                perm = torch.randperm(n, generator=unit_generator(ctx.seed, 5, step // spe)).to(dev)
                idx = perm[(step % spe) * bs:(step % spe + 1) * bs]
                xb, yb = x[idx], y[idx]
                if (step + 1) % freq == 0:
                    # Kept on the grey-level grid, as the original stores it (int8 levels).
                    noise[idx] = defend(model, xb, yb, eff, g, params.augment,
                                        params.random_start).mul(255).round().div(255)
                xd = _transform((xb + noise[idx]).clamp(0, 1), g, params.augment)
                model.eval()
                xa = pgd(model, xd, yb, eff["adv_eps"], eff["adv_alpha"], eff["adv_steps"],
                         random_start=params.random_start, gen=g) if eff["adv_steps"] > 0 else xd
                for group in opt.param_groups:
                    group["lr"] = params.lr * 0.1 ** (step // params.lr_decay_steps)
                model.train()
                logits = model(xa)
                out_loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                out_loss.backward()
                opt.step()
                loss, acc = out_loss.item(), float((logits.argmax(1) == yb).float().mean())
            unit += 1
            bar.update(1)
            bar.set_postfix(adv_loss=f"{loss:.3f}", adv_acc=f"{acc:.3f}")
            ck.step(unit, state_fn)
        while unit < periods + nb:
            b = unit - periods
            sl = slice(b * bs, min((b + 1) * bs, n))
            g = unit_generator(ctx.seed, 6, b)
            seed_global(ctx.seed, 6, b)
            d = defend(model, x[sl], y[sl], eff, g, params.augment, params.random_start)
            out[sl] = apply_delta(x[sl].cpu(), d.cpu(), eff["eps"])
            unit += 1
            bar.update(1)
            ck.step(unit, state_fn)
    finally:
        bar.close()
    info = {
        "norm": "linf", "eps": eff["eps"], "adv_eps": eff["adv_eps"], "arch": arch, "device": str(dev),
        "level": ctx.level, "effective_params": eff,
        "crafting_model": crafting_summary(model, x, y, out, dev),
        "seconds_this_run": round(time.perf_counter() - t0, 3), "peak_memory": peak_memory(dev),
    }
    return PoisonOutput(out, info)
