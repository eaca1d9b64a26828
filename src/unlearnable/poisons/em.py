"""Unlearnable Examples: error-minimizing noise, sample-wise or class-wise (Huang et al., ICLR 2021).

"Unlearnable Examples: Making Personal Data Unexploitable", Hanxun Huang, Xingjun Ma, Sarah
Monazam Erfani, James Bailey, Yisen Wang, ICLR 2021, https://arxiv.org/abs/2101.04898.

Threat model: the defender perturbs every training image within l_inf <= 8/255 (held on the
stored uint8 images); labels, test set and learner are out of its hands.

Bi-level min-min, as the released code (HanxunH/Unlearnable-Examples, `perturbation.py` with the
scripts' settings) runs it. The noise starts at zero. A round: M = 10 SGD steps of the crafting
model (lr 0.1, momentum 0.9, weight decay 5e-4 on *every* parameter, gradient norm clipped at 5,
batches of 512) on x + delta, *not* clipped to [0, 1]; then a noise update; then the stop rule:
stop once the crafting model's accuracy on x + delta (eval mode, unclipped) is >= 99 % (the
original's "error <= 0.01"), with no cap on rounds.

- Sample-wise: training batches run through the set in order (the original's loader does not
  shuffle) and continue across rounds; the update is 20 signed descent steps of 0.8/255 per image
  over the whole set, each step taken from clip(x + eta) and projected to the eps-ball (eta itself
  is not projected to keep x + eta in [0, 1]: it is clipped when applied); the stop rule is
  measured on the whole set.
- Class-wise (`update=mean`): training batches are drawn from shuffled epochs of the whole set
  (the last partial batch dropped); the update and the stop rule use a stratified 20 % crafting
  subset (`portion`). Per batch of the subset, each sample takes one 0.8/255 descent step from
  its class's noise, and each class present becomes the mean of its samples' results.
  `update=shared` instead takes, per batch, `steps` (20) signed steps of each class's shared
  delta by the gradient summed over the batch's samples of that class.

Each difference from the original is an option (`start`, `grad_clip`, `decay_all`, `clamp`,
`portion`, `update`) or a stated CPU choice (the crafting model: ResNet-18 on CUDA, the small
ConvNet on CPU). Not followed: the original's loaders drop the remainder of the subset when
they evaluate (a 1,000-image subset is judged on 512 images); the stop rule here uses all of it.

Units of resumable work: rounds (train M steps, update the noise, measure accuracy); the state
(model, optimizer, delta, history) is saved after every round.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet
from .base import PoisonContext, PoisonOutput, check_bound, perturb_chunks, register_poison
from .crafting import (
    begin_crafting, cpu_state, crafting_model, default_arch, device_of, loss_and_accuracy, peak_memory,
    progress_bar, resolve, seed_global, sgd, train_steps, unit_generator,
)

PAPER = "Huang et al., Unlearnable Examples: Making Personal Data Unexploitable, ICLR 2021, " \
        "https://arxiv.org/abs/2101.04898"
# Fields left at None take these values at each ladder level; "quick" halves the sample-wise
# steps (same total travel) and caps the rounds; "tiny" is a few steps of everything, only enough
# for tests to see the mechanism. max_rounds 0 = no cap (the original stops only by accuracy).
LEVEL_TABLE = {
    "paper": {"steps": 20, "alpha": 0.8 / 255, "max_rounds": 0, "train_steps": 10, "batch_size": 512},
    "quick": {"steps": 10, "alpha": 1.6 / 255, "max_rounds": 50, "train_steps": 10, "batch_size": 512},
    "tiny": {"steps": 2, "alpha": 4 / 255, "max_rounds": 2, "train_steps": 3, "batch_size": 64},
}
# The original's class-wise script takes one step per sample per batch (--num_steps 1).
CLASS_MEAN_STEPS = 1
NOISE_BATCH = 512  # sample-wise update batch: eval-mode BN makes samples independent, so only speed
UPDATES = ("mean", "shared")
STARTS = ("zeros", "uniform")


@dataclass
class EMParams:
    """Parameters of `em`: the min-min noise, its crafting model and the stop rule. The defaults,
    with the paper row of LEVEL_TABLE for the fields left at None, are the released code's."""

    mode: str = "sample"  # sample | class
    eps: float = 8 / 255
    steps: int | None = None  # descent steps per update (sample-wise 20; class-wise mean: 1)
    alpha: float | None = None  # descent step (0.8/255)
    train_steps: int | None = None  # M: SGD steps of the crafting model per round (10)
    batch_size: int | None = None  # crafting batches, training and noise (the original's 512)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    stop_accuracy: float = 0.99  # stop when the crafting model's accuracy on x + delta reaches it
    max_rounds: int | None = None  # cap on rounds, 0 = none (paper: none, as the original)
    arch: str = ""  # crafting model; "" = resnet18 on CUDA, convnet on CPU
    update: str = "mean"  # class-wise: mean (the original's) | shared (signed steps of one delta)
    start: str = "zeros"  # zeros (the original's default) | uniform in the eps-ball
    portion: float = 0.2  # class-wise: stratified share of the set the noise is crafted on (1 = all)
    grad_clip: float = 5.0  # crafting-model gradient norm clip, 0 = none
    decay_all: bool = True  # weight decay on every parameter (false: not on BatchNorm and biases)
    clamp: bool = False  # clip x + delta to [0, 1] while crafting (the original does not)

    def __post_init__(self) -> None:
        if self.mode not in ("sample", "class"):
            raise ValueError(f"mode must be sample or class, got {self.mode!r}")
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {self.update!r}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {self.start!r}")
        check_bound(self.eps)
        check_bound(self.portion, "portion")
        for k in ("train_steps", "batch_size", "steps"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1")
        if self.max_rounds is not None and self.max_rounds < 0:
            raise ValueError("max_rounds must be >= 0 (0 = no cap)")
        if not self.grad_clip >= 0:
            raise ValueError(f"grad_clip must be >= 0 (0 = none), got {self.grad_clip}")


def effective(params: EMParams, level: str) -> dict[str, Any]:
    """The values a run uses: the level's table, then class-wise mean's single step per batch."""
    eff = resolve(params, LEVEL_TABLE, level)
    if params.steps is None and params.mode == "class" and params.update == "mean":
        eff["steps"] = CLASS_MEAN_STEPS
    return eff


def stratified_subset(labels: np.ndarray, portion: float, gen: torch.Generator) -> np.ndarray:
    """Sorted indices of a seeded stratified share of the samples: round(portion * n_k) of each
    class k (at least one), drawn uniformly within the class. portion 1 gives every index."""
    if portion >= 1:
        return np.arange(len(labels))
    pick = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        m = max(1, int(math.floor(portion * len(members) + 0.5)))
        order = torch.randperm(len(members), generator=gen).numpy()
        pick.append(members[order[:m]])
    return np.sort(np.concatenate(pick))


def initial_delta(shape: tuple[int, ...], start: str, eps: float, gen: torch.Generator) -> torch.Tensor:
    """The noise before the first round: zeros (the original) or uniform in the eps-ball."""
    if start == "zeros":
        return torch.zeros(shape)
    return (torch.rand(shape, generator=gen) * 2 - 1) * eps


def batch_at(step: int, n: int, bs: int, shuffle: bool, seed: int) -> torch.Tensor:
    """Indices of training batch `step` (counted over the whole run) of the original's loaders.

    shuffle: a fresh permutation per epoch, the last partial batch dropped (class-wise); else the
    set in order, the last batch partial (sample-wise). Depends only on (seed, step): a resumed
    run draws what an uninterrupted one would.
    """
    bs = min(bs, n)
    if shuffle:
        per_epoch = n // bs
        epoch, b = divmod(step, per_epoch)
        perm = torch.randperm(n, generator=unit_generator(seed, 1, epoch))
        return perm[b * bs:(b + 1) * bs]
    per_epoch = math.ceil(n / bs)
    b = step % per_epoch
    return torch.arange(b * bs, min((b + 1) * bs, n))


def min_min(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor,
            eps: float, alpha: float, steps: int) -> torch.Tensor:
    """The original's error-minimizing steps from `noise`: each step descends from clip(x + eta)
    by alpha * sign of the gradient and projects eta = that - x onto the eps-ball (not onto
    [0, 1]). Returns eta (x's shape). The model's parameters get no gradient."""
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        eta = noise.detach()
        for _ in range(steps):
            xp = (x + eta).clamp(0, 1).requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(xp), y), xp)
            eta = (xp.detach() - alpha * grad.sign() - x).clamp(-eps, eps)
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
    return eta


