"""D-VAE: purify the protected set through rate-constrained VAEs, then train (Yu et al., ICML 2024).

A VAE whose KL rate per latent position is held near a small target cannot carry a small
perturbation through its bottleneck; D-VAE also learns the perturbation itself (a second decoder
fed the latent and a class embedding) and subtracts it. Two stages, as the published commands run:

    stage 1   a D-VAE at rate target 1.0 on the protected images x;  x1 = clip(x - p(x))
    stage 2   a fresh D-VAE at target 3.0 on x1;                      x2 = rec(clip(x1 - p(x1)))

and the classifier trains on x2, which is kept as a dataset (OUT/purified, `--save-purified`).

    unlearnable attack dvae runs/cuda --level quick --out runs/cuda-dvae --save-purified data/cuda-dvae

Read from yuyi-sd/D-VAE (main_vae_disentangle.py, configs/cifar10/resnet18DVAE.yaml,
some_scripts.sh; the network in `models/dvae.py`): loss = MSE(rec, x) + MSE(clip(rec + p), x)
+ w * max(KL, target), KL summed over the latent channels and averaged over batch and positions,
w = 0.01 for targets above 0.99 (both stages) else 0.5; from epoch index 11 on (after 10 of 60)
also max(mean p^2, 0.002); Adam lr 5e-3 without weight decay, cosine to 0 over 60 epochs, batch
128, gradient norm clipped at 5, no augmentation, images in [0, 1]; purification with the model
in eval mode, the latent sampled, 8-bit output truncated as the original's `astype(uint8)`.

What differs, each a named option or the engine's one way:
- `width` (64, the original's) scales every layer; `quick` uses 16 so two stages fit a CPU
  (a width-64 step costs about 125 ConvNet steps there), `tiny` 8.
- `penalty_after` (None: epochs // 6, the original's 10 of 60) keeps the perturbation penalty's
  start at the same fraction of a shorter run.
- The cosine is evaluated per step, not per epoch, and the last partial batch is kept (the
  original drops it): the engine's schedule and batching, one for every training here.
- The classifier is the level's recipe, as for every attack (the original: ResNet-18, 60 epochs).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import UnlearnableError
from ..core.files import read_json, write_json
from ..core.params import to_dict
from ..models.dvae import DVAE
from ..train.loop import fit
from ..train.recipe import Recipe
from .base import AttackContext, register_attack, train_and_evaluate
from .purify import save_before_after, save_training_set

log = logging.getLogger(__name__)

PAPER = "Yu et al., ICML 2024, https://arxiv.org/abs/2405.01460"
PURIFIED = "purified"  # the dataset directory the attack leaves in its run directory
# One width-16 D-VAE epoch in ConvNet epochs of the same images (the classifier's step): 1.54 ms
# against 0.125 ms per 28x28 image on the 2-core machine (docs/attacks.md).
STEP_RATIO = 12.3


@dataclass
class DVAEParams:
    """Parameters of the `dvae` attack (defaults: the original's published commands)."""

    epochs: int = 60  # per stage
    width: int = 64
    batch_size: int = 128
    lr: float = 5e-3
    grad_clip: float = 5.0
    rate1: float = 1.0  # stage 1's KL target per latent position
    rate2: float = 3.0  # stage 2's (`--kd 3.0` of every published command; argparse's default 2.5)
    penalty_after: int | None = None  # epoch index after which mean p^2 joins; None: epochs // 6
    stages: int = 2

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if self.width < 2 or self.width % 2:
            raise ValueError(f"width must be an even number >= 2, got {self.width}")
        if not (self.lr > 0 and self.grad_clip > 0 and self.rate1 >= 0 and self.rate2 >= 0):
            raise ValueError("lr and grad_clip must be > 0, rate1 and rate2 >= 0")
        if self.stages not in (1, 2):
            raise ValueError(f"stages must be 1 or 2, got {self.stages}")
        if self.penalty_after is not None and self.penalty_after < 0:
            raise ValueError(f"penalty_after must be >= 0, got {self.penalty_after}")

    @property
    def penalty_start(self) -> int:
        """The epoch index after which the perturbation penalty applies."""
        return self.epochs // 6 if self.penalty_after is None else self.penalty_after


def kl_weight(target: float) -> float:
    """The original's weight of the rate term: 0.01 for targets above 0.99, else 0.5."""
    return 0.01 if target > 0.99 else 0.5


class DVAELoss:
    """The batch loss of one D-VAE stage for the engine's `fit`: no logits, gradients clipped,
    the epoch counted from its own steps (saved in last.pt, so a resume knows it)."""

    def __init__(self, target: float, penalty_start: int, steps_per_epoch: int, max_grad_norm: float):
        self.target, self.penalty_start = target, penalty_start
        self.steps_per_epoch, self.max_grad_norm = steps_per_epoch, max_grad_norm
        self.step = 0

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        epoch = self.step // self.steps_per_epoch
        self.step += 1
        rec, mu, log_var, p = model(x, y)
        kld = torch.mean(-0.5 * torch.sum(1 + log_var - mu ** 2 - log_var.exp(), dim=1))
        # max(KL, target): below the target the rate costs a constant, no gradient (the original's max()).
        loss = (F.mse_loss(rec, x) + F.mse_loss((rec + p).clamp(0, 1), x)
                + kl_weight(self.target) * torch.clamp(kld, min=self.target))
        if epoch > self.penalty_start:
            loss = loss + torch.clamp(p.pow(2).mean(), min=0.002)
        return loss, None

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


def stage_recipe(p: DVAEParams) -> Recipe:
    """The engine's recipe of one stage: Adam, cosine, no augmentation, no weight decay."""
    return Recipe(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, weight_decay=0.0, optimizer="adam",
                  crop_padding=0, flip=False, evaluate="last")


def train_stage(x: torch.Tensor, y: torch.Tensor, num_classes: int, p: DVAEParams, target: float, seed: int,
                out_dir: Path | None, device: torch.device | str = "cpu", progress: bool | None = None,
                stop_after_epoch: int | None = None) -> DVAE:
    """Train one D-VAE on uint8 NCHW `x` with labels `y` at rate `target` through the engine
    (seeded, a checkpoint per epoch, resumed from `out_dir/last.pt`); the trained network."""
    torch.manual_seed(seed)
    net = DVAE(x.shape[1], num_classes, tuple(x.shape[2:]), p.width)
    recipe = stage_recipe(p)
    if out_dir is not None:
        # One stage per directory: a resume must continue the same model on the same images.
        fingerprint = {"params": to_dict(p), "target": target, "seed": seed, "shape": list(x.shape),
                       "classes": num_classes}
        record = Path(out_dir) / "stage.json"
        if record.exists() and read_json(record) != fingerprint:
            raise UnlearnableError(f"{out_dir}: holds a D-VAE of other settings; use another --out")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_json(record, fingerprint)
    loss = DVAELoss(target, p.penalty_start, -(-len(x) // p.batch_size), p.grad_clip)
    fit(net, (x, y), None, recipe, seed, out_dir, device, progress, batch_loss=loss,
        desc=f"d-vae (rate {target:g})", stop_after_epoch=stop_after_epoch)
    return net


@torch.no_grad()
def purify(net: DVAE, x: torch.Tensor, y: torch.Tensor, seed: int, reconstruct: bool,
           batch_size: int = 256) -> torch.Tensor:
    """uint8 NCHW: clip(x - p(x)), and with `reconstruct` the reconstruction of that (stage 2),
    truncated to 8 bits; the latent samples draw from a generator seeded with `seed`."""
    net.eval()
    dev = next(net.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty_like(x)
    for s in range(0, len(x), batch_size):
        xb, yb = x[s:s + batch_size].to(dev).float().div_(255), y[s:s + batch_size].to(dev)
        _, _, _, pert = net(xb, yb, gen)
        xb = (xb - pert).clamp(0, 1)
        if reconstruct:
            xb = net(xb, yb, gen)[0].clamp(0, 1)
        out[s:s + batch_size] = (xb * 255).clamp(0, 255).to(torch.uint8).cpu()  # truncation, as astype
    return out


def purify_set(ctx: AttackContext, p: DVAEParams) -> tuple[np.ndarray, dict[str, Any]]:
    """The purified training images (uint8 NHWC) of ctx.train and what the purification cost."""
    x, y = ctx.train.uint8_tensor(), torch.from_numpy(ctx.train.labels)
    t0 = time.perf_counter()
    stats: dict[str, Any] = {}
    for stage in range(1, p.stages + 1):
        t = time.perf_counter()
        target = p.rate1 if stage == 1 else p.rate2
        seed = ctx.seed * 10 + stage
        net = train_stage(x, y, ctx.train.num_classes, p, target, seed, ctx.out_dir / f"dvae-{stage}",
                          ctx.device, ctx.progress)
        x = purify(net, x, y, seed, reconstruct=stage == 2)
        stats[f"stage{stage}_seconds"] = round(time.perf_counter() - t, 3)
    images = x.permute(0, 2, 3, 1).contiguous().numpy()
    stats["seconds_purify"] = round(time.perf_counter() - t0, 3)
    stats["mean_abs_change"] = float(np.abs(images.astype(np.int16) - ctx.train.images).mean() / 255)
    log.info("d-vae: purified %d images in %.1f s", len(images), stats["seconds_purify"])
    return images, stats


@register_attack("dvae", "D-VAE: purify through two rate-constrained VAEs, then train on the reconstructions",
                 PAPER, params_cls=DVAEParams, prior=0.5, family="purification", order=76, purified_set=PURIFIED,
                 artifacts={"purified": "purified.png"},
                 # In ConvNet trainings of the recipe's epochs: each D-VAE epoch costs STEP_RATIO
                 # ConvNet epochs at width 16 (measured, docs/attacks.md), about width^2 beyond.
                 cost=lambda p, epochs: 1 + p.stages * p.epochs * STEP_RATIO * (p.width / 16) ** 2 / epochs,
                 presets={"quick": {"width": "16", "epochs": "10"}, "tiny": {"width": "8", "epochs": "1"}})
def dvae_attack(ctx: AttackContext, p: DVAEParams) -> dict[str, Any]:
    """Purify the protected set with D-VAE's two stages, train on the result, report clean test accuracy.

    Paper: Yu et al., "Purify Unlearnable Examples via Rate-Constrained Variational Autoencoders" (D-VAE),
        ICML 2024, https://arxiv.org/abs/2405.01460; code yuyi-sd/D-VAE.
    Threat model: only the protected training set (and its labels), purified before training; test inputs
        untouched.
    Args:
        epochs (60): per stage; width (64): the network's stem channels (latent 4x); batch_size (128);
        lr (5e-3): Adam, cosine to 0; grad_clip (5.0); rate1 (1.0), rate2 (3.0): KL targets of the two
        stages; penalty_after (None = epochs // 6): epoch index after which mean p^2 >= 0.002 joins;
        stages (2): 1 keeps stage 1's output clip(x - p)
    Shapes: ctx.train images uint8 (N, H, W, C) with labels int64 (N,) -> purified uint8 (N, H, W, C), kept in
        OUT/purified (the project's dataset format); returns a dict with test_accuracy (fraction, clean test
        set), test_loss, train_accuracy, seconds_train, seconds_purify, mean_abs_change, attack_params, purified.
    Example:
        unlearnable attack dvae runs/cuda --level quick --out runs/cuda-dvae --save-purified data/cuda-dvae
    """
    images, stats = purify_set(ctx, p)
    params = to_dict(p)
    save_training_set(ctx, images, "dvae-purified", {
        "summary": "the protected set purified by D-VAE", "paper": PAPER, "params": params,
        "purified": {"by": "dvae", "seed": ctx.seed, **stats}}, PURIFIED)
    purified = ctx.train.replace(images)
    save_before_after(ctx.train, purified, ctx.out_dir / "purified.png", "d-vae")
    _, out = train_and_evaluate(ctx, train=purified)
    out.update(stats, attack_params=params, purified=PURIFIED)
    return out