def class_mean_update(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor,
                      eps: float, alpha: float, steps: int, batches: list[torch.Tensor]) -> torch.Tensor:
    """The original's class-wise update: per batch, every sample takes `steps` descent steps from
    its class's noise; each class present then becomes the mean of its samples' results (within
    eps); classes absent from the batch keep theirs. delta: (K, C, H, W)."""
    delta = delta.clone()
    k = len(delta)
    for b in batches:
        xb, yb = x[b], y[b]
        eta = min_min(model, xb, yb, delta[yb], eps, alpha, steps)
        sums = torch.zeros_like(delta).index_add_(0, yb, eta)
        counts = torch.bincount(yb, minlength=k)
        present = counts > 0
        delta[present] = (sums[present] / counts[present].view(-1, *([1] * (delta.dim() - 1)))).clamp(-eps, eps)
    return delta


def shared_update(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor,
                  eps: float, alpha: float, steps: int, batches: list[torch.Tensor],
                  clamp: bool = True) -> torch.Tensor:
    """`update=shared`: per batch, `steps` signed descent steps of the class patterns themselves.

    The gradient w.r.t. a class's pattern is the sum over that class's samples in the batch, so
    its sign is the sign of the summed per-sample gradients; absent classes do not move.
    """
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for b in batches:
            xb, yb = x[b], y[b]
            d = delta
            for _ in range(steps):
                d = d.detach().requires_grad_(True)
                xp = xb + d[yb]
                loss = F.cross_entropy(model(xp.clamp(0, 1) if clamp else xp), yb)
                (grad,) = torch.autograd.grad(loss, d)
                d = (d - alpha * grad.sign()).clamp(-eps, eps)
            delta = d.detach()
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
    return delta


def craft_error_minimizing(base: ImageSet, params: EMParams, ctx: PoisonContext,
                           method: str = "em") -> tuple[torch.Tensor, torch.nn.Module, dict[str, Any]]:
    """The error-minimizing perturbation, the crafting model and a record of the run.

    Returns delta (float CPU, (N, C, H, W) sample-wise or (K, C, H, W) class-wise, within eps;
    x + delta may leave [0, 1]: it is clipped when applied), the trained crafting model (eval
    mode) and info (effective parameters, rounds, stop reason, per-round loss/accuracy, the
    crafting subset's size, memory).
    """
    t0 = time.perf_counter()
    arch = params.arch or default_arch(device_of(ctx))
    eff, dev, ck, state = begin_crafting(method, params, ctx, base, effective(params, ctx.level), {"arch": arch})
    eps, alpha, steps = eff["eps"], eff["alpha"], eff["steps"]
    train_n, bs, cap = eff["train_steps"], eff["batch_size"], eff["max_rounds"]
    x, y = base.to_tensor(dev)
    n, k = len(x), base.num_classes
    classwise = params.mode == "class"
    # Class-wise noise is crafted and judged on a stratified subset; sample-wise on every image.
    sub = stratified_subset(base.labels, params.portion, unit_generator(ctx.seed, 7)) if classwise \
        else np.arange(n)
    sub_t = torch.from_numpy(sub).to(dev)

    model = crafting_model(base, arch, dev, ctx.seed)
    opt = sgd(model, params.lr, params.momentum, params.weight_decay, decay_all=params.decay_all)
    shape = (k, *x.shape[1:]) if classwise else tuple(x.shape)
    delta = initial_delta(shape, params.start, eps, unit_generator(ctx.seed, 0)).to(dev)
    history: list[dict[str, float]] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        delta = state["delta"].to(dev)
        history = [dict(zip(("loss", "accuracy", "train_loss"), map(float, r))) for r in state["history"].tolist()]
        start = len(history)

    def full(idx: torch.Tensor) -> torch.Tensor:
        return delta[y[idx]] if classwise else delta[idx]

    def crafted(xb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        xp = xb + full(idx)
        return xp.clamp(0, 1) if params.clamp else xp

    def state_fn() -> dict[str, Any]:
        hist = torch.tensor([[h["loss"], h["accuracy"], h["train_loss"]] for h in history], dtype=torch.float64)
        return {"model": cpu_state(model), "optimizer": cpu_state(opt), "delta": delta.cpu(),
                "history": hist.reshape(-1, 3)}

    done = bool(history) and history[-1]["accuracy"] >= params.stop_accuracy
    bar = progress_bar(ctx, cap or None, f"{method} ({params.mode}-wise) rounds", start)
    r = start
    try:
        while not done and (cap == 0 or r < cap):
            seed_global(ctx.seed, 1, r)
            losses = []
            for s in range(r * train_n, (r + 1) * train_n):
                b = batch_at(s, n, bs, shuffle=classwise, seed=ctx.seed).to(dev)
                loss, _ = train_steps(model, opt, x, y, b, len(b), crafted, grad_clip=params.grad_clip)
                losses.append(loss)
            model.eval()
            if classwise:
                # The original's subset loader: shuffled each pass, the last partial batch dropped.
                perm = sub_t[torch.randperm(len(sub), generator=unit_generator(ctx.seed, 8, r)).to(dev)]
                nb = max(len(sub) // bs, 1)
                batches = [perm[i * bs:(i + 1) * bs] for i in range(nb)]
                if params.update == "mean":
                    delta = class_mean_update(model, x, y, delta, eps, alpha, steps, batches)
                else:
                    delta = shared_update(model, x, y, delta, eps, alpha, steps, batches, params.clamp)
            else:
                for s in range(0, n, NOISE_BATCH):
                    sl = slice(s, s + NOISE_BATCH)
                    delta[sl] = min_min(model, x[sl], y[sl], delta[sl], eps, alpha, steps)
            xs, ys = x[sub_t], y[sub_t]
            loss, acc = loss_and_accuracy(model, xs, ys, clamp=params.clamp, delta=lambda sl: full(
                sub_t[sl.start:min(sl.stop, len(sub))]))
            history.append({"loss": loss, "accuracy": acc, "train_loss": float(np.mean(losses))})
            done = acc >= params.stop_accuracy
            r += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}")
            ck.step(r, state_fn, force=True)
    finally:
        bar.close()
    clean_loss, clean_acc = loss_and_accuracy(model, x, y)
    info = {
        "norm": "linf", "eps": eps, "mode": params.mode, "arch": arch, "device": str(dev),
        "level": ctx.level, "effective_params": eff, "rounds": len(history),
        "stopped_by": "accuracy" if done else "max_rounds", "crafting_subset": int(len(sub)),
        "crafting_model": {"protected_loss": history[-1]["loss"] if history else None,
                           "protected_accuracy": history[-1]["accuracy"] if history else None,
                           "clean_loss": clean_loss, "clean_accuracy": clean_acc},
        "history": history, "seconds_this_run": round(time.perf_counter() - t0, 3),
        "peak_memory": peak_memory(dev),
    }
    info["delta"] = delta_character(delta.detach().cpu(), eps, classwise)
    if classwise:
        info["pattern_shape"] = list(delta.shape)
    return delta.detach().cpu(), model.eval(), info


def delta_character(delta: torch.Tensor, eps: float, classwise: bool) -> dict[str, float]:
    """What the crafted noise looks like before it is applied: mean |delta| (in grey levels), the
    share of values at +-eps, and (class-wise) the mean cosine between two classes' patterns."""
    d = delta.double()
    out = {"mean_abs_255": round(float(d.abs().mean() * 255), 4),
           "share_at_eps": round(float((d.abs() >= eps - 1e-6).double().mean()), 4)}
    if classwise and len(d) > 1:
        flat = F.normalize(d.flatten(1), dim=1)
        cos = flat @ flat.T
        off = ~torch.eye(len(d), dtype=torch.bool)
        out["class_cosine_mean"] = round(float(cos[off].mean()), 4)
    return out


def em_kind(params: EMParams) -> str:
    """Class-wise with mode=class (one pattern per class), sample-wise otherwise."""
    return "class-wise" if params.mode == "class" else "sample-wise"


@register_poison(
    "em", EMParams, em_kind,
    "Unlearnable Examples: error-minimizing noise (min-min with a crafting model), l_inf 8/255; "
    "mode=class for one pattern per class",
    PAPER, model_based=True, paper_name="ue", fills=LEVEL_TABLE)
def em(base: ImageSet, params: EMParams, ctx: PoisonContext) -> PoisonOutput:
    """Error-minimizing noise (Unlearnable Examples), sample-wise (default) or class-wise.

    Paper: Huang et al., Unlearnable Examples: Making Personal Data Unexploitable, ICLR 2021,
        https://arxiv.org/abs/2101.04898
    Threat model: the defender (the data owner) perturbs every training image within l_inf <= eps
        (8/255) on the stored uint8 images, crafting the noise with its own model (ctx.device,
        resumable in ctx.work_dir); labels, test set and learner are out of its hands.
    Args:
        mode ("sample"): sample | class; with class every image of a class gets one pattern, and
            `POISONS["em"].kind_of({"mode": "class"})` says "class-wise"
        eps (8/255): l_inf bound of the noise
        steps (level; paper 20): descent steps per noise update (class-wise with update=mean: 1
            per batch at every level)
        alpha (level; paper 0.8/255): descent step size
        train_steps (level; paper 10): M, SGD steps of the crafting model per round
        batch_size (level; paper 512): crafting batches, training and noise
        lr (0.1): the crafting model's SGD learning rate
        momentum (0.9): its SGD momentum
        weight_decay (5e-4): its weight decay (see decay_all)
        stop_accuracy (0.99): stop once the crafting model's accuracy on x + delta reaches it
        max_rounds (level; paper 0): cap on rounds, 0 = none (the original stops only by accuracy)
        arch (""): crafting model; "" = resnet18 on CUDA, convnet on CPU
        update ("mean"): class-wise noise update: mean (the original's) | shared (signed steps of
            one delta per class)
        start ("zeros"): zeros (the original's) | uniform in the eps-ball
        portion (0.2): class-wise, the stratified share of the set the noise is crafted on (1 = all)
        grad_clip (5.0): crafting-model gradient norm clip, 0 = none
        decay_all (True): weight decay on every parameter (False: not on BatchNorm and biases)
        clamp (False): clip x + delta to [0, 1] while crafting (the original does not)
    Shapes: base images uint8 (N, H, W, C), any size and class count; delta (N, C, H, W) or
        (K, C, H, W); returns PoisonOutput with images uint8 (N, H, W, C) aligned with base and an
        info dict with norm ("linf"), eps, mode, arch, device, level, effective_params, rounds,
        stopped_by, crafting_subset, crafting_model, history, seconds_this_run, peak_memory, delta
        (its character) and, class-wise, pattern_shape.
    Example:
        unlearnable poison em --dataset fashion-mnist --out runs/em --seed 0
    """
    delta, _, info = craft_error_minimizing(base, params, ctx, "em")
    labels = torch.from_numpy(base.labels)
    fn = (lambda sl, x: delta[labels[sl]]) if params.mode == "class" else (lambda sl, x: delta[sl])
    return PoisonOutput(perturb_chunks(base, fn, linf=info["eps"]), info)
